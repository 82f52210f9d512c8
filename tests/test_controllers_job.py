"""Jobs on a real cluster: pods that run ``sh -c`` as real processes to completion, parallelism,
retries up to backoffLimit (Never: new pods after a back-off; OnFailure: restarts in place),
activeDeadlineSeconds, ttlSecondsAfterFinished on the cluster's fast-forwardable clock, a Job
reaching a Service through its ClusterIP, and the API server's defaulting and validation."""
from __future__ import annotations

import json
import shutil

import pytest

from netemu.api import load_text
from netemu.api.batch import CONTROLLER_UID_LABEL, JOB_NAME_LABEL
from netemu.controllers import podutil
from netemu.errors import ManifestErrors
from netemu.events import events_for


def job_yaml(name: str, script: str, *, restart: str = "Never", **spec: object) -> str:
    extra = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in spec.items())
    return f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{extra}  template:
    spec:
      restartPolicy: {restart}
      containers:
      - name: main
        image: busybox
        command: [sh, -c, {json.dumps(script)}]
"""


def job_of(cluster, name: str):
    return cluster.store.get("Job", "default", name)


def condition(job, type_: str):
    return next((c for c in job.status.conditions if c.type == type_ and c.status == "True"), None)


def pods_of(cluster, name: str) -> list:
    return cluster.store.list("Pod", "default", {JOB_NAME_LABEL: name})


def reasons(cluster, job) -> list[str]:
    return [e.reason for e in events_for(cluster.store, job)]


async def finished(cluster, name: str, type_: str, timeout: float = 30) -> object:
    await cluster.wait_for(lambda: job_of(cluster, name) is not None and condition(job_of(cluster, name), type_),
                           timeout=timeout, what=f"job {name} {type_}")
    return job_of(cluster, name)


async def test_completions_with_parallelism(make_cluster):
    cluster = await make_cluster(job_backoff=0.2)
    await cluster.apply(job_yaml("work", "exit 0", completions=4, parallelism=2))
    job = job_of(cluster, "work")
    assert job.spec.selector.match_labels == {CONTROLLER_UID_LABEL: job.metadata.uid}
    assert job.spec.template.metadata.labels["job-name"] == "work"
    peak = 0

    def done() -> bool:
        nonlocal peak
        running = [p for p in pods_of(cluster, "work") if podutil.is_active(p)]
        peak = max(peak, len(running))
        current = job_of(cluster, "work")
        return condition(current, "Complete") is not None
    await cluster.wait_for(done, timeout=30, what="job work complete")
    job = job_of(cluster, "work")
    pods = pods_of(cluster, "work")
    assert [p.status.phase for p in pods] == ["Succeeded"] * 4
    assert all(p.metadata.name.startswith("work-") and len(p.metadata.name) == len("work-") + 5 for p in pods)
    assert 1 <= peak <= 2
    assert job.status.succeeded == 4 and job.status.failed is None and job.status.active is None
    assert condition(job, "SuccessCriteriaMet").reason == "CompletionsReached"
    assert condition(job, "Complete").message == "Reached expected number of succeeded pods"
    assert job.status.completion_time and job.status.start_time
    assert reasons(cluster, job).count("SuccessfulCreate") >= 4 and "Completed" in reasons(cluster, job)


async def test_failing_job_stops_at_the_backoff_limit(make_cluster):
    cluster = await make_cluster(job_backoff=0.05)
    await cluster.apply(job_yaml("flaky", "exit 3", backoffLimit=2))
    job = await finished(cluster, "flaky", "Failed")
    assert condition(job, "FailureTarget").reason == "BackoffLimitExceeded"
    assert condition(job, "Failed").message == "Job has reached the specified backoff limit"
    assert job.status.failed == 3  # backoffLimit + 1 pods failed
    assert len(pods_of(cluster, "flaky")) == 3
    assert all(p.status.phase == "Failed" for p in pods_of(cluster, "flaky"))
    assert "BackoffLimitExceeded" in reasons(cluster, job)


async def test_back_off_between_failed_pods_follows_the_clock(make_cluster):
    cluster = await make_cluster(job_backoff=3600)  # no second pod unless the clock moves
    await cluster.apply(job_yaml("slow", "exit 1", backoffLimit=3))
    await cluster.wait_for(lambda: (job_of(cluster, "slow").status.failed or 0) == 1, what="first failure")
    assert len(pods_of(cluster, "slow")) == 1
    cluster.clock.advance(3600)
    await cluster.wait_for(lambda: len(pods_of(cluster, "slow")) == 2, what="a second pod after the back-off")


async def test_on_failure_restarts_in_place_and_counts_restarts(make_cluster):
    cluster = await make_cluster(job_backoff=0.05)
    await cluster.apply(job_yaml("retry", "exit 1", restart="OnFailure", backoffLimit=2))
    job = await finished(cluster, "retry", "Failed", timeout=40)
    assert condition(job, "Failed").reason == "BackoffLimitExceeded"
    assert reasons(cluster, job).count("SuccessfulCreate") == 1  # one pod, restarted in place by the kubelet
    assert "SuccessfulDelete" in reasons(cluster, job)  # then deleted when the job failed
    assert job.status.failed == 1 and not pods_of(cluster, "retry")


async def test_on_failure_job_succeeds_after_a_restart(make_cluster, tmp_path):
    cluster = await make_cluster(job_backoff=0.05)
    marker = tmp_path / "ran-once"
    await cluster.apply(job_yaml("second-time", f"test -e {marker} && exit 0; touch {marker}; exit 1",
                                 restart="OnFailure"))
    job = await finished(cluster, "second-time", "Complete")
    (pod,) = pods_of(cluster, "second-time")
    assert pod.status.container_statuses[0].restart_count == 1
    assert job.status.succeeded == 1


async def test_active_deadline_kills_running_pods(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(job_yaml("sleepy", "sleep 300", activeDeadlineSeconds=600))
    await cluster.wait_for(lambda: any(p.status.phase == "Running" for p in pods_of(cluster, "sleepy")),
                           what="a running pod")
    assert condition(job_of(cluster, "sleepy"), "Failed") is None
    cluster.clock.advance(600)
    job = await finished(cluster, "sleepy", "Failed")
    assert condition(job, "Failed").reason == "DeadlineExceeded"
    assert condition(job, "Failed").message == "Job was active longer than specified deadline"
    assert not [p for p in pods_of(cluster, "sleepy") if podutil.is_active(p)]
    assert job.status.failed == 1
    assert "DeadlineExceeded" in reasons(cluster, job)


async def test_ttl_after_finished_deletes_job_and_pods(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(job_yaml("short", "exit 0", ttlSecondsAfterFinished=100))
    await finished(cluster, "short", "Complete")
    assert len(pods_of(cluster, "short")) == 1
    cluster.clock.advance(50)
    await cluster.settle()
    assert job_of(cluster, "short") is not None
    cluster.clock.advance(60)
    await cluster.wait_for(lambda: job_of(cluster, "short") is None and not pods_of(cluster, "short"),
                           what="job and pods deleted after the TTL")


async def test_suspended_job_makes_no_pods_until_resumed(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(job_yaml("later", "exit 0", suspend=True))
    await cluster.wait_for(lambda: condition(job_of(cluster, "later"), "Suspended") is not None, what="suspended")
    assert pods_of(cluster, "later") == []
    await cluster.apply(job_yaml("later", "exit 0", suspend=False))
    await finished(cluster, "later", "Complete")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_job_reaches_a_service_through_its_cluster_ip(make_cluster):
    cluster = await make_cluster()
    await cluster.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
""")
    await cluster.wait_for(lambda: any(podutil.is_ready(p) for p in cluster.store.list("Pod", "default", {"app": "web"})),
                           what="web ready")
    ip = cluster.store.get("Service", "default", "web").spec.cluster_ip
    await cluster.apply(job_yaml("client", f"curl -sf --max-time 5 http://{ip}:80/ -o /dev/null", backoffLimit=0))
    job = await finished(cluster, "client", "Complete")
    assert job.status.succeeded == 1


def test_defaults_and_generated_selector_in_kubernetes_words():
    (m,) = load_text(job_yaml("pi", "exit 0"))
    spec = m.obj.spec
    assert (spec.completions, spec.parallelism, spec.backoff_limit, spec.completion_mode, spec.suspend) == \
        (1, 1, 6, "NonIndexed", False)
    with pytest.raises(ManifestErrors) as refused:
        load_text(job_yaml("pi", "exit 0").replace("restartPolicy: Never", "restartPolicy: Always"))
    assert 'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"' in str(refused.value)
    with pytest.raises(ManifestErrors) as refused:
        load_text(job_yaml("pi", "exit 0", backoffLimit=-1))
    assert "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0" in str(refused.value)


async def test_template_is_immutable(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(job_yaml("fixed", "sleep 30"))
    with pytest.raises(ManifestErrors) as refused:
        await cluster.apply(job_yaml("fixed", "sleep 31"))
    assert "spec.template: Invalid value:" in str(refused.value) and "field is immutable" in str(refused.value)
    await cluster.apply(job_yaml("fixed", "sleep 30"))  # the same manifest again: unchanged, selector kept

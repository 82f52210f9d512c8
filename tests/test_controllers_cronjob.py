"""CronJobs on the cluster's fast-forwardable clock: Jobs made at scheduled times and named after
them, concurrencyPolicy Forbid and Replace, suspend, history limits, status; the schedule parser's
words; and the real kubectl (get/describe jobs and cronjobs, wait for a Job, create job --from)."""
from __future__ import annotations

import json
import os

import pytest

from netemu.api import cron, load_text
from netemu.api.batch import CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION
from netemu.errors import ManifestErrors
from netemu.events import events_for

from kubeapi_support import KUBECTL, api_fixtures, poll


def cron_yaml(name: str, script: str, **spec: object) -> str:
    extra = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in spec.items())
    return f"""
apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "*/1 * * * *"
{extra}  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: busybox
            command: [sh, -c, {json.dumps(script)}]
"""


def jobs(cluster) -> list:
    return sorted(cluster.store.list("Job", "default"), key=lambda j: j.metadata.name)


def cron_job(cluster, name: str):
    return cluster.store.get("CronJob", "default", name)


def finished(job) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions)


async def next_minute(cluster) -> None:
    """Advance the clock to just past the next whole minute."""
    now = cluster.clock.time()
    cluster.clock.advance(60 - now % 60 + 1)


async def test_fires_on_the_advanced_clock_and_keeps_history(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(cron_yaml("tick", "exit 0", successfulJobsHistoryLimit=2))
    await cluster.settle()
    assert jobs(cluster) == []
    names = []
    for round_ in range(1, 4):
        await next_minute(cluster)
        await cluster.wait_for(lambda: len(names) < round_ and any(j.metadata.name not in names for j in jobs(cluster)),
                               what=f"job {round_}")
        new = next(j for j in jobs(cluster) if j.metadata.name not in names)
        names.append(new.metadata.name)
        scheduled = new.metadata.annotations[CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION]
        assert new.metadata.name == f"tick-{int(cluster.clock.time() // 60)}"
        assert scheduled.endswith(":00Z")
        assert new.metadata.owner_references[0].kind == "CronJob"
        await cluster.wait_for(lambda: finished(cluster.store.get("Job", "default", names[-1])), what="job done")
    await cluster.wait_for(lambda: [j.metadata.name for j in jobs(cluster)] == names[1:], what="history limit 2")
    cj = cron_job(cluster, "tick")
    assert cj.status.last_schedule_time and cj.status.last_successful_time
    assert cj.status.active == ()
    assert "SuccessfulCreate" in [e.reason for e in events_for(cluster.store, cj)]


async def test_forbid_skips_while_a_job_runs(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(cron_yaml("single", "sleep 300", concurrencyPolicy="Forbid"))
    await next_minute(cluster)
    await cluster.wait_for(lambda: len(jobs(cluster)) == 1, what="first job")
    await cluster.wait_for(lambda: len(cron_job(cluster, "single").status.active) == 1, what="status.active")
    await next_minute(cluster)
    await cluster.wait_for(lambda: "JobAlreadyActive" in [e.reason for e in events_for(
        cluster.store, cron_job(cluster, "single"))], what="JobAlreadyActive")
    assert len(jobs(cluster)) == 1


async def test_replace_deletes_the_running_job(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(cron_yaml("swap", "sleep 300", concurrencyPolicy="Replace"))
    await next_minute(cluster)
    await cluster.wait_for(lambda: len(jobs(cluster)) == 1, what="first job")
    first = jobs(cluster)[0].metadata.name
    await next_minute(cluster)
    await cluster.wait_for(lambda: [j.metadata.name for j in jobs(cluster)] not in ([], [first]), what="replaced")
    assert first not in [j.metadata.name for j in jobs(cluster)]
    assert [ref.name for ref in cron_job(cluster, "swap").status.active] == [j.metadata.name for j in jobs(cluster)]


async def test_suspended_cronjob_makes_no_jobs(make_cluster):
    cluster = await make_cluster()
    await cluster.apply(cron_yaml("paused", "exit 0", suspend=True))
    await next_minute(cluster)
    await cluster.settle()
    assert jobs(cluster) == []
    await cluster.apply(cron_yaml("paused", "exit 0", suspend=False))
    await cluster.wait_for(lambda: len(jobs(cluster)) == 1, what="a job once resumed")


def test_schedule_errors_in_robfig_cron_words():
    with pytest.raises(ManifestErrors) as refused:
        load_text(cron_yaml("bad", "exit 0").replace('"*/1 * * * *"', '"x"'))
    assert 'spec.schedule: Invalid value: "x": expected exactly 5 fields, found 1: [x]' in str(refused.value)
    with pytest.raises(ManifestErrors) as refused:
        load_text(cron_yaml("bad", "exit 0").replace('"*/1 * * * *"', '"CRON_TZ=UTC 0 * * * *"'))
    assert "cannot use TZ or CRON_TZ in schedule, use timeZone field instead" in str(refused.value)
    (m,) = load_text(cron_yaml("good", "exit 0"))
    assert (m.obj.spec.concurrency_policy, m.obj.spec.successful_jobs_history_limit,
            m.obj.spec.failed_jobs_history_limit, m.obj.spec.suspend) == ("Allow", 3, 1, False)
    assert cron.parse("@hourly").next_after(3600 * 5 + 1) == 3600 * 6
    assert cron.parse("0 9 * * *", "Europe/Paris").next_after(0) == 8 * 3600  # 09:00 CET is 08:00 UTC


# --------------------------------------------------------------------------- through kubectl

api, kubectl, namespace = api_fixtures("batch")
needs_kubectl = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


@needs_kubectl
def test_kubectl_jobs_and_cronjobs(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=cron_yaml("report", "echo hello from the job"))
    kubectl("create", "job", "by-hand", "--from=cronjob/report", "-n", namespace)
    kubectl("wait", "--for=condition=complete", "job/by-hand", "-n", namespace, "--timeout=30s")
    job = json.loads(kubectl("get", "job", "by-hand", "-n", namespace, "-o", "json").stdout)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["status"]["succeeded"] == 1
    lines = kubectl("get", "jobs", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert lines[1].split()[:3] == ["by-hand", "Complete", "1/1"]
    lines = kubectl("get", "cj", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert lines[1].split()[:7] == ["report", "*/1", "*", "*", "*", "*", "<none>"]
    assert "hello from the job" in kubectl("logs", "job/by-hand", "-n", namespace).stdout
    described = kubectl("describe", "job", "by-hand", "-n", namespace).stdout
    assert "0 Active (0 Ready) / 1 Succeeded / 0 Failed" in described
    assert "Completed" in described
    described = kubectl("describe", "cronjob", "report", "-n", namespace).stdout
    assert "Concurrency Policy:" in described and "Last Schedule Time:" in described
    clock = api.cluster.clock
    clock.advance(60 - clock.time() % 60 + 1)  # from the test's thread: the wake-ups move to the cluster's loop
    # A scheduled job besides the one made by hand (a minute may also have begun on its own
    # while the test ran, which schedules one more)
    poll(lambda: any(item["metadata"]["name"] != "by-hand" for item in
                     json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]),
         "the scheduled job")
    kubectl("delete", "cronjob", "report", "-n", namespace)
    poll(lambda: not json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"],
         "the cronjob's jobs deleted with it")

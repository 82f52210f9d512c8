"""The Job controller: a Job → pods that run to completion, retries, deadlines, conditions and TTL.

As Kubernetes' job controller (1.32) does:

- Pods ``<job>-<5 chars>`` (Indexed: ``<job>-<index>-<5 chars>``, with the
  ``batch.kubernetes.io/job-completion-index`` annotation and label and ``JOB_COMPLETION_INDEX``)
  are made from the template, up to ``parallelism`` at once while completions remain
  (``SuccessfulCreate`` "Created pod: …"). A pod that Succeeded counts one completion; one that
  Failed counts a failure. Terminating pods are replaced at once (podReplacementPolicy
  TerminatingOrFailed) and reported in ``status.terminating``.
- ``restartPolicy: Never``: a failed pod is replaced after a back-off of ``backoff`` seconds (10 s on
  a cluster), doubling per failure since the last success, up to ``backoff_max`` (6 min); the Job
  fails once more than ``backoffLimit`` pods failed. ``OnFailure``: the kubelet restarts the
  container in place and the restarts of the active pods count toward ``backoffLimit`` (the Job
  fails when they reach it).
- Failing (BackoffLimitExceeded "Job has reached the specified backoff limit", DeadlineExceeded "Job
  was active longer than specified deadline" once ``activeDeadlineSeconds`` have passed since
  ``startTime``): condition ``FailureTarget``, the active pods deleted (``SuccessfulDelete``), then,
  once none is left, ``Failed`` and a Warning event with the same reason and message.
- Succeeding: ``SuccessCriteriaMet`` (CompletionsReached "Reached expected number of succeeded
  pods") when the completions are there, remaining pods deleted, then ``Complete``,
  ``completionTime`` and the event ``Completed`` "Job completed".
- ``suspend: true`` deletes the active pods and sets ``Suspended`` (JobSuspended); resuming sets it
  False (JobResumed) and starts the deadline anew.
- ``ttlSecondsAfterFinished``: that long after the finishing condition, the Job and its pods are
  deleted (the TTL-after-finished controller).

Counting is kept in the Job's status (``succeeded``, ``failed``) plus, in memory, the uids of the
pods already counted; netemu keeps finished pods (as Kubernetes does) and uses no finalizers.
Time comes from the cluster's ``Clock``, so tests fast-forward deadlines, back-offs and TTLs.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from netemu import events
from netemu.api import batch as b
from netemu.api.labels import selector_matches
from netemu.api.objects import EnvVar, ObjectMeta, OwnerReference, Pod, PodStatus
from netemu.clock import Clock, parse_rfc3339
from netemu.errors import AlreadyExistsError, NetemuError, NotFoundError
from netemu.store import Store

from . import podutil
from .clocked import ClockedController
from .createretry import CreateRetry
from netemu.names import generated_name

log = logging.getLogger(__name__)

CONTROLLER_NAME = "job-controller"
TTL_CONTROLLER_NAME = "ttl-after-finished-controller"
DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")

JobKey = tuple[str, str]


@dataclass
class _Memory:
    """What the controller remembers about one Job (by uid) between syncs."""
    counted: set[str] = field(default_factory=set)  # uids of finished pods already in the status
    failures_since_success: int = 0
    last_failure: float = 0.0


@dataclass
class _Pods:
    active: list[Pod] = field(default_factory=list)
    terminating: list[Pod] = field(default_factory=list)
    finished: list[Pod] = field(default_factory=list)


def owner_reference(owner: Any) -> OwnerReference:
    return OwnerReference(api_version=owner.API_VERSION, kind=owner.KIND, name=owner.metadata.name,
                          uid=owner.metadata.uid, controller=True, block_owner_deletion=True)


def _set_condition(conditions: tuple[b.JobCondition, ...], type_: str, status: str, reason: str, message: str,
                   now: str) -> tuple[b.JobCondition, ...]:
    for i, cond in enumerate(conditions):
        if cond.type == type_:
            if (cond.status, cond.reason, cond.message) == (status, reason, message):
                return conditions
            changed = replace(cond, status=status, reason=reason, message=message, last_probe_time=now,
                              last_transition_time=now if cond.status != status else cond.last_transition_time)
            return conditions[:i] + (changed,) + conditions[i + 1:]
    return conditions + (b.JobCondition(type=type_, status=status, reason=reason, message=message,
                                        last_probe_time=now, last_transition_time=now),)


def _index_of(pod: Pod) -> int | None:
    try:
        return int(pod.metadata.annotations.get(b.COMPLETION_INDEX_ANNOTATION, ""))
    except ValueError:
        return None


def format_indexes(indexes: set[int]) -> str:
    """``0-2,5``: the compressed form of status.completedIndexes."""
    out: list[str] = []
    for i in sorted(indexes):
        if out and i - 1 in indexes:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def delete_job_and_pods(store: Store, job: Any) -> None:
    """Delete a Job and, as the garbage collector's cascade does, its pods (gracefully)."""
    ns, uid = job.metadata.namespace, job.metadata.uid
    for pod in store.list("Pod", ns):
        if any(ref.uid == uid for ref in pod.metadata.owner_references):
            podutil.request_deletion(store, pod)
    try:
        store.delete("Job", ns, job.metadata.name)
    except NotFoundError:
        pass


class JobController(ClockedController):
    KIND, OWNED, NAME = "Job", "Pod", CONTROLLER_NAME

    def __init__(self, store: Store, clock: Clock, *, backoff: float = DEFAULT_BACKOFF,
                 backoff_max: float = MAX_BACKOFF) -> None:
        super().__init__(store, clock)
        self.backoff, self.backoff_max = backoff, backoff_max
        self._memory: dict[str, _Memory] = {}
        self._create_retry: CreateRetry[JobKey] = CreateRetry(store, CONTROLLER_NAME)

    # ------------------------------------------------------------------ sync

    def _pods_of(self, job: b.Job) -> _Pods:
        pods = _Pods()
        uid = job.metadata.uid
        for pod in self._store.list("Pod", job.metadata.namespace):
            ref = podutil.controller_of(pod)
            if ref is None or ref.uid != uid:
                continue
            if job.spec.selector is not None and not selector_matches(job.spec.selector, pod.metadata.labels):
                continue
            if podutil.is_terminal(pod):
                pods.finished.append(pod)
            elif podutil.is_terminating(pod):
                pods.terminating.append(pod)
            else:
                pods.active.append(pod)
        return pods

    def _sync(self, key: JobKey) -> None:
        ns, name = key
        job: b.Job | None = self._store.get("Job", ns, name)
        if job is None:
            self._create_retry.forget(key)
            for pod in self._store.list("Pod", ns):  # the garbage collector: pods of a Job that is gone
                ref = podutil.controller_of(pod)
                if ref is not None and ref.kind == "Job" and ref.name == name:
                    podutil.request_deletion(self._store, pod)
            return
        memory = self._memory.setdefault(job.metadata.uid, _Memory())
        if b.is_finished(job):
            self._expire(job)
            return
        if job.metadata.deletion_timestamp is not None:
            return
        now = self.clock.time()
        stamp = self.clock.now_rfc3339()
        pods = self._pods_of(job)
        status = job.status
        succeeded, failed = status.succeeded or 0, status.failed or 0
        for pod in pods.finished:
            if pod.metadata.uid in memory.counted:
                continue
            memory.counted.add(pod.metadata.uid)
            if pod.status.phase == "Succeeded":
                succeeded += 1
                memory.failures_since_success = 0
            else:
                failed += 1
                memory.failures_since_success += 1
                memory.last_failure = now
        conditions = status.conditions
        start_time = status.start_time
        if job.spec.suspend:
            for pod in pods.active:
                self._delete_pod(job, pod)
            conditions = _set_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended", stamp)
            self._write(job, replace(status, conditions=conditions, active=None, ready=0,
                                     terminating=len(pods.terminating) + len(pods.active),
                                     succeeded=succeeded or None, failed=failed or None))
            return
        if b.condition(job, "Suspended") is not None:
            conditions = _set_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed", stamp)
            start_time = None
        start_time = start_time or stamp
        started = parse_rfc3339(start_time) or now

        failure = b.condition(job, "FailureTarget")
        failure_reason = (failure.reason, failure.message) if failure is not None else None
        if failure_reason is None:
            failure_reason = self._failure(job, pods, failed, started, now)
        success = b.condition(job, "SuccessCriteriaMet") is not None or self._succeeded(job, pods, succeeded)

        if failure_reason is not None and not success:
            conditions = _set_condition(conditions, "FailureTarget", "True", *failure_reason, stamp)
            failed += len(pods.active)
            for pod in pods.active:
                memory.counted.add(pod.metadata.uid)  # counted as failed now, not again when it ends
                self._delete_pod(job, pod)
            if not pods.active and not pods.terminating:
                conditions = _set_condition(conditions, "Failed", "True", *failure_reason, stamp)
                events.recorder(self._store).warning(job, failure_reason[0], failure_reason[1],
                                                     component=CONTROLLER_NAME)
            self._write(job, replace(status, conditions=conditions, start_time=start_time, active=None, ready=0,
                                     terminating=len(pods.terminating) + len(pods.active),
                                     succeeded=succeeded or None, failed=failed or None))
            return
        if success:
            conditions = _set_condition(conditions, "SuccessCriteriaMet", "True", *COMPLETIONS_REACHED, stamp)
            for pod in pods.active:  # not needed any more: neither a completion nor a failure
                memory.counted.add(pod.metadata.uid)
                self._delete_pod(job, pod)
            completion_time = None
            if not pods.active and not pods.terminating:
                conditions = _set_condition(conditions, "Complete", "True", *COMPLETIONS_REACHED, stamp)
                completion_time = stamp
                events.recorder(self._store).normal(job, "Completed", "Job completed", component=CONTROLLER_NAME)
            self._write(job, replace(status, conditions=conditions, start_time=start_time, active=None, ready=0,
                                     terminating=len(pods.terminating) + len(pods.active),
                                     completion_time=completion_time, succeeded=succeeded or None,
                                     failed=failed or None, completed_indexes=self._completed_indexes(job, pods)))
            return

        active = list(pods.active)
        active += self._create_pods(job, pods, succeeded, memory, now)
        ready = sum(1 for pod in active if podutil.is_ready(pod))
        self._write(job, replace(status, conditions=conditions, start_time=start_time, active=len(active) or None,
                                 ready=ready, terminating=len(pods.terminating), succeeded=succeeded or None,
                                 failed=failed or None, completed_indexes=self._completed_indexes(job, pods)))

    def _failure(self, job: b.Job, pods: _Pods, failed: int, started: float, now: float) -> tuple[str, str] | None:
        spec = job.spec
        limit = spec.backoff_limit if spec.backoff_limit is not None else 6
        if failed > limit:
            return BACKOFF_LIMIT_EXCEEDED
        if spec.template.spec.restart_policy == "OnFailure":
            restarts = sum(s.restart_count for pod in pods.active
                           for s in (*pod.status.container_statuses, *pod.status.init_container_statuses))
            if (restarts > 0) if limit == 0 else (restarts >= limit):
                return BACKOFF_LIMIT_EXCEEDED
        if spec.active_deadline_seconds is not None:
            deadline = started + spec.active_deadline_seconds
            if now >= deadline:
                return DEADLINE_EXCEEDED
            self._wake_at((job.metadata.namespace, job.metadata.name), deadline)
        return None

    def _succeeded_indexes(self, pods: _Pods) -> set[int]:
        return {i for pod in pods.finished if pod.status.phase == "Succeeded" and (i := _index_of(pod)) is not None}

    def _completed_indexes(self, job: b.Job, pods: _Pods) -> str:
        if job.spec.completion_mode != "Indexed":
            return ""
        completions = job.spec.completions or 0
        return format_indexes({i for i in self._succeeded_indexes(pods) if i < completions})

    def _succeeded(self, job: b.Job, pods: _Pods, succeeded: int) -> bool:
        spec = job.spec
        if spec.completion_mode == "Indexed":
            completions = spec.completions or 0
            return len({i for i in self._succeeded_indexes(pods) if i < completions}) >= completions
        if spec.completions is None:  # a work queue: done once one pod succeeded and none runs
            return succeeded > 0 and not pods.active
        return succeeded >= spec.completions

    def _create_pods(self, job: b.Job, pods: _Pods, succeeded: int, memory: _Memory, now: float) -> list[Pod]:
        spec = job.spec
        parallelism = spec.parallelism if spec.parallelism is not None else 1
        if spec.completion_mode == "Indexed":
            busy = self._succeeded_indexes(pods) | {i for p in pods.active if (i := _index_of(p)) is not None}
            pending = [i for i in range(spec.completions or 0) if i not in busy]
            wanted: list[int | None] = list(pending[:max(0, parallelism - len(pods.active))])
        else:
            if spec.completions is None:
                room = 0 if succeeded > 0 else parallelism - len(pods.active)
            else:
                room = min(parallelism, spec.completions - succeeded) - len(pods.active)
            wanted = [None] * max(0, room)
        if not wanted:
            return []
        if memory.failures_since_success and spec.template.spec.restart_policy == "Never":
            delay = min(self.backoff * 2 ** (memory.failures_since_success - 1), self.backoff_max)
            if now < memory.last_failure + delay:
                self._wake_at((job.metadata.namespace, job.metadata.name), memory.last_failure + delay)
                return []
        return [pod for index in wanted if (pod := self._create_pod(job, index)) is not None]

    def _create_pod(self, job: b.Job, index: int | None) -> Pod | None:
        template, meta = job.spec.template, job.metadata
        base = f"{meta.name}-" if index is None else f"{meta.name}-{index}-"
        labels, annotations = dict(template.metadata.labels), dict(template.metadata.annotations)
        pod_spec = template.spec
        if index is not None:
            labels[b.COMPLETION_INDEX_ANNOTATION] = annotations[b.COMPLETION_INDEX_ANNOTATION] = str(index)
            env = EnvVar(name="JOB_COMPLETION_INDEX", value=str(index))
            pod_spec = replace(pod_spec, hostname=pod_spec.hostname or f"{meta.name}-{index}",
                               containers=tuple(replace(c, env=(*c.env, env)) for c in pod_spec.containers),
                               init_containers=tuple(replace(c, env=(*c.env, env)) for c in pod_spec.init_containers))
        for _ in range(10):
            pod = Pod(metadata=ObjectMeta(name=generated_name(base), generate_name=base, namespace=meta.namespace,
                                          labels=labels, annotations=annotations,
                                          owner_references=(owner_reference(job),)),
                      spec=pod_spec, status=PodStatus(phase="Pending"))
            key = (meta.namespace, meta.name)
            try:
                created = self._store.create(pod)
            except AlreadyExistsError:
                continue
            except NetemuError as exc:  # refused by admission (a missing service account): retried
                self._queue.add_after(key, self._create_retry.refused(key, job, exc))
                return None
            self._create_retry.succeeded(key)
            events.recorder(self._store).normal(job, "SuccessfulCreate", f"Created pod: {created.metadata.name}",
                                                component=CONTROLLER_NAME)
            return created
        log.warning("job %s/%s: no free pod name found", meta.namespace, meta.name)
        return None

    def _delete_pod(self, job: b.Job, pod: Pod) -> None:
        if podutil.request_deletion(self._store, pod) is not None or \
                self._store.get("Pod", pod.metadata.namespace, pod.metadata.name) is None:
            events.recorder(self._store).normal(job, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}",
                                                component=CONTROLLER_NAME)

    def _write(self, job: b.Job, status: b.JobStatus) -> None:
        if status != job.status:
            self._store.modify("Job", job.metadata.namespace, job.metadata.name,
                               lambda j: dataclasses.replace(j, status=status))

    # ------------------------------------------------------------------ ttl after finished

    def _expire(self, job: b.Job) -> None:
        """The TTL-after-finished controller: delete the Job (and its pods) once its TTL has passed."""
        ttl = job.spec.ttl_seconds_after_finished
        if ttl is None or job.metadata.deletion_timestamp is not None:
            return
        cond = b.finished_condition(job)
        finished = parse_rfc3339(cond.last_transition_time if cond is not None else None) \
            or parse_rfc3339(job.status.completion_time)
        if finished is None:
            return
        key = (job.metadata.namespace, job.metadata.name)
        if self.clock.time() < finished + ttl:
            self._wake_at(key, finished + ttl)
            return
        self._memory.pop(job.metadata.uid, None)
        delete_job_and_pods(self._store, job)


__all__ = ["CONTROLLER_NAME", "JobController", "delete_job_and_pods", "format_indexes", "owner_reference"]

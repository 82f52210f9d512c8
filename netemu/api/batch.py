"""batch/v1 object types: Job and CronJob, the subset of the Kubernetes schema netemu emulates.

The same conventions as ``objects``: frozen dataclasses, snake_case attributes whose manifest names
are camelCase, fields netemu keeps without acting on them listed in ``IGNORED`` (kept verbatim in
``extra``). ``podFailurePolicy``, ``successPolicy``, ``backoffLimitPerIndex``, ``maxFailedIndexes``
and ``managedBy`` are such fields: accepted and written back, but the Job controller
(``netemu.controllers.job``) counts every pod failure toward ``backoffLimit``.

This module is imported by ``objects`` (which registers the two kinds); it has no
``from __future__ import annotations`` so that its type hints resolve without ``objects``' names.
"""
from dataclasses import field
from typing import Any, ClassVar, Mapping

from .objects import LabelSelector, ObjectMeta, ObjectReference, PodTemplateSpec, _extra, frozen, jf

# Labels and annotations of Kubernetes' batch API (pkg/apis/batch/types.go).
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
CRONJOB_INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"


@frozen
class UncountedTerminatedPods:
    succeeded: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class JobCondition:
    type: str = ""
    status: str = ""
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    reason: str = ""
    message: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class JobSpec:
    parallelism: int | None = None
    completions: int | None = None
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    ttl_seconds_after_finished: int | None = jf("ttlSecondsAfterFinished")
    completion_mode: str = ""
    suspend: bool | None = None
    pod_replacement_policy: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({
        "podFailurePolicy", "successPolicy", "backoffLimitPerIndex", "maxFailedIndexes", "managedBy"})
    extra: Mapping[str, Any] = _extra()


@frozen
class JobStatus:
    conditions: tuple[JobCondition, ...] = ()
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    ready: int | None = None
    terminating: int | None = None
    completed_indexes: str = ""
    uncounted_terminated_pods: UncountedTerminatedPods | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"failedIndexes"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Job:
    API_VERSION: ClassVar[str] = "batch/v1"
    KIND: ClassVar[str] = "Job"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "batch/v1"
    kind: str = "Job"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: JobSpec = field(default_factory=JobSpec)
    status: JobStatus = field(default_factory=JobStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class JobTemplateSpec:
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: JobSpec = field(default_factory=JobSpec)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CronJobSpec:
    schedule: str = ""
    time_zone: str | None = None
    starting_deadline_seconds: int | None = None
    concurrency_policy: str = ""
    suspend: bool | None = None
    job_template: JobTemplateSpec = field(default_factory=JobTemplateSpec)
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CronJobStatus:
    active: tuple[ObjectReference, ...] = ()
    last_schedule_time: str | None = None
    last_successful_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CronJob:
    API_VERSION: ClassVar[str] = "batch/v1"
    KIND: ClassVar[str] = "CronJob"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "batch/v1"
    kind: str = "CronJob"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: CronJobSpec = field(default_factory=CronJobSpec)
    status: CronJobStatus = field(default_factory=CronJobStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


def is_finished(job: Job) -> bool:
    """The Job has a Complete or Failed condition that is True (the job controller's IsJobFinished)."""
    return finished_condition(job) is not None


def finished_condition(job: Job) -> JobCondition | None:
    for cond in job.status.conditions:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond
    return None


def condition(job: Job, type_: str) -> JobCondition | None:
    for cond in job.status.conditions:
        if cond.type == type_ and cond.status == "True":
            return cond
    return None

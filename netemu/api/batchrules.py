"""The API server's rules for batch/v1 Job and CronJob: defaulting, selector generation and
validation, in Kubernetes' words.

- ``default_job`` / ``default_cron_job``: ``pkg/apis/batch/v1/defaults.go`` (1.32: completions and
  parallelism 1 when both are unset, parallelism 1, backoffLimit 6, completionMode NonIndexed,
  suspend false, podReplacementPolicy TerminatingOrFailed — Failed with a podFailurePolicy — the
  Job's labels taken from its pod template's when it has none; a CronJob's concurrencyPolicy
  Allow, suspend false, history limits 3 and 1), plus the pod template's own defaults.
- ``generate_selector(job, uid)``: the Job REST strategy's ``generateSelector`` (unless
  ``manualSelector``): the template gets ``batch.kubernetes.io/controller-uid``,
  ``batch.kubernetes.io/job-name``, ``controller-uid`` and ``job-name`` labels and the selector
  ``batch.kubernetes.io/controller-uid: <uid>``. The API server runs it at create, when the uid is
  known; a Job read from a file is validated with a stand-in uid.
- ``validate_job`` / ``validate_job_update`` / ``validate_cron_job`` / ``validate_cron_job_update``:
  ``pkg/apis/batch/validation`` (ValidateJob, ValidateJobSpecUpdate, ValidateCronJobCreate …).
"""
from __future__ import annotations

import re
import zoneinfo
from typing import Any

from netemu.errors import FieldProblem
from netemu.frozen import evolve
from netemu.names import new_uid

from . import batch as b
from . import cron
from . import objects as o
from .defaults import _pod_spec
from .labels import name_is_dns_subdomain, selector_matches
from .validation import (
    GoValue, _nonnegative, _selector_buildable, go_label_selector, invalid, not_supported, required,
    validate_label_selector, validate_object_meta, validate_pod_template,
)

STAND_IN_UID = "00000000-0000-0000-0000-000000000000"  # validation of a Job not yet created
COMPLETION_MODES = ("NonIndexed", "Indexed")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
MAX_PARALLELISM_INDEXED = 100000
CRONJOB_NAME_MAX = 52  # 63 minus the 11 characters of "-<minutes>"

# --------------------------------------------------------------------------- defaults


def _default_job_spec(spec: b.JobSpec) -> b.JobSpec:
    completions, parallelism = spec.completions, spec.parallelism
    if completions is None and parallelism is None:
        completions = parallelism = 1
    replacement = spec.pod_replacement_policy or (
        "Failed" if spec.extra.get("podFailurePolicy") is not None else "TerminatingOrFailed")
    backoff = spec.backoff_limit
    if backoff is None:
        backoff = 2**31 - 1 if spec.extra.get("backoffLimitPerIndex") is not None else 6
    return evolve(spec, completions=completions, parallelism=1 if parallelism is None else parallelism,
                   backoff_limit=backoff, completion_mode=spec.completion_mode or "NonIndexed",
                   suspend=False if spec.suspend is None else spec.suspend, pod_replacement_policy=replacement,
                   template=evolve(spec.template, spec=_pod_spec(spec.template.spec)))


def default_job(job: b.Job) -> b.Job:
    meta = job.metadata
    if not meta.labels and job.spec.template.metadata.labels:
        meta = evolve(meta, labels=dict(job.spec.template.metadata.labels))
    return evolve(job, metadata=meta, spec=_default_job_spec(job.spec))


def default_cron_job(cj: b.CronJob) -> b.CronJob:
    spec = cj.spec
    job_spec = spec.job_template.spec
    job_spec = evolve(job_spec, template=evolve(job_spec.template, spec=_pod_spec(job_spec.template.spec)))
    return evolve(cj, spec=evolve(
        spec, concurrency_policy=spec.concurrency_policy or "Allow",
        suspend=False if spec.suspend is None else spec.suspend,
        successful_jobs_history_limit=3 if spec.successful_jobs_history_limit is None
        else spec.successful_jobs_history_limit,
        failed_jobs_history_limit=1 if spec.failed_jobs_history_limit is None else spec.failed_jobs_history_limit,
        job_template=evolve(spec.job_template, spec=job_spec)))


def generate_selector(job: b.Job, uid: str) -> b.Job:
    """The Job strategy's generateSelector for a Job whose uid is ``uid``."""
    spec = job.spec
    if spec.manual_selector:
        return job
    labels = dict(spec.template.metadata.labels)
    for key in (b.LEGACY_JOB_NAME_LABEL, b.JOB_NAME_LABEL):
        labels.setdefault(key, job.metadata.name)
    for key in (b.LEGACY_CONTROLLER_UID_LABEL, b.CONTROLLER_UID_LABEL):
        labels.setdefault(key, uid)
    selector = spec.selector or o.LabelSelector()
    if b.CONTROLLER_UID_LABEL not in selector.match_labels:
        selector = evolve(selector, match_labels={**selector.match_labels, b.CONTROLLER_UID_LABEL: uid})
    template = evolve(spec.template, metadata=evolve(spec.template.metadata, labels=labels))
    meta = job.metadata
    if not meta.labels:  # defaulting again on the way back from storage copies the generated labels
        meta = evolve(meta, labels=dict(labels))
    return evolve(job, metadata=meta, spec=evolve(spec, selector=selector, template=template, manual_selector=False))


def keep_generated_selector(old: b.Job, new: b.Job) -> b.Job:
    """A re-applied manifest without the server's selector and labels keeps them (kubectl apply
    patches the live Job, where generateSelector put them)."""
    if new.spec.manual_selector or new.spec.selector is not None:
        return new
    return generate_selector(new, old.metadata.uid)


# --------------------------------------------------------------------------- validation


def _has_label(template: o.PodTemplateSpec, key: str, want: str) -> list[FieldProblem]:
    """ValidateHasLabel."""
    path = "spec.template.metadata.labels"
    got = template.metadata.labels.get(key)
    if got is None:
        return [required(f"{path}[{key}]", f"must be '{want}'")]
    if got != want:
        return [invalid(f"{path}[{key}]", got, f"must be '{want}'")]
    return []


def _generated_selector(job: b.Job) -> list[FieldProblem]:
    spec = job.spec
    if spec.manual_selector or spec.selector is None:
        return []
    uid, name = job.metadata.uid, job.metadata.name
    errs = [] if uid else [required("metadata.uid")]
    expected = {b.LEGACY_CONTROLLER_UID_LABEL: uid, b.LEGACY_JOB_NAME_LABEL: name,
                b.CONTROLLER_UID_LABEL: uid, b.JOB_NAME_LABEL: name}
    for key, value in expected.items():
        errs += _has_label(spec.template, key, value)
    if _selector_buildable(spec.selector) and not selector_matches(spec.selector, expected):
        errs.append(invalid("spec.selector", go_label_selector(spec.selector), "`selector` not auto-generated"))
    return errs


def _job_spec(spec: b.JobSpec, path: str) -> list[FieldProblem]:
    """validateJobSpec: the rules a Job and a CronJob's job template share."""
    errs: list[FieldProblem] = []
    for attr, name in (("parallelism", "parallelism"), ("completions", "completions"),
                       ("active_deadline_seconds", "activeDeadlineSeconds"), ("backoff_limit", "backoffLimit"),
                       ("ttl_seconds_after_finished", "ttlSecondsAfterFinished")):
        errs += _nonnegative(f"{path}.{name}", getattr(spec, attr))
    mode = spec.completion_mode
    if mode and mode not in COMPLETION_MODES:
        errs.append(not_supported(f"{path}.completionMode", mode, COMPLETION_MODES))
    if mode == "Indexed":
        if spec.completions is None:
            errs.append(required(f"{path}.completions", "when completion mode is Indexed"))
        if spec.parallelism is not None and spec.parallelism > MAX_PARALLELISM_INDEXED:
            errs.append(invalid(f"{path}.parallelism", spec.parallelism,
                                f"must be less than or equal to {MAX_PARALLELISM_INDEXED} when completion mode is Indexed"))
    if spec.pod_replacement_policy and spec.pod_replacement_policy not in ("Failed", "TerminatingOrFailed"):
        errs.append(not_supported(f"{path}.podReplacementPolicy", spec.pod_replacement_policy,
                                  ("Failed", "TerminatingOrFailed")))
    errs += validate_pod_template(spec.template, f"{path}.template")
    policy = spec.template.spec.restart_policy
    if policy in ("Always", ""):
        errs.append(required(f"{path}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    elif policy not in ("OnFailure", "Never"):
        errs.append(not_supported(f"{path}.template.spec.restartPolicy", policy, ("OnFailure", "Never")))
    elif spec.extra.get("podFailurePolicy") is not None and policy != "Never":
        errs.append(invalid(f"{path}.template.spec.restartPolicy", policy,
                            'only "Never" is supported when podFailurePolicy is specified'))
    return errs


def validate_job(job: b.Job) -> list[FieldProblem]:
    """ValidateJob. A Job not created yet (no uid) is checked as the API server will see it,
    with its selector generated for a stand-in uid."""
    if not job.metadata.uid and not job.spec.manual_selector:
        job = generate_selector(evolve(job, metadata=evolve(job.metadata, uid=STAND_IN_UID)), STAND_IN_UID)
    spec = job.spec
    errs = validate_object_meta(job.metadata, True, name_is_dns_subdomain)
    errs += _generated_selector(job)
    errs += _job_spec(spec, "spec")
    if spec.selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(spec.selector, "spec.selector")
        if _selector_buildable(spec.selector) and not selector_matches(spec.selector, spec.template.metadata.labels):
            errs.append(invalid("spec.template.metadata.labels", spec.template.metadata.labels,
                                "`selector` does not match template `labels`"))
    if spec.completion_mode == "Indexed" and spec.completions:
        longest = f"{job.metadata.name}-{spec.completions - 1}"
        if len(longest) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", longest):
            errs.append(invalid("metadata.name", job.metadata.name,
                                f"will not able to create pod with invalid DNS label: {longest}"))
    return errs


def _immutable(path: str, new: Any, old: Any, shown: Any) -> list[FieldProblem]:
    return [] if new == old else [invalid(path, shown, "field is immutable")]


def validate_job_update(old: b.Job, new: b.Job) -> list[FieldProblem]:
    """ValidateJobSpecUpdate: completions, selector, the pod template and completionMode are immutable."""
    errs = validate_job(new)
    spec, before = new.spec, old.spec
    errs += _immutable("spec.completions", spec.completions, before.completions, spec.completions)
    if spec.selector != before.selector:
        errs.append(invalid("spec.selector", go_label_selector(spec.selector) if spec.selector else None,
                            "field is immutable"))
    errs += _immutable("spec.template", spec.template, before.template, GoValue("core.PodTemplateSpec{…}"))
    errs += _immutable("spec.completionMode", spec.completion_mode, before.completion_mode, spec.completion_mode)
    errs += _immutable("spec.podFailurePolicy", spec.extra.get("podFailurePolicy"),
                       before.extra.get("podFailurePolicy"), GoValue("&batch.PodFailurePolicy{…}"))
    return errs


def _time_zone(zone: str | None, path: str) -> list[FieldProblem]:
    """validateTimeZone."""
    if zone is None:
        return []
    if not zone:
        return [invalid(path, zone, "timeZone must be nil or non-empty string")]
    for part in zone.split("/"):
        if part in (".", "..") or part.startswith("-") or not re.fullmatch(r"[A-Za-z.\-_0-9+]{1,14}", part):
            return [invalid(path, zone, f"unknown time zone {zone}")]
    if zone.lower() == "local":
        return [invalid(path, zone, "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones")]
    if zone != "UTC":
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return [invalid(path, zone, f"unknown time zone {zone}")]
    return []


def _cron_job_spec(spec: b.CronJobSpec, old: b.CronJobSpec | None) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    if not spec.schedule:
        errs.append(required("spec.schedule"))
    else:
        try:
            cron.parse(spec.schedule)
        except cron.ScheduleError as exc:
            errs.append(invalid("spec.schedule", spec.schedule, str(exc)))
        tz_allowed = old is not None and "TZ" in old.schedule
        if tz_allowed and "TZ" in spec.schedule and spec.time_zone is not None:
            errs.append(invalid("spec.schedule", spec.schedule, "cannot use both timeZone field and TZ or CRON_TZ in schedule"))
        elif not tz_allowed and "TZ" in spec.schedule:
            errs.append(invalid("spec.schedule", spec.schedule,
                                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
    errs += _nonnegative("spec.startingDeadlineSeconds", spec.starting_deadline_seconds)
    if old is None or old.time_zone != spec.time_zone:
        errs += _time_zone(spec.time_zone, "spec.timeZone")
    if not spec.concurrency_policy:
        errs.append(required("spec.concurrencyPolicy"))
    elif spec.concurrency_policy not in CONCURRENCY_POLICIES:
        errs.append(not_supported("spec.concurrencyPolicy", spec.concurrency_policy, CONCURRENCY_POLICIES))
    job_spec = spec.job_template.spec
    errs += _job_spec(job_spec, "spec.jobTemplate.spec")
    if job_spec.selector is not None:
        errs.append(invalid("spec.jobTemplate.spec.selector", go_label_selector(job_spec.selector),
                            "`selector` will be auto-generated"))
    if job_spec.manual_selector:
        errs.append(not_supported("spec.jobTemplate.spec.manualSelector", GoValue("true"), ("nil", "false")))
    errs += _nonnegative("spec.successfulJobsHistoryLimit", spec.successful_jobs_history_limit)
    errs += _nonnegative("spec.failedJobsHistoryLimit", spec.failed_jobs_history_limit)
    return errs


def validate_cron_job(cj: b.CronJob) -> list[FieldProblem]:
    """ValidateCronJobCreate."""
    errs = validate_object_meta(cj.metadata, True, name_is_dns_subdomain)
    errs += _cron_job_spec(cj.spec, None)
    if len(cj.metadata.name) > CRONJOB_NAME_MAX:
        errs.append(invalid("metadata.name", cj.metadata.name, f"must be no more than {CRONJOB_NAME_MAX} characters"))
    return errs


def validate_cron_job_update(old: b.CronJob, new: b.CronJob) -> list[FieldProblem]:
    """ValidateCronJobUpdate (the 52-character name limit is not checked again)."""
    return validate_object_meta(new.metadata, True, name_is_dns_subdomain) + _cron_job_spec(new.spec, old.spec)


def prepare_job_for_create(job: b.Job) -> b.Job:
    """The Job strategy at create: the uid the store will keep, then the generated selector."""
    uid = new_uid()
    return generate_selector(evolve(job, metadata=evolve(job.metadata, uid=uid)), uid)

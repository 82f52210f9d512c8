"""``kubectl get`` rows and ``kubectl describe`` text for Jobs and CronJobs (kubectl 1.32's printJob,
printCronJob, describeJob and describeCronJob), built on ``netemu.printers``' helpers.

``printers`` looks these up when it first needs them, so this module may import it freely.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from netemu.api.batch import CronJob, Job
from netemu.printers import (
    Related, _annotations_multiline, _controller_of, _describe_pod_template, _events, _labels_multiline, _rfc1123z,
    _selector_string, _since, _Writer, human_duration, parse_time,
)

JOB_COLUMNS = ("NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE")
CRONJOB_COLUMNS = ("NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE")
WIDE_COLUMNS = ("CONTAINERS", "IMAGES", "SELECTOR")


def _has(job: Job, type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in job.status.conditions)


def job_status(job: Job) -> str:
    """printJob's STATUS column."""
    if _has(job, "Complete"):
        return "Complete"
    if _has(job, "Failed"):
        return "Failed"
    if job.metadata.deletion_timestamp is not None:
        return "Terminating"
    if _has(job, "Suspended"):
        return "Suspended"
    if _has(job, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def _completions(job: Job) -> str:
    succeeded = job.status.succeeded or 0
    if job.spec.completions is not None:
        return f"{succeeded}/{job.spec.completions}"
    parallelism = job.spec.parallelism or 0
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _duration(job: Job, now: datetime) -> str:
    start = parse_time(job.status.start_time)
    if start is None:
        return ""
    end = parse_time(job.status.completion_time)
    return human_duration((end or now) - start)


def _bool_ptr(value: bool | None) -> str:
    return "<unset>" if value is None else ("True" if value else "False")


def job_cells(job: Job, now: datetime, wide: bool) -> list[str]:
    cells = [job.metadata.name, job_status(job), _completions(job), _duration(job, now),
             _since(job.metadata.creation_timestamp, now)]
    if wide:
        containers = job.spec.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers),
                  _selector_string(job.spec.selector)]
    return cells


def cron_job_cells(cj: CronJob, now: datetime, wide: bool) -> list[str]:
    last = _since(cj.status.last_schedule_time, now) if cj.status.last_schedule_time else "<none>"
    cells = [cj.metadata.name, cj.spec.schedule, cj.spec.time_zone if cj.spec.time_zone is not None else "<none>",
             _bool_ptr(cj.spec.suspend), str(len(cj.status.active)), last, _since(cj.metadata.creation_timestamp, now)]
    if wide:
        template = cj.spec.job_template.spec
        containers = template.template.spec.containers
        cells += [",".join(c.name for c in containers), ",".join(c.image for c in containers),
                  _selector_string(template.selector)]
    return cells


def describe_job(w: _Writer, job: Job, events: Sequence[Any] | None, related: Related, now: datetime) -> None:
    meta, spec, status = job.metadata, job.spec, job.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"Selector:\t{_selector_string(spec.selector)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    controller = _controller_of(meta.owner_references)
    if controller:
        w.write(0, f"Controlled By:\t{controller}\n")
    if spec.parallelism is not None:
        w.write(0, f"Parallelism:\t{spec.parallelism}\n")
    w.write(0, f"Completions:\t{spec.completions if spec.completions is not None else '<unset>'}\n")
    if spec.completion_mode:
        w.write(0, f"Completion Mode:\t{spec.completion_mode}\n")
    if spec.suspend is not None:
        w.write(0, f"Suspend:\t{'true' if spec.suspend else 'false'}\n")
    if spec.backoff_limit is not None:
        w.write(0, f"Backoff Limit:\t{spec.backoff_limit}\n")
    if spec.ttl_seconds_after_finished is not None:
        w.write(0, f"TTL Seconds After Finished:\t{spec.ttl_seconds_after_finished}\n")
    if status.start_time:
        w.write(0, f"Start Time:\t{_rfc1123z(status.start_time, now)}\n")
    if status.completion_time:
        w.write(0, f"Completed At:\t{_rfc1123z(status.completion_time, now)}\n")
    if status.start_time and status.completion_time:
        w.write(0, f"Duration:\t{_duration(job, now)}\n")
    if spec.active_deadline_seconds is not None:
        w.write(0, f"Active Deadline Seconds:\t{spec.active_deadline_seconds}s\n")
    counts = f"{status.succeeded or 0} Succeeded / {status.failed or 0} Failed"
    if status.ready is None:
        w.write(0, f"Pods Statuses:\t{status.active or 0} Active / {counts}\n")
    else:
        w.write(0, f"Pods Statuses:\t{status.active or 0} Active ({status.ready} Ready) / {counts}\n")
    if spec.completion_mode == "Indexed":
        w.write(0, f"Completed Indexes:\t{status.completed_indexes or '<none>'}\n")
    _describe_pod_template(w, spec.template, now)
    _events(w, events, now)


def describe_cron_job(w: _Writer, cj: CronJob, events: Sequence[Any] | None, related: Related,
                      now: datetime) -> None:
    meta, spec, status = cj.metadata, cj.spec, cj.status
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Schedule:\t{spec.schedule}\n")
    w.write(0, f"Concurrency Policy:\t{spec.concurrency_policy}\n")
    w.write(0, f"Suspend:\t{_bool_ptr(spec.suspend)}\n")
    for label, value in (("Successful Job History Limit", spec.successful_jobs_history_limit),
                         ("Failed Job History Limit", spec.failed_jobs_history_limit)):
        w.write(0, f"{label}:\t{value if value is not None else '<unset>'}\n")
    deadline = spec.starting_deadline_seconds
    w.write(0, f"Starting Deadline Seconds:\t{f'{deadline}s' if deadline is not None else '<unset>'}\n")
    template = spec.job_template.spec
    w.write(0, f"Selector:\t{_selector_string(template.selector) if template.selector else '<unset>'}\n")
    for label, value in (("Parallelism", template.parallelism), ("Completions", template.completions)):
        w.write(0, f"{label}:\t{value if value is not None else '<unset>'}\n")
    if template.active_deadline_seconds is not None:
        w.write(0, f"Active Deadline Seconds:\t{template.active_deadline_seconds}s\n")
    _describe_pod_template(w, template.template, now)
    last = status.last_schedule_time
    w.write(0, f"Last Schedule Time:\t{_rfc1123z(last, now) if last else '<unset>'}\n")
    w.write(0, f"Active Jobs:\t{', '.join(ref.name for ref in status.active) or '<none>'}\n")
    _events(w, events, now)

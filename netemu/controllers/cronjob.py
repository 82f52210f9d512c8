"""The CronJob controller: Jobs on a cron schedule, concurrency, history and status.

As Kubernetes' cronjob controller (v2, 1.32) does, on the cluster's ``Clock``:

- At each scheduled time (``netemu.api.cron``: robfig/cron syntax, ``timeZone``) a Job
  ``<cronjob>-<scheduled time in minutes since the epoch>`` is made from ``jobTemplate``, owned by
  the CronJob and annotated ``batch.kubernetes.io/cronjob-scheduled-timestamp``
  (``SuccessfulCreate`` "Created job …"). Only the most recent missed time is run; more than 100
  missed times give the Warning ``TooManyMissedTimes``; a time older than
  ``startingDeadlineSeconds`` is skipped (Warning ``MissSchedule``).
- ``concurrencyPolicy``: Allow runs Jobs side by side; Forbid skips a time while a Job is active
  (``JobAlreadyActive``); Replace deletes the active Jobs first (``SuccessfulDelete``).
- ``suspend: true`` makes no new Jobs (running ones go on).
- ``status.active`` lists the unfinished Jobs, ``lastScheduleTime`` the last time a Job was made
  for, ``lastSuccessfulTime`` the completion of the last successful one (``SawCompletedJob``).
- Finished Jobs beyond ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` are deleted,
  oldest first, with their pods.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import replace

from netemu import events
from netemu.api import batch as b
from netemu.api import cron
from netemu.api.batchrules import default_job, generate_selector
from netemu.api.objects import ObjectMeta, ObjectReference
from netemu.clock import parse_rfc3339, rfc3339
from netemu.errors import AlreadyExistsError
from netemu.names import new_uid

from . import podutil
from .clocked import ClockedController
from .job import delete_job_and_pods, owner_reference

log = logging.getLogger(__name__)

CONTROLLER_NAME = "cronjob-controller"
MAX_MISSED = 100

CronJobKey = tuple[str, str]


class CronJobController(ClockedController):
    KIND, OWNED, NAME = "CronJob", "Job", CONTROLLER_NAME

    # ------------------------------------------------------------------ sync

    def _jobs_of(self, cj: b.CronJob) -> list[b.Job]:
        uid = cj.metadata.uid
        return [job for job in self._store.list("Job", cj.metadata.namespace)
                if (ref := podutil.controller_of(job)) is not None and ref.uid == uid]

    def _sync(self, key: CronJobKey) -> None:
        ns, name = key
        cj: b.CronJob | None = self._store.get("CronJob", ns, name)
        if cj is None:
            self._forget(key)
            return
        jobs = self._jobs_of(cj)
        status = self._observe(cj, jobs)
        jobs = self._trim_history(cj, jobs)
        if cj.metadata.deletion_timestamp is None:
            status = self._schedule(cj, jobs, status)
        if status != cj.status:
            self._store.modify("CronJob", ns, name, lambda c: dataclasses.replace(c, status=status))

    def _observe(self, cj: b.CronJob, jobs: list[b.Job]) -> b.CronJobStatus:
        """status.active and lastSuccessfulTime from the CronJob's Jobs."""
        status = cj.status
        active = tuple(_reference(job) for job in sorted(jobs, key=lambda j: j.metadata.name)
                       if not b.is_finished(job) and job.metadata.deletion_timestamp is None)
        last_success = status.last_successful_time
        was_active = {ref.uid for ref in status.active}
        for job in jobs:
            cond = b.finished_condition(job)
            if cond is None:
                continue
            if job.metadata.uid in was_active:
                events.recorder(self._store).normal(
                    cj, "SawCompletedJob", f"Saw completed job: {job.metadata.name}, condition: {cond.type}",
                    component=CONTROLLER_NAME)
            if cond.type == "Complete" and job.status.completion_time:
                if last_success is None or (parse_rfc3339(job.status.completion_time) or 0) > \
                        (parse_rfc3339(last_success) or 0):
                    last_success = job.status.completion_time
        return replace(status, active=active, last_successful_time=last_success)

    def _trim_history(self, cj: b.CronJob, jobs: list[b.Job]) -> list[b.Job]:
        """Delete the oldest finished Jobs beyond the history limits; the Jobs that remain."""
        kept = list(jobs)
        for type_, limit in (("Complete", cj.spec.successful_jobs_history_limit),
                             ("Failed", cj.spec.failed_jobs_history_limit)):
            if limit is None:
                continue
            done = [j for j in jobs if (c := b.finished_condition(j)) is not None and c.type == type_]
            done.sort(key=lambda j: (j.status.start_time or j.metadata.creation_timestamp or "", j.metadata.name))
            for job in done[:max(0, len(done) - limit)]:
                delete_job_and_pods(self._store, job)
                kept.remove(job)
                events.recorder(self._store).normal(cj, "SuccessfulDelete", f"Deleted job {job.metadata.name}",
                                                    component=CONTROLLER_NAME)
        return kept

    def _schedule(self, cj: b.CronJob, jobs: list[b.Job], status: b.CronJobStatus) -> b.CronJobStatus:
        spec = cj.spec
        key = (cj.metadata.namespace, cj.metadata.name)
        try:
            schedule = cron.parse(spec.schedule, spec.time_zone)
        except cron.ScheduleError as exc:
            events.recorder(self._store).warning(cj, "UnparseableSchedule", f"unparseable schedule: "
                                                 f"{spec.schedule!r} : {exc}", component=CONTROLLER_NAME)
            return status
        now = self.clock.time()
        if spec.suspend:
            return status
        earliest = parse_rfc3339(status.last_schedule_time) or parse_rfc3339(cj.metadata.creation_timestamp) or now
        if spec.starting_deadline_seconds is not None:
            earliest = max(earliest, now - spec.starting_deadline_seconds)
        missed, too_many = schedule.times_between(earliest, now, MAX_MISSED)
        self._wake_at(key, schedule.next_after(now))
        if not missed:
            return status
        if too_many:
            events.recorder(self._store).warning(
                cj, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds "
                "or check clock skew", component=CONTROLLER_NAME)
        scheduled = missed[-1]
        if spec.starting_deadline_seconds is not None and scheduled < now - spec.starting_deadline_seconds:
            events.recorder(self._store).warning(cj, "MissSchedule", f"Missed scheduled time to start a job: "
                                                 f"{rfc3339(scheduled)}", component=CONTROLLER_NAME)
            return status
        active = [j for j in jobs if not b.is_finished(j) and j.metadata.deletion_timestamp is None]
        if active and spec.concurrency_policy == "Forbid":
            events.recorder(self._store).normal(
                cj, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency "
                "policy is Forbid", component=CONTROLLER_NAME)
            return status
        if active and spec.concurrency_policy == "Replace":
            for job in active:
                delete_job_and_pods(self._store, job)
                events.recorder(self._store).normal(cj, "SuccessfulDelete", f"Deleted job {job.metadata.name}",
                                                    component=CONTROLLER_NAME)
            status = replace(status, active=())
        job = self._create_job(cj, scheduled)
        status = replace(status, last_schedule_time=rfc3339(scheduled))
        if job is not None and all(ref.uid != job.metadata.uid for ref in status.active):
            status = replace(status, active=(*status.active, _reference(job)))
        return status

    def _create_job(self, cj: b.CronJob, scheduled: float) -> b.Job | None:
        template = cj.spec.job_template
        name = f"{cj.metadata.name}-{int(scheduled // 60)}"
        annotations = {**template.metadata.annotations, b.CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION: rfc3339(scheduled)}
        job = default_job(b.Job(
            metadata=ObjectMeta(name=name, namespace=cj.metadata.namespace, labels=dict(template.metadata.labels),
                                annotations=annotations, owner_references=(owner_reference(cj),)),
            spec=template.spec))
        uid = new_uid()
        job = generate_selector(replace(job, metadata=replace(job.metadata, uid=uid)), uid)
        try:
            created = self._store.create(job)
        except AlreadyExistsError:
            return self._store.get("Job", cj.metadata.namespace, name)
        events.recorder(self._store).normal(cj, "SuccessfulCreate", f"Created job {name}", component=CONTROLLER_NAME)
        return created


def _reference(job: b.Job) -> ObjectReference:
    return ObjectReference(kind="Job", namespace=job.metadata.namespace, name=job.metadata.name,
                           uid=job.metadata.uid, api_version="batch/v1")


__all__ = ["CONTROLLER_NAME", "CronJobController"]

"""CronJob schedules: parsed as Kubernetes parses them (robfig/cron v3 ``ParseStandard``), iterated
with ``croniter``.

``parse(spec)`` checks a schedule and raises ``ScheduleError`` with robfig/cron's words
(``expected exactly 5 fields, found 1: [x]``, ``end of range (60) above maximum (59): 60``), which
the API server puts after ``spec.schedule: Invalid value: "x": ``. A parsed ``Schedule`` answers
``next_after(t)`` (Unix seconds), in the time zone the schedule names (``CRON_TZ=``/``TZ=``
prefix, or the CronJob's ``timeZone``), else UTC (the controller manager's local time zone on a
cluster; netemu takes UTC so that schedules do not depend on the host).

Standard syntax: five fields (minute hour day-of-month month day-of-week) with ``*``, ``?``,
ranges, lists, steps and month/day names; descriptors ``@yearly``/``@annually``, ``@monthly``,
``@weekly``, ``@daily``/``@midnight``, ``@hourly`` and ``@every <duration>``.
"""
from __future__ import annotations

import datetime
import re
import zoneinfo
from dataclasses import dataclass

from croniter import croniter

from netemu.errors import NetemuError


class ScheduleError(NetemuError):
    """A schedule robfig/cron would refuse; ``str`` is its message."""


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: dict[str, int] | None = None


_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                           "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS = (_Bounds(0, 59), _Bounds(0, 23), _Bounds(1, 31), _Bounds(1, 12, _MONTHS), _Bounds(0, 6, _DAYS))
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _atoi(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ScheduleError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    num = int(text)
    if num < 0:
        raise ScheduleError(f"negative number ({num}) not allowed: {text}")
    return num


def _int_or_name(text: str, names: dict[str, int] | None) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    return _atoi(text)


def _check_range(expr: str, bounds: _Bounds) -> None:
    """robfig/cron's getRange, for its errors only."""
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    if low_and_high[0] in ("*", "?"):
        start, end = bounds.low, bounds.high
    else:
        start = _int_or_name(low_and_high[0], bounds.names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], bounds.names)
        else:
            raise ScheduleError(f"too many hyphens: {expr}")
    step = 1
    if len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if len(low_and_high) == 1:
            end = bounds.high
    elif len(range_and_step) > 2:
        raise ScheduleError(f"too many slashes: {expr}")
    if start < bounds.low:
        raise ScheduleError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise ScheduleError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ScheduleError(f"step of range should be a positive number: {expr}")


def _go_duration_seconds(text: str) -> float:
    if not _GO_DURATION.match(text):
        raise ScheduleError(f'failed to parse duration {text}: time: invalid duration "{text}"')
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _location(name: str) -> datetime.tzinfo:
    if name in ("UTC", ""):
        return datetime.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name}") from None


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: five standard fields (``expression``), or a constant ``every`` delay."""
    expression: str
    zone: datetime.tzinfo
    every: float = 0.0

    def next_after(self, moment: float) -> float:
        """The first scheduled time strictly after ``moment`` (Unix seconds)."""
        if self.every:
            return float(int(moment) + max(1, int(self.every)))  # robfig: whole seconds, at least 1
        start = datetime.datetime.fromtimestamp(moment, self.zone)
        return float(croniter(self.expression, start).get_next(float))

    def times_between(self, earliest: float, latest: float, limit: int) -> tuple[list[float], bool]:
        """Scheduled times in (earliest, latest], at most ``limit`` of them (the most recent ones
        last), and whether there were more."""
        found: list[float] = []
        moment = self.next_after(earliest)
        more = False
        while moment <= latest:
            if len(found) == limit:
                found.pop(0)
                more = True
            found.append(moment)
            moment = self.next_after(moment)
        return found, more


def parse(spec: str, time_zone: str | None = None) -> Schedule:
    """The schedule ``spec`` (robfig/cron's ParseStandard), in ``time_zone`` unless it names one."""
    if not spec:
        raise ScheduleError("empty spec string")
    zone = _location(time_zone or "UTC")
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space, eq = spec.find(" "), spec.find("=")
        name = spec[eq + 1:space] if space >= 0 else spec[eq + 1:]
        try:
            zone = _location(name)
        except ScheduleError:
            raise ScheduleError(f"provided bad location {name}: unknown time zone {name}") from None
        spec = spec[space:].strip() if space >= 0 else ""
    if spec.startswith("@"):
        if spec.startswith("@every "):
            return Schedule("", zone, every=_go_duration_seconds(spec[len("@every "):].strip()))
        expression = _DESCRIPTORS.get(spec)
        if expression is None:
            raise ScheduleError(f"unrecognized descriptor: {spec}")
        return Schedule(expression, zone)
    fields = spec.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    for text, bounds in zip(fields, _FIELDS):
        for expr in text.split(","):
            _check_range(expr, bounds)
    return Schedule(" ".join(f.replace("?", "*").lower() for f in fields), zone)

"""Quantities written the way tc-netem writes them: ``50ms``, ``1.5s``, ``512kbit``, ``10%``.

``parse_quantity(text, UNITS, bare, what)`` turns such text into a number in the unit the table
maps to 1.0 (milliseconds, kbit/s, a probability); a bare number takes the unit ``bare``.
"""
from __future__ import annotations

import re

from netemu.errors import InvalidError

# unit -> factor to the field's unit (ms, kbit/s, probability)
TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
RATE_UNITS = {"bit": 0.001, "kbit": 1.0, "mbit": 1e3, "gbit": 1e6,
              "bps": 0.008, "kbps": 8.0, "mbps": 8e3, "gbps": 8e6}
PERCENT_UNITS = {"%": 0.01}
# Bounds of the settings that time traffic: a delay or jitter above an hour only wedges connections
# (and timers) for good; a rate of 0 is no rate, which `--clear` says, and slower than 1 bit/s is none.
MAX_DELAY_MS = 3_600_000.0
MIN_RATE_KBIT = 0.001
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z%]*)\s*$", re.IGNORECASE)


def parse_quantity(text: str | None, units: dict[str, float], bare: str, what: str) -> float:
    """0.0 for None or ""; InvalidError naming ``what`` for anything else that is not a number
    with one of ``units`` (percentages above 100%, a delay or jitter above ``MAX_DELAY_MS`` and a
    rate below ``MIN_RATE_KBIT`` included)."""
    if text is None or text == "":
        return 0.0
    match = _NUMBER.match(str(text))
    unit = (match.group(2).lower() or bare) if match else ""
    if match is None or unit not in units:
        raise InvalidError(f"impairment: {what} {text!r}: expected a number with one of the units "
                           f"{', '.join(units)}")
    value = float(match.group(1)) * units[unit]
    if units is PERCENT_UNITS and value > 1:
        raise InvalidError(f"impairment: {what} {text!r}: must be between 0% and 100%")
    if units is TIME_UNITS and what in ("delay", "jitter") and value > MAX_DELAY_MS:
        raise InvalidError(f"impairment: {what} {text!r}: must be at most {MAX_DELAY_MS / 1000:g}s")
    if units is RATE_UNITS and value < MIN_RATE_KBIT:
        raise InvalidError(f"impairment: {what} {text!r}: must be at least 1bit (per second); "
                           "to lift a rate limit, clear the impairment")
    return value

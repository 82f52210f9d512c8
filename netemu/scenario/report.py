"""Reporting scenario runs: progress lines as they happen, the summary table, JUnit XML.

Progress (``TextReporter``)::

    NodePort allocation  (scenarios/nodeport.yaml)
     ✓ apply manifests: service/np-explicit (0.01s)
     ✗ expect svc/np-explicit spec.ports[0].nodePort equals 30007 (0.00s)
         svc/np-explicit spec.ports[0].nodePort: expected 30007, got 30008
           svc/np-explicit spec.ports[0].nodePort: 30008

then a table with one row per scenario (steps passed/total, time, result) and a count line.
``write_junit`` writes one ``<testcase>`` per scenario, with ``<failure>``, ``<error>`` or
``<skipped>`` and the step log as ``<system-out>``.
"""
from __future__ import annotations

import datetime
import platform
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from netemu.scenario.model import Scenario


@dataclass
class StepResult:
    path: str                      # steps[3], or "manifests"
    title: str
    passed: bool
    duration: float
    message: str = ""
    output: str = ""


@dataclass
class ScenarioResult:
    scenario: "Scenario"
    status: str                    # passed, failed, skipped, error
    duration: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""               # why skipped, or the error
    short: str = ""                # the reason in a few words, for the table
    cluster: str = ""

    @property
    def passed_steps(self) -> int:
        return sum(1 for s in self.steps if s.passed)

    @property
    def total_steps(self) -> int:
        return len(self.scenario.steps) + (1 if self.scenario.manifests else 0)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.passed), None)

    def log(self) -> str:
        lines = []
        for s in self.steps:
            lines.append(f"{'PASS' if s.passed else 'FAIL'} {s.path} {s.title} ({s.duration:.2f}s)")
            if s.message:
                lines += ["    " + line for line in s.message.splitlines()]
            if s.output:
                lines += ["      " + line for line in s.output.splitlines()]
        return "\n".join(lines)


def _can_encode(out: TextIO, text: str) -> bool:
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.splitlines())


class TextReporter:
    def __init__(self, out: TextIO):
        self.out = out
        fancy = _can_encode(out, "✓✗–")
        self.ok, self.bad, self.skip = ("✓", "✗", "–") if fancy else ("ok", "FAIL", "-")

    def write(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def scenario_started(self, scenario: "Scenario") -> None:
        self.write(f"{scenario.name}  ({scenario.label})")

    def step_finished(self, result: StepResult) -> None:
        mark = self.ok if result.passed else self.bad
        self.write(f" {mark} {result.title} ({result.duration:.2f}s)")
        if not result.passed:
            if result.message:
                self.write(_indent(result.message, "     "))
            if result.output:
                self.write(_indent(result.output, "       | "))

    def scenario_finished(self, result: ScenarioResult) -> None:
        if result.status == "skipped":
            self.write(f" {self.skip} skipped: {result.reason}")
        elif result.status == "error":
            self.write(f" {self.bad} error: {result.reason}")
        self.write()

    def note(self, text: str) -> None:
        self.write(_indent(text, "   "))

    def summary(self, results: list[ScenarioResult], elapsed: float) -> None:
        rows = [("SCENARIO", "STEPS", "TIME", "RESULT")]
        for r in results:
            steps = f"{r.passed_steps}/{r.total_steps}" if r.status != "skipped" else "-"
            outcome = r.status
            if r.status == "skipped":
                outcome = f"skipped ({r.short or r.reason})"
            elif r.status == "failed" and r.failed_step is not None:
                outcome = f"FAILED at {r.failed_step.path}"
            elif r.status == "error":
                outcome = "ERROR"
            rows.append((r.scenario.name, steps, f"{r.duration:.2f}s", outcome))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            self.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
        counts = {status: sum(1 for r in results if r.status == status) for status in
                  ("passed", "failed", "error", "skipped")}
        parts = [f"{n} {status}" for status, n in counts.items() if n]
        self.write(f"{', '.join(parts) or 'nothing ran'} in {elapsed:.2f}s")


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (program output may have any)."""
    return _NOT_XML.sub("\ufffd", text)


def write_junit(results: list[ScenarioResult], path: str | Path, elapsed: float) -> None:
    """JUnit XML as CI systems read it: one testsuite, one testcase per scenario."""
    counts = {status: sum(1 for r in results if r.status == status) for status in ("failed", "error", "skipped")}
    suites = ET.Element("testsuites", name="netemu", tests=str(len(results)), failures=str(counts["failed"]),
                        errors=str(counts["error"]), skipped=str(counts["skipped"]), time=f"{elapsed:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="netemu scenarios", tests=str(len(results)),
                          failures=str(counts["failed"]), errors=str(counts["error"]),
                          skipped=str(counts["skipped"]), time=f"{elapsed:.3f}",
                          timestamp=datetime.datetime.now().isoformat(timespec="seconds"),
                          hostname=platform.node())
    for r in results:
        classname = ".".join(p for p in r.scenario.path.with_suffix("").parts if p not in ("", ".", "..", "/"))
        case = ET.SubElement(suite, "testcase", classname=classname, name=r.scenario.name,
                             file=str(r.scenario.path), time=f"{r.duration:.3f}")
        step = r.failed_step
        if r.status == "failed" and step is not None:
            failure = ET.SubElement(case, "failure", message=_xml(f"{step.path} {step.title}: {step.message}"),
                                    type="AssertionFailed")
            failure.text = _xml(step.output)
        elif r.status == "error":
            ET.SubElement(case, "error", message=_xml(r.reason), type="ClusterError").text = _xml(r.reason)
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=_xml(r.reason))
        if r.steps:
            ET.SubElement(case, "system-out").text = _xml(r.log())
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    tree.write(str(path), encoding="utf-8", xml_declaration=True)

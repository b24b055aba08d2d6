"""The goal rows every benchmark prints, and the JSON line ``bench/run-all`` collects.

A benchmark builds one :class:`Goal` per goal of issue 9 it measures (figure, the baseline
measured in the same run, the ratio and the target) and ends with :func:`report`: a table on
stdout, and with ``--summary-json`` one more line, ``GOALS {json}``, that ``run-all`` reads.
Standard library only, so every benchmark can import it (``bench/`` is on ``sys.path`` when a
benchmark runs as ``python bench/<name>.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

SUMMARY_PREFIX = "GOALS "


@dataclass
class Goal:
    """One goal: ``figure`` (what the hub did), ``baseline`` (the same figure for the baseline,
    measured in the same run; ``None`` when the goal is absolute), ``limit`` and ``compare``
    (the goal holds when ``value <= limit``, or ``>=`` for throughput), ``value`` (the ratio
    when there is a baseline, else the figure itself), ``unit`` of figure and baseline."""

    bench: str
    name: str
    figure: float
    unit: str
    limit: float
    baseline: float | None = None
    compare: str = "<="
    ratio_goal: bool = True  # the limit applies to figure/baseline (False: to the figure)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.figure / self.baseline

    @property
    def value(self) -> float:
        ratio = self.ratio
        return ratio if self.ratio_goal and ratio is not None else self.figure

    @property
    def ok(self) -> bool:
        value = self.value
        if math.isnan(value):
            return False
        return value <= self.limit if self.compare == "<=" else value >= self.limit

    @property
    def target(self) -> str:
        unit = "x" if self.ratio_goal and self.baseline is not None else f" {self.unit}"
        return f"{self.compare} {self.limit:g}{unit}".rstrip()

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "ok": self.ok, "target": self.target}


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else \
        f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".rstrip()


def table(goals: list[Goal]) -> str:
    """Goal rows as an aligned table: bench, goal, figure, baseline, ratio, target, PASS/FAIL."""
    head = ("bench", "goal", "figure", "baseline", "ratio", "target", "")
    rows = [head] + [
        (g.bench, g.name, fmt(g.figure, g.unit), fmt(g.baseline, g.unit),
         "-" if g.ratio is None else f"{g.ratio:.2f}x", g.target, "PASS" if g.ok else "FAIL")
        for g in goals
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {2, 3, 4}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report(goals: list[Goal], summary_json: bool) -> None:
    """Print the goal table; with ``summary_json``, also the ``GOALS`` line for ``run-all``."""
    print()
    print(table(goals))
    if summary_json:
        print(SUMMARY_PREFIX + json.dumps([g.as_dict() for g in goals]), flush=True)


def parse_summary(output: str) -> list[Goal]:
    """The goals of a benchmark's output (its ``GOALS`` lines)."""
    fields = set(Goal.__dataclass_fields__)
    goals = []
    for line in output.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            for row in json.loads(line[len(SUMMARY_PREFIX):]):
                goals.append(Goal(**{k: v for k, v in row.items() if k in fields}))
    return goals

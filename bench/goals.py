"""The goal rows every benchmark prints, and the JSON line ``bench/run-all`` collects.

A benchmark builds one :class:`Goal` per goal of issue 9 it measures (figure, the baseline
measured in the same run, the ratio and the target) and ends with :func:`report`: a table on
stdout, and with ``--summary-json`` one more line, ``GOALS {json}``, that ``run-all`` reads.
Standard library only, so every benchmark can import it (``bench/`` is on ``sys.path`` when a
benchmark runs as ``python bench/<name>.py``). ``python bench/goals.py`` checks the pass/fail
rules on made-up rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

SUMMARY_PREFIX = "GOALS "


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass
class Goal:
    """One goal of issue 9 and whether this run met it.

    ``figure`` is what the hub did, in ``unit``; the goal holds when ``value <= limit`` (or
    ``>=`` with ``compare=">="``, for throughput). What ``value`` is depends on ``ratio_goal``:

    * ``ratio_goal=True`` (a relative goal): ``value`` is ``figure / baseline``, the baseline
      being the same figure for the baseline measured in the same run. Without a usable ratio
      the row FAILS (ratio shown as n/a): a baseline that is missing (``None``), ``<= 0`` or
      not finite, or a figure that is ``<= 0`` or not finite. A relative goal is never judged
      on the raw figure: a relay that delivered nothing, or a latency of 0 (no samples), is a
      broken measurement, not a pass.
    * ``ratio_goal=False`` (an absolute goal): ``value`` is ``figure``; a baseline beside it is
      information only (its ratio is shown, not judged). A figure that is not finite, or is
      negative, FAILS: every figure here is a time, a rate, a size or a share, so a negative
      one (say RSS that shrank as peers were added) means the measurement is broken.
    """

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
        """``figure / baseline``, or ``None`` when either is missing, not finite or ``<= 0``."""
        baseline = self.baseline
        if baseline is None or not (positive(baseline) and positive(self.figure)):
            return None
        return self.figure / baseline

    @property
    def value(self) -> float:
        """What is compared with ``limit``; NaN (so the row fails) when it cannot be known."""
        if not self.ratio_goal:
            return self.figure if math.isfinite(self.figure) and self.figure >= 0 else math.nan
        ratio = self.ratio
        return math.nan if ratio is None else ratio

    @property
    def ok(self) -> bool:
        value = self.value
        if math.isnan(value):
            return False
        return value <= self.limit if self.compare == "<=" else value >= self.limit

    @property
    def target(self) -> str:
        unit = "x" if self.ratio_goal else f" {self.unit}"
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


def ratio_cell(goal: Goal) -> str:
    """The ratio column: n/a when a relative goal has no ratio (and so fails), - when an
    absolute goal has no baseline to compare with."""
    if goal.ratio is not None:
        return f"{goal.ratio:.2f}x"
    return "n/a" if goal.ratio_goal else "-"


def table(goals: list[Goal]) -> str:
    """Goal rows as an aligned table: bench, goal, figure, baseline, ratio, target, PASS/FAIL."""
    head = ("bench", "goal", "figure", "baseline", "ratio", "target", "")
    rows = [head] + [
        (g.bench, g.name, fmt(g.figure, g.unit), fmt(g.baseline, g.unit),
         ratio_cell(g), g.target, "PASS" if g.ok else "FAIL")
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


def _self_test() -> None:
    """The rows that once passed for the wrong reason, and a few that must still pass."""
    nan, inf = math.nan, math.inf
    rel = Goal("t", "rel", 10, "ms", 1.3, baseline=9)
    assert rel.ok and rel.ratio is not None and abs(rel.value - 10 / 9) < 1e-9
    for baseline in (None, 0, -1, nan, inf):  # no usable baseline: a relative goal fails
        assert not Goal("t", "b", 5000, "msgs/s", 0.7, baseline=baseline, compare=">=").ok
        assert not Goal("t", "b", 1, "ms", 1.3, baseline=baseline).ok
    for figure in (0, -1, nan, inf):  # no samples, nothing delivered, overflow
        assert not Goal("t", "f", figure, "ms", 1.3, baseline=2).ok
        assert not Goal("t", "f", figure, "msgs/s", 0.7, baseline=2, compare=">=").ok
    assert Goal("t", "abs", 3, "ms", 5, baseline=100, ratio_goal=False).ok  # baseline: info
    assert Goal("t", "abs", 3, "ms", 5, baseline=None, ratio_goal=False).ok
    assert Goal("t", "abs", 0, "ms", 5, ratio_goal=False).ok
    assert Goal("t", "abs", 100, "%", 100, compare=">=", ratio_goal=False).ok
    for figure in (-1, nan, inf):
        assert not Goal("t", "abs", figure, "KB", 100, ratio_goal=False).ok
    assert not Goal("t", "abs", inf, "msgs/s", 1, compare=">=", ratio_goal=False).ok
    assert ratio_cell(Goal("t", "b", 1, "ms", 1.3, baseline=0)) == "n/a"
    assert ratio_cell(Goal("t", "abs", 1, "ms", 5, ratio_goal=False)) == "-"
    rows = [rel, Goal("t", "b", 1, "ms", 1.3, baseline=nan)]
    text = SUMMARY_PREFIX + json.dumps([g.as_dict() for g in rows])
    assert [g.ok for g in parse_summary(text)] == [True, False]
    print("goals self-test: ok")


if __name__ == "__main__":
    _self_test()

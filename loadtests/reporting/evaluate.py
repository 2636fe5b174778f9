"""Goals to verdicts: one row per goal, model and pair of systems, its figures and whether the
goal is met. How each `GoalKind` is measured is in one table, `MEASURES`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtests.reporting.goals import GOALS, Goal, GoalKind, GoalTable, Unit
from loadtests.reporting.lookup import (
    backend_ratio,
    baseline_at,
    best_point,
    models_of,
    point_at,
    raw_at_formed,
)
from loadtests.reporting.records import GoalRow, Point, RawModel, Results


@dataclass(frozen=True)
class Subject:
    """What one row is about: a goal, a model and one pair of systems, in one run."""

    goal: Goal
    results: Results
    model: str
    ours: str
    theirs: str

    @property
    def raw(self) -> RawModel | None:
        return self.results.raw.get(self.model)

    def at(self, system: str, concurrency: int | None = None) -> Point | None:
        """The system's point at `concurrency` (default: the goal's)."""
        return point_at(
            self.results,
            system,
            self.model,
            self.goal.concurrency if concurrency is None else concurrency,
        )


@dataclass(frozen=True)
class Figures:
    """Ours, theirs and the figure the target applies to, in `unit`."""

    mine: float | None
    other: float | None
    value: float | None
    unit: Unit
    note: str | None = None
    own_ms: float | None = None
    """The gateway's own time at c=1 (server request time minus compute), for the overhead."""
    theirs: str | None = None
    """What the row calls theirs, when not the pair's name (the previous run, with its date)."""
    unmet_when_missing: bool = False
    """True: a figure that cannot be formed counts as not met (both records exist), rather than
    not measured."""


Measure = Callable[[Subject], Figures | None]
"""A kind's figures for one subject; None: the goal does not apply to this run (no such server,
no previous run), and the row is left out."""


def _ratio(mine: float | None, other: float | None) -> float | None:
    return mine / other if mine and other else None


def _skipped(subject: Subject) -> str | None:
    """Why a system of the pair was not measured, when its server was skipped."""
    systems = (subject.ours, subject.theirs)
    skipped = [s for s in subject.results.skipped if any(n in s.systems for n in systems)]
    return f"`{skipped[0].server}` skipped: {skipped[0].reason}" if skipped else None


def _throughput_ratio(subject: Subject) -> Figures:
    a, b = subject.at(subject.ours), subject.at(subject.theirs)
    mine, other = (a.throughput if a else None), (b.throughput if b else None)
    return Figures(mine, other, _ratio(mine, other), Unit.REQ_PER_S, _skipped(subject))


def _cpu_ratio(subject: Subject) -> Figures:
    a, b = subject.at(subject.ours), subject.at(subject.theirs)
    mine, other = (a.server_cpu_ms if a else None), (b.server_cpu_ms if b else None)
    return Figures(mine, other, _ratio(mine, other), Unit.CPU_MS, _skipped(subject))


def _p50_ratio(subject: Subject) -> Figures:
    a, b = subject.at(subject.ours), subject.at(subject.theirs)
    mine, other = (a.latency_ms.p50 if a else None), (b.latency_ms.p50 if b else None)
    return Figures(mine, other, _ratio(mine, other), Unit.RATIO_OF_MS, _skipped(subject))


def _raw_limit_ratio(subject: Subject) -> Figures:
    best = best_point(subject.results, subject.ours, subject.model)
    mine = best.throughput if best else None
    other = subject.raw.limit_items_per_s if subject.raw else None
    return Figures(mine, other, _ratio(mine, other), Unit.ITEMS_PER_S, _skipped(subject))


def _formed_ratio(subject: Subject) -> Figures:
    best = best_point(subject.results, subject.ours, subject.model)
    same = raw_at_formed(subject.raw, best)
    mine = best.throughput if best else None
    other = same.items_per_s if same else None
    formed = best.server_ms.formed_batch if best and best.server_ms else None
    note = f"c={best.concurrency}, batch {formed}" if best and formed else _skipped(subject)
    return Figures(mine, other, _ratio(mine, other), Unit.ITEMS_PER_S, note)


def _backend(subject: Subject) -> Figures:
    point = subject.at(subject.ours)
    mine, other = backend_ratio(subject.raw, point)
    value = mine / other if mine is not None and other else None
    formed = point.server_ms.formed_batch if point and point.server_ms else None
    note = f"batch {formed}" if formed else _skipped(subject)
    return Figures(mine, other, value, Unit.MS_PER_BATCH, note)


def _overhead(subject: Subject) -> Figures:
    return _overhead_over(subject, subject.raw.batch1_p50_ms if subject.raw else None)


def _overhead_paced(subject: Subject) -> Figures:
    return _overhead_over(subject, subject.raw.batch1_paced_p50_ms if subject.raw else None)


def _overhead_over(subject: Subject, other: float | None) -> Figures:
    """Ours c=1 p50 minus `other`, a raw batch-1 p50, with the gateway's own time beside."""
    point = subject.at(subject.ours, 1)
    mine = point.latency_ms.p50 if point else None
    value = mine - other if mine is not None and other is not None else None
    split = point.server_ms if point else None
    own = (
        split.request_mean_ms - split.compute_mean_ms
        if split and split.request_mean_ms is not None and split.compute_mean_ms
        else None
    )
    return Figures(mine, other, value, Unit.MS, _skipped(subject), own_ms=own)


def _baseline(subject: Subject) -> Figures | None:
    baseline = subject.results.baseline
    if baseline is None:
        return None
    a = subject.at(subject.ours)
    b = baseline_at(subject.results, subject.ours, subject.model, subject.goal.concurrency)
    mine, other = (a.throughput if a else None), (b.throughput if b else None)
    if mine is None and other is None:
        return None
    theirs = f"previous run ({baseline.date})"
    return Figures(
        mine, other, _ratio(mine, other), Unit.REQ_PER_S, _skipped(subject), theirs=theirs
    )


def _cold_start_ratio(subject: Subject) -> Figures | None:
    mine, theirs = (subject.results.servers.get(s) for s in (subject.ours, subject.theirs))
    if mine is None or theirs is None:
        return None
    value = mine.cold_start_s / theirs.cold_start_s if theirs.cold_start_s else None
    return Figures(
        mine.cold_start_s, theirs.cold_start_s, value, Unit.RATIO_OF_S, unmet_when_missing=True
    )


def _cold_start(subject: Subject) -> Figures | None:
    server = subject.results.servers.get(subject.ours)
    if server is None:
        return None
    return Figures(server.cold_start_s, None, server.cold_start_s, Unit.S)


def _rss(subject: Subject) -> Figures | None:
    server = subject.results.servers.get(subject.ours)
    if server is None:
        return None
    return Figures(server.rss_ready_mb, None, server.rss_ready_mb, Unit.MIB)


MEASURES: dict[GoalKind, Measure] = {
    GoalKind.RATIO_AT: _throughput_ratio,
    GoalKind.RATIO_RAW: _raw_limit_ratio,
    GoalKind.RATIO_FORMED: _formed_ratio,
    GoalKind.P50_RATIO_AT: _p50_ratio,
    GoalKind.COLD_START_RATIO: _cold_start_ratio,
    GoalKind.OVERHEAD: _overhead,
    GoalKind.OVERHEAD_PACED: _overhead_paced,
    GoalKind.BACKEND: _backend,
    GoalKind.COLD_START: _cold_start,
    GoalKind.RSS: _rss,
    GoalKind.BASELINE: _baseline,
    GoalKind.CPU_RATIO_AT: _cpu_ratio,
}
"""How each kind is measured: the one place a goal's kind is looked at."""


def verdict(goal: Goal, figures: Figures) -> bool | None:
    """Met, not met, or None: not measured (a figure missing)."""
    if figures.value is None:
        return False if figures.unmet_when_missing else None
    return figures.value <= goal.target if goal.at_most else figures.value >= goal.target


def evaluate(results: Results, table: GoalTable = GOALS) -> list[GoalRow]:
    """One row per goal, model and system pair: the figures, and whether the goal is met. In a
    table that keeps unmeasured goals, a row whose figures are missing stays as 'not measured'
    (with the reason when a server was skipped); in the others it is left out."""
    rows = []
    measured = models_of(results)
    for goal in table:
        for model in [m for m in goal.models or measured if m == "all" or m in measured]:
            for ours, theirs in goal.pairs:
                figures = MEASURES[goal.kind](Subject(goal, results, model, ours, theirs))
                if figures is None:
                    continue
                if figures.mine is None and figures.other is None and not table.keep_unmeasured:
                    continue
                rows.append(
                    GoalRow(
                        goal=goal.title,
                        model=model,
                        ours=ours,
                        theirs=figures.theirs or theirs,
                        target=goal.target,
                        unit=figures.unit,
                        mine=figures.mine,
                        other=figures.other,
                        value=figures.value,
                        met=verdict(goal, figures),
                        own_ms=figures.own_ms,
                        note=figures.note,
                    )
                )
    return rows

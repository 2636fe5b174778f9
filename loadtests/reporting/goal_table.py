"""The goals' verdicts as a markdown table; each unit says how its row's figures are shown."""

from __future__ import annotations

from collections.abc import Sequence

from loadtests.reporting.goals import Unit
from loadtests.reporting.records import GoalRow
from loadtests.reporting.text import ABSENT, ms, num, verdict_text


def goal_table(rows: Sequence[GoalRow]) -> list[str]:
    """The verdicts; for the c=1 overhead also the gateway's own time (server request time
    minus compute, from /metrics), which the machine's noise in the compute does not reach."""
    if not rows:
        return ["No goal applies to what this run measured."]
    lines = [
        "| Goal | Model | Ours | Theirs | Ours | Theirs | Figure | Verdict |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        figures = _figures(row)
        theirs = (
            "raw ORT"
            if row.theirs == "raw"
            else row.theirs
            if row.theirs.startswith("previous run")
            else f"`{row.theirs}`"
            if row.theirs
            else "-"
        )
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.goal} | {row.model} | `{row.ours}` | {theirs} | "
            f"{figures[0]} | {figures[1]} | {figures[2]} | {verdict_text(row.met)}{note} |"
        )
    return lines


def _figures(row: GoalRow) -> tuple[str, str, str]:
    """Ours, theirs and the figure, as this row's unit shows them."""
    unit = row.unit
    if unit in (Unit.RATIO_OF_MS, Unit.RATIO_OF_S):
        shown = "ms" if unit == Unit.RATIO_OF_MS else "s"
        digits = 2 if unit == Unit.RATIO_OF_MS else 1
        return (
            f"{num(row.mine, digits)} {shown}" if row.mine is not None else ABSENT,
            f"{num(row.other, digits)} {shown}" if row.other is not None else ABSENT,
            f"{row.value:.2f}x" if row.value is not None else ABSENT,
        )
    if unit == Unit.CPU_MS:
        return (
            f"{row.mine:.3f} ms CPU" if row.mine is not None else ABSENT,
            f"{row.other:.3f} ms CPU" if row.other is not None else ABSENT,
            f"{row.value:.2f}x" if row.value is not None else ABSENT,
        )
    if unit in (Unit.S, Unit.MIB):
        mine = row.mine or 0.0
        return (f"{mine:.1f} {unit}" if unit == Unit.S else f"{mine:.0f} {unit}", "-", "-")
    if unit in (Unit.MS, Unit.MS_PER_BATCH):
        return (
            f"{ms(row.mine)} ms" if row.mine is not None else ABSENT,
            f"{ms(row.other)} ms" if row.other is not None else ABSENT,
            (
                (f"{row.value:+.2f} ms" if unit == Unit.MS else f"{row.value:.2f}x")
                if row.value is not None
                else ABSENT
            )
            + (f" (own time {row.own_ms:.2f} ms)" if row.own_ms is not None else ""),
        )
    return (  # a throughput: req/s or items/s
        f"{num(row.mine)} {unit}" if row.mine is not None else ABSENT,
        f"{num(row.other)} {unit}" if row.other is not None else ABSENT,
        f"{row.value:.2f}x" if row.value is not None else ABSENT,
    )

"""How figures are written in the report: numbers, latencies, verdicts, and the mark for a
figure a run does not have."""

from __future__ import annotations

import math

ABSENT = "\u2013"  # an en dash
"""A figure this run does not have (a histogram the gateway does not export, a point not run)."""


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ABSENT
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ABSENT
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def verdict_text(met: bool | None) -> str:
    return "not measured" if met is None else "**met**" if met else "**not met**"

"""The Locust load shape: user counts stepped per scenario."""

from __future__ import annotations

import pytest

from loadtests.drive.shape import Steps


def test_steps_ramp_per_scenario_then_stop() -> None:
    steps = Steps.parse("1,4", 10, 2)
    assert steps.total_s == 20
    assert steps.at(0.0, scenarios=4) == (4, 4.0)
    assert steps.at(12.0, scenarios=4) == (16, 6.0)
    assert steps.at(12.0) == (4, 1.5)
    assert steps.at(20.0) is None
    with pytest.raises(ValueError, match="user counts"):
        Steps.parse("", 10, 2)

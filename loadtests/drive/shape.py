"""The step/ramp load schedule, free of Locust so it can be tested without gevent's patching."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Steps:
    users: tuple[int, ...]
    """Users per scenario at each step."""
    hold_s: float = 10.0
    """How long each step lasts, ramp included."""
    ramp_s: float = 2.0
    """Time to go from one step's user count to the next."""

    @classmethod
    def parse(cls, users: str, hold_s: str | float, ramp_s: str | float) -> Steps:
        counts = tuple(int(item) for item in str(users).split(",") if item.strip())
        if not counts or any(count < 0 for count in counts):
            raise ValueError(f"steps must be non-negative user counts, got {users!r}")
        return cls(counts, float(hold_s), max(0.1, float(ramp_s)))

    @property
    def total_s(self) -> float:
        return len(self.users) * self.hold_s

    def at(self, elapsed_s: float, scenarios: int = 1) -> tuple[int, float] | None:
        """(users, spawn rate per second) at `elapsed_s` for `scenarios` scenarios; None: stop."""
        index = int(elapsed_s // self.hold_s)
        if index >= len(self.users):
            return None
        previous = self.users[index - 1] if index else 0
        rate = max(1.0, abs(self.users[index] - previous) / self.ramp_s)
        return self.users[index] * scenarios, rate * scenarios

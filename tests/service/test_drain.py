"""The drain sequence (`service.drain`) with fake listeners, a fake clock and no sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.drain import drain_listeners


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@dataclass
class FakeListener:
    clock: Clock
    arrivals_until: float = 0.0  # requests keep arriving until this time
    events: list[tuple[str, float]] = field(default_factory=list)
    finishes: bool = True

    def begin_drain(self) -> None:
        self.events.append(("begin", self.clock()))

    def last_activity(self) -> float:
        return min(self.clock(), self.arrivals_until)

    async def stop_accepting(self) -> None:
        self.events.append(("stop", self.clock()))

    async def wait_finished(self, timeout_s: float) -> bool:
        self.events.append(("wait", timeout_s))
        return self.finishes


def idle_after(clock: Clock, seconds: float):  # type: ignore[no-untyped-def]
    async def wait_idle(timeout_s: float) -> bool:
        clock.now += min(seconds, timeout_s)
        return seconds <= timeout_s

    return wait_idle


async def test_listeners_close_once_requests_stop_arriving() -> None:
    clock = Clock()
    http = FakeListener(clock, arrivals_until=101.2)
    grpc = FakeListener(clock, arrivals_until=100.5)
    outcome = await drain_listeners(
        [http, grpc],
        idle_after(clock, 0.3),
        drain_s=10,
        quiet_s=0.5,
        close_grace_s=1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert outcome.idle and outcome.quiet and outcome.finished
    # The newest arrival on either listener (101.2) plus the quiet time.
    assert http.events == [("stop", 101.7), ("wait", 1.0)]
    assert grpc.events == [("stop", 101.7), ("wait", 1.0)]


async def test_requests_that_never_stop_close_the_listeners_at_the_deadline() -> None:
    clock = Clock()
    http = FakeListener(clock, arrivals_until=float("inf"))
    outcome = await drain_listeners(
        [http],
        idle_after(clock, 0.3),
        drain_s=3,
        quiet_s=0.5,
        close_grace_s=1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert outcome.idle and not outcome.quiet
    assert http.events == [("stop", 103.0), ("wait", 1.0)]


async def test_work_that_outlasts_the_drain_still_closes_listeners_gracefully() -> None:
    clock = Clock()
    http = FakeListener(clock, arrivals_until=float("inf"), finishes=False)
    outcome = await drain_listeners(
        [http],
        idle_after(clock, 60),
        drain_s=3,
        quiet_s=0.5,
        close_grace_s=1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert not outcome.idle and not outcome.quiet and not outcome.finished
    assert http.events == [("stop", 103.0), ("wait", 1.0)]

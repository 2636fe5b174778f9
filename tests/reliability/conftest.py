"""One bound for every attack in this folder on a gateway process the test was given (as a
fixture argument): once the test is over, the process's resident memory comes back to within
10 % of where it was before the test, within 5 s (`service.memory` gives freed memory back a
second after a burst)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from tests.reliability.probes import MB, SETTLES_WITHIN, rss_bytes, settled_rss
from tests.servers import GatewayProcess


def _gateways(request: pytest.FixtureRequest) -> list[GatewayProcess]:
    names = inspect.signature(request.function).parameters
    found = []
    for name in names:
        if name not in request.fixturenames:
            continue
        try:
            value = request.getfixturevalue(name)
        except pytest.FixtureLookupError:
            continue
        if isinstance(value, GatewayProcess):
            found.append(value)
    return found


@pytest.fixture(autouse=True)
def memory_settles_after_the_attack(request: pytest.FixtureRequest) -> Iterator[None]:
    gateways = [g for g in _gateways(request) if g.process.poll() is None]
    started = {g.process.pid: rss_bytes(g.process.pid) for g in gateways}
    yield
    for g in gateways:
        if g.process.poll() is not None:
            continue
        pid = g.process.pid
        before = started[pid]
        settled = settled_rss(pid, int(before * SETTLES_WITHIN))
        print(f"\nRSS {before / MB:.0f} MB before the test, {settled / MB:.0f} MB after it")
        assert settled <= before * SETTLES_WITHIN, (
            f"RSS {before / MB:.0f} MB before the test, still {settled / MB:.0f} MB 5 s after"
        )

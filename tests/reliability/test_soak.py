"""The soak benchmark's short CI version: steady load, every answer 200, RSS growth reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.soak import soak
from tests.tiny_models import full_store

pytestmark = pytest.mark.integration


def test_short_soak(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    report = soak(store, "tab", duration_s=12, concurrency=8, log_dir=tmp_path, warmup_s=3)
    print(f"\nshort soak: {report}")
    assert report.requests > 100
    assert set(report.statuses) == {200}
    # A short run only guards against gross leaks; the real goal (< 5 %) is the long benchmark.
    assert report.rss_growth_pct < 25

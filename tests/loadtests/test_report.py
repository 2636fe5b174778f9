"""`python -m loadtests.report` on the recorded run gives back the recorded page, byte for byte.

docs/benchmarks.md and docs/benchmarks.json are written together from one run, so rendering the
stored results again must reproduce the stored page and goal rows: a change to the report's text,
tables or goal verdicts shows here (regenerate the docs when such a change is meant)."""

from __future__ import annotations

from pathlib import Path

from loadtests import report

DOCS = Path(__file__).resolve().parents[2] / "docs"
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_recorded_run_renders_the_recorded_page(tmp_path: Path) -> None:
    assert report.main([str(DOCS / "benchmarks.json"), "--docs", str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks.md").read_text() == (DOCS / "benchmarks.md").read_text()
    assert (tmp_path / "benchmarks.json").read_text() == (DOCS / "benchmarks.json").read_text()
    for image in ("bench_throughput.png", "bench_latency.png"):
        assert (tmp_path / "images" / image).read_bytes().startswith(PNG)

"""The raw yardstick: ONNX Runtime in-process, back to back and paced, and how a run sums it up."""

from __future__ import annotations

from pathlib import Path

from loadtests.reporting.records import RawModel, RawPoint
from loadtests.systems import raw
from tests.tiny_models import classifier


def test_batch_one_is_also_timed_paced_after_the_idle_asked_for(tmp_path: Path) -> None:
    version_dir = classifier(tmp_path / "store")

    points = raw.measure(version_dir, [1, 4], 0.05, idle_ms=2.0)

    hot = [(p.batch, p.spinning) for p in points if not p.paced]
    assert hot == [(1, True), (4, True), (1, False), (4, False)]
    paced = [p for p in points if p.paced]
    assert [(p.batch, p.spinning) for p in paced] == [(1, True), (1, False)]
    # time.sleep never returns early, so each call followed at least the idle asked for.
    assert all(p.idle_gap_ms >= 2.0 and p.calls >= 5 and p.items_per_s > 0 for p in paced)
    assert all(p.idle_gap_ms == 0.0 for p in points if not p.paced)


def test_without_idle_nothing_is_paced(tmp_path: Path) -> None:
    version_dir = classifier(tmp_path / "store")

    points = raw.measure(version_dir, [1], 0.02)

    assert [p.paced for p in points] == [False, False]


def _point(batch: int, items_per_s: float, p50_ms: float, idle_gap_ms: float = 0.0) -> RawPoint:
    return RawPoint(
        batch=batch,
        calls=10,
        items_per_s=items_per_s,
        p50_ms=p50_ms,
        p99_ms=p50_ms * 2,
        idle_gap_ms=idle_gap_ms,
    )


def test_the_limit_and_the_hot_batch_one_leave_paced_calls_out() -> None:
    # A paced call's items/s counts its own time only, so it could outrun a hot point; it must
    # never become the limit, the batch-1 yardstick or the call at a formed batch size.
    entry = RawModel(
        batches=[
            _point(1, 1000.0, 1.0),
            _point(4, 3000.0, 1.3),
            _point(1, 5000.0, 0.2, idle_gap_ms=0.1),
            _point(1, 4000.0, 0.25, idle_gap_ms=0.1),
        ]
    )

    entry.summarize()

    assert (entry.limit_items_per_s, entry.limit_batch) == (3000.0, 4)
    assert entry.batch1_p50_ms == 1.0
    assert entry.batch1_paced_p50_ms == 0.2
    best_at_1 = entry.at(1)
    assert best_at_1 is not None and not best_at_1.paced


def test_a_run_without_paced_calls_has_no_paced_figure() -> None:
    entry = RawModel(batches=[_point(1, 1000.0, 1.0)])

    entry.summarize()

    assert entry.batch1_paced_p50_ms is None


def test_the_raw_session_takes_the_gateway_s_spinning_entries(tmp_path: Path) -> None:
    from service.backends.spinning import Spinning

    version_dir = classifier(tmp_path / "store")
    for spinning in (True, False):
        session = raw.open_session(version_dir / "model.onnx", spinning=spinning)
        options = session.get_session_options()
        expected = Spinning(within_runs=spinning).session_config()
        assert {key: options.get_session_config_entry(key) for key in expected} == expected
        assert expected["session.intra_op.allow_spinning"] == ("1" if spinning else "0")

"""Batch merge/split: property-based."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import BackendError, InvalidInput
from service.feeds import merge, split


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6)), min_size=1, max_size=6))
def test_merge_then_split_restores_each_request(sizes: list[tuple[int, int]]) -> None:
    feeds = [
        {
            "input_ids": np.full((rows, width), index + 1, dtype=np.int64),
            "attention_mask": np.ones((rows, width), dtype=np.int64),
        }
        for index, (rows, width) in enumerate(sizes)
    ]
    batch, rows = merge(feeds)
    assert rows == [r for r, _ in sizes]
    longest = max(w for _, w in sizes)
    assert batch["input_ids"].shape == (sum(rows), longest)
    # padding is zeros with a zero mask: every row's mask sums to its real length
    np.testing.assert_array_equal(
        batch["attention_mask"].sum(axis=1), np.repeat([w for _, w in sizes], rows)
    )
    parts = split({"out": batch["input_ids"][:, :1]}, rows)
    for index, (part, (size, _)) in enumerate(zip(parts, sizes, strict=True)):
        assert part["out"].shape == (size, 1)
        assert (part["out"] == index + 1).all()


def test_split_checks_row_counts() -> None:
    with pytest.raises(BackendError, match="rows"):
        split({"out": np.zeros((3, 1))}, [1, 1])


def test_merge_rejects_mixed_ranks_and_batch_sizes() -> None:
    with pytest.raises(InvalidInput, match="ranks"):
        merge([{"x": np.zeros((1, 2))}, {"x": np.zeros((1, 2, 3))}])
    with pytest.raises(InvalidInput, match="batch size"):
        merge([{"x": np.zeros((1, 2)), "y": np.zeros((2, 2))}])

"""Merging per-request model inputs into one batch along dim 0, and splitting outputs back.

A *feed* maps graph input (or output) names to arrays whose first dimension is the row count.
Inputs whose trailing dimensions differ between requests (token sequences) are zero-padded to
the longest one; with an attention mask of zeros the padding does not change the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from service.errors import BackendError, InvalidInput

Feed = dict[str, np.ndarray]


def rows_of(feed: Mapping[str, np.ndarray]) -> int:
    counts = {array.shape[0] for array in feed.values()}
    if len(counts) != 1:
        raise InvalidInput(f"inputs disagree on the batch size: {sorted(counts)}")
    return int(counts.pop())


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] == shape:
        return array
    widths = [(0, 0)] + [
        (0, want - have) for have, want in zip(array.shape[1:], shape, strict=True)
    ]
    return np.pad(array, widths)


def merge(feeds: Sequence[Feed]) -> tuple[Feed, list[int]]:
    """Concatenate feeds along dim 0; returns the batch and each feed's row count."""
    rows = [rows_of(feed) for feed in feeds]
    if len(feeds) == 1:
        return feeds[0], rows
    merged: Feed = {}
    for name in feeds[0]:
        arrays = [feed[name] for feed in feeds]
        trailing = {array.shape[1:] for array in arrays}
        if len(trailing) > 1:
            ranks = {len(shape) for shape in trailing}
            if len(ranks) != 1:
                raise InvalidInput(f"input {name!r} has different ranks across requests")
            widest = tuple(max(dims) for dims in zip(*trailing, strict=True))
            arrays = [_pad_to(array, widest) for array in arrays]
        merged[name] = np.concatenate(arrays, axis=0)
    return merged, rows


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[Feed]:
    """Cut batch outputs back into one feed per request, in order."""
    total = sum(rows)
    for name, array in outputs.items():
        if array.shape[0] != total:
            raise BackendError(f"output {name!r} has {array.shape[0]} rows for a batch of {total}")
    if len(rows) == 1:
        return [dict(outputs)]
    parts: list[Feed] = [{} for _ in rows]
    bounds = np.cumsum([0, *rows])
    for name, array in outputs.items():
        for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
            parts[index][name] = array[start:stop]
    return parts

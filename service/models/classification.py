"""The classification extension: an output answered as its top k classes, each a BYTES
element `value:index` or `value:index:label` (Triton's form), highest first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from service.errors import InvalidInput
from service.feeds import Feed


def top_classes(
    array: np.ndarray, k: int, labels: Sequence[str] | None, *, batched: bool
) -> np.ndarray:
    """Per row (or for the whole tensor when not `batched`): the k highest values, as BYTES
    `value:index[:label]`, indices counted over the row's elements."""
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InvalidInput("classification needs a numeric output")
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim else array.reshape(1, -1)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    answer = np.empty((rows.shape[0], k), dtype=object)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            text = f"{float(rows[row, index]):f}:{int(index)}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            answer[row, column] = text.encode("utf-8")
    return answer if batched else answer[0]


def classify(
    outputs: Feed,
    requested: Mapping[str, int],
    labels_of: Callable[[str], Sequence[str] | None],
    *,
    batched: bool,
) -> Feed:
    """`outputs` with each requested one replaced by its top classes."""
    answer = dict(outputs)
    for name, k in requested.items():
        if name not in outputs:
            raise InvalidInput(f"unknown outputs requested: ['{name}']; model has {list(outputs)}")
        answer[name] = top_classes(outputs[name], k, labels_of(name), batched=batched)
    return answer

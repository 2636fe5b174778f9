"""Wire-level helpers every codec and processor shares: the decoded tensor, media types and
JSON bodies. Only numpy and the standard library: the TorchServe handlers ship this module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput

JSON_MEDIA_TYPE = "application/json"


@dataclass(slots=True)
class Tensor:
    """A decoded Open Inference Protocol tensor: numeric array, or object array of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


def media_type(content_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def count_json_strings(raw: bytes, end: int) -> int:
    """How many strings (object keys included) the JSON text `raw[:end]` holds, counted from
    its quotes without parsing it. A quote after a backslash is not counted, so a string ending
    in an escaped backslash hides its closing quote: the count is at least half the true one,
    and never more."""
    return (raw.count(b'"', 0, end) - raw.count(b'\\"', 0, end)) // 2


def check_json_strings(raw: bytes, limit: int, end: int) -> None:
    """Refuse a JSON text (`raw[:end]`) holding more than `limit` strings before it is parsed:
    a parser makes an object of each string."""
    if end < 2 * limit:  # too short to hold more: every string takes two quotes
        return
    strings = count_json_strings(raw, end)
    if strings > limit:
        raise InvalidInput(
            f"request body holds {strings} JSON strings; the limit is {limit}, counted "
            "before parsing"
        )


def parse_json(raw: bytes, max_strings: int) -> Any:
    check_json_strings(raw, max_strings, len(raw))
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None

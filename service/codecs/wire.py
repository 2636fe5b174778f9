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


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None

"""Input limits that protect the server from hostile or broken clients: one set of defaults
for the gateway's settings and the TorchServe handler alike."""

from __future__ import annotations

from dataclasses import dataclass

MAX_IMAGE_PIXELS = 16_000_000
MAX_TEXT_CHARS = 20_000
MAX_ROWS = 1_024


@dataclass(frozen=True, slots=True)
class Limits:
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_text_chars: int = MAX_TEXT_CHARS
    max_rows: int = MAX_ROWS

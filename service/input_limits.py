"""Input limits that protect the server from hostile or broken clients: one set of defaults
for the gateway's settings and the TorchServe handler alike."""

from __future__ import annotations

from dataclasses import dataclass

MAX_IMAGE_PIXELS = 16_000_000
MAX_TEXT_CHARS = 20_000
MAX_ROWS = 1_024
MAX_ARCHIVE_BYTES = 8 * 1024**3
"""Most bytes one `.mar` may unpack to: far above real archives (ResNet-152 ~0.25 GB, BERT-large
~1.3 GB), far below a zip bomb's terabytes."""
MAX_ARCHIVE_MEMBERS = 10_000
"""Most files one `.mar` may hold (archives hold tens; each member costs an inode)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_text_chars: int = MAX_TEXT_CHARS
    max_rows: int = MAX_ROWS

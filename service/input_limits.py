"""Input limits that protect the server from hostile or broken clients: one set of defaults
for the gateway's settings and the TorchServe handler alike."""

from __future__ import annotations

from dataclasses import dataclass

MAX_IMAGE_PIXELS = 16_000_000
MAX_TEXT_CHARS = 20_000
MAX_ROWS = 1_024
MAX_BYTES_ELEMENTS = 16_384
"""Most elements one BYTES tensor may declare (checked from its shape before decoding): our
BYTES inputs hold one text or image per row, so 16x the row limit is generous, and decoding
that many takes milliseconds on the event loop (10M elements took 5.7 s and 1.25 GB)."""
MAX_JSON_STRINGS = 65_536
"""Most strings (object keys included) one JSON request body may hold, counted from its quotes
before it is parsed: a parser makes an object of each (a one-character string, 4 bytes of
body, costs ~60 bytes parsed), so 16 MiB of them peaked at +185 MB. 4x the BYTES element limit
leaves room for several BYTES inputs; this many strings cost ~4 MB parsed."""
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
    max_bytes_elements: int = MAX_BYTES_ELEMENTS
    max_json_strings: int = MAX_JSON_STRINGS

"""The README's fenced code blocks, for the tests that run its examples."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def blocks() -> list[Block]:
    """Every fenced block (```lang ... ```), dedented, in document order."""
    parts = README.read_text().split("```")
    found = []
    for part in parts[1::2]:
        language, _, body = part.partition("\n")
        found.append(Block(language.strip(), textwrap.dedent(body).strip()))
    return found


def readme_block(marker: str) -> str:
    """The README's fenced code block that contains `marker`."""
    found = [block.text for block in blocks() if marker in block.text]
    assert len(found) == 1, f"expected one README block with {marker!r}"
    return found[0]


OWN_MODEL_MARKER = "my_store"
"""In the blocks of "Serve your own model": they run against a store of the reader's own, not
the default one (tests/test_readme.py::test_serve_your_own_model)."""


def curl_lines() -> list[str]:
    """Every `curl` command line of the README's bash blocks against the default store."""
    return [
        line.strip()
        for block in blocks()
        if block.language == "bash" and OWN_MODEL_MARKER not in block.text
        for line in block.text.splitlines()
        if line.strip().startswith("curl ")
    ]

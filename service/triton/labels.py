"""Label files: `label_filename` on an output names a text file, one label per line (the
line's text as it is, as Triton reads it), in the model folder. Beyond Triton, a file of that
name in the version folder wins, so that versions may carry their own labels."""

from __future__ import annotations

from pathlib import Path

from service.errors import ModelConfigError


def read_labels(filename: str, model_dir: Path, version_dir: Path | None = None) -> list[str]:
    """The labels of one output; the file must stay inside the model folder."""
    root = model_dir.resolve()
    places = [version_dir, model_dir] if version_dir is not None else [model_dir]
    for folder in places:
        path = (folder / filename).resolve()
        if not path.is_relative_to(root):
            raise ModelConfigError(f"label_filename: {filename!r} is outside the model folder")
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as error:
                raise ModelConfigError(
                    f"label_filename: {filename!r} is not UTF-8 text ({error.reason})"
                ) from None
    raise ModelConfigError(f"label_filename: {filename!r} not found in {model_dir}")

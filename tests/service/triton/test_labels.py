"""Label files named by `label_filename`."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelConfigError
from service.triton.labels import read_labels


def test_labels_one_per_line_from_the_model_folder(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "labels.txt").write_text("cat\nsea lion\n\ndog")
    assert read_labels("labels.txt", tmp_path, tmp_path / "1") == ["cat", "sea lion", "", "dog"]


def test_the_version_folder_wins(tmp_path: Path) -> None:
    (tmp_path / "2").mkdir()
    (tmp_path / "labels.txt").write_text("old\n")
    (tmp_path / "2" / "labels.txt").write_text("new\n")
    assert read_labels("labels.txt", tmp_path, tmp_path / "2") == ["new"]
    assert read_labels("labels.txt", tmp_path) == ["old"]


def test_missing_or_escaping_files(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (tmp_path / "secret.txt").write_text("x")
    with pytest.raises(ModelConfigError, match=r"label_filename: 'labels\.txt' not found"):
        read_labels("labels.txt", model)
    with pytest.raises(ModelConfigError, match="outside the model folder"):
        read_labels("../secret.txt", model)

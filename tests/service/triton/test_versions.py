"""Version folders and version_policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import ModelVersionPolicy

from service.errors import ModelConfigError
from service.triton.pbtxt import parse_config
from service.triton.versions import missing_versions, version_folders, versions_to_serve


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    for name in ("1", "2", "10", "007", "latest", "0"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version folder")
    return tmp_path


def policy(text: str) -> ModelVersionPolicy:
    return parse_config(text).version_policy


def test_numeric_folders_in_numeric_order(model_dir: Path) -> None:
    assert list(version_folders(model_dir)) == ["0", "1", "2", "10"]


@pytest.mark.parametrize(
    ("text", "served"),
    [
        ("", ["10"]),
        ("version_policy { latest { num_versions: 2 } }", ["2", "10"]),
        ("version_policy { latest { num_versions: 9 } }", ["0", "1", "2", "10"]),
        ("version_policy { all { } }", ["0", "1", "2", "10"]),
        ("version_policy { specific { versions: [ 10, 1 ] } }", ["1", "10"]),
    ],
)
def test_policies(model_dir: Path, text: str, served: list[str]) -> None:
    assert versions_to_serve(policy(text), version_folders(model_dir)) == served


def test_specific_versions_without_folder_are_listed(model_dir: Path) -> None:
    chosen = policy("version_policy { specific { versions: [ 2, 5 ] } }")
    folders = version_folders(model_dir)
    assert versions_to_serve(chosen, folders) == ["2"]
    assert missing_versions(chosen, folders) == ["5"]


def test_nothing_to_serve_is_an_error(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="version_policy: specific versions"):
        versions_to_serve(
            policy("version_policy { specific { versions: [ 4 ] } }"),
            version_folders(model_dir),
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelConfigError, match="no version folder"):
        versions_to_serve(policy(""), version_folders(empty))


def test_latest_zero_is_an_error(model_dir: Path) -> None:
    with pytest.raises(ModelConfigError, match="num_versions"):
        versions_to_serve(
            policy("version_policy { latest { num_versions: 0 } }"),
            version_folders(model_dir),
        )

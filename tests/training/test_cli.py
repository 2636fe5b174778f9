"""The command line as a user meets it: help, and one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.training.conftest import run_module, train, write_image_folder
from training.cli import build_parser, options_from_args
from training.config import MODEL_NAMES
from training.errors import TrainingError

OneLine = Callable[[subprocess.CompletedProcess[str]], str]


def test_help_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train("--help")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in (*MODEL_NAMES, "all", "--help"):
        assert name in text


def test_unknown_model(one_line_error: OneLine) -> None:
    line = one_line_error(run_module("alexnet"))
    assert "invalid choice: 'alexnet'" in line
    assert "iris" in line


def test_missing_dataset_path(one_line_error: OneLine, tmp_path: Path) -> None:
    result = run_module("iris", "--data", tmp_path / "nope.csv", "--model-store", tmp_path)
    assert result.returncode == 1
    assert "dataset path does not exist" in one_line_error(result)


def test_wrong_architecture_weights(one_line_error: OneLine, tmp_path: Path) -> None:
    weights = tmp_path / "not-a-resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)).state_dict(), weights)
    store = tmp_path / "store"
    result = run_module(
        "resnet18",
        "--weights",
        weights,
        "--model-store",
        store,
        "--max-samples",
        "8",
        "--epochs",
        "1",
    )
    assert result.returncode == 1
    assert "do not fit resnet18" in one_line_error(result)
    assert not list((store / "resnet18").iterdir())  # nothing half-written


def test_corrupt_image(one_line_error: OneLine, tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "food", per_class=3)
    (root / "sushi" / "sushi_2.png").write_bytes(b"definitely not an image")
    store = tmp_path / "store"
    result = run_module(
        "digits",
        "--dataset",
        "imagefolder",
        "--data",
        root,
        "--model-store",
        store,
        "--epochs",
        "1",
    )
    line = one_line_error(result)
    assert "corrupt image" in line
    assert "sushi_2.png" in line
    assert not list((store / "digits-food").iterdir())


def test_all_expands_to_every_model(tmp_path: Path) -> None:
    runs = options_from_args(
        build_parser().parse_args(
            ["all", "--missing", "--model-store", str(tmp_path), "--epochs", "2"]
        )
    )
    assert [r.model for r in runs] == list(MODEL_NAMES)
    assert all(r.missing and r.epochs == 2 and r.model_store == tmp_path for r in runs)


def test_dataset_is_guessed_from_the_data_root(tmp_path: Path) -> None:
    (tmp_path / "FashionMNIST").mkdir()
    (options,) = options_from_args(build_parser().parse_args(["digits", "--data", str(tmp_path)]))
    assert options.resolved_dataset == "fashionmnist"
    assert options.store_name == "digits-fashionmnist"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits", "--dataset", "cifar10"], "needs --data"),
        (["resnet18", "--weights", "/no/such/file.pth"], "weights file not found"),
        (["digits", "--dataset", "digits", "--data", "."], "not used with the built-in"),
        (["iris", "--name", "My Model"], "use lower-case letters"),
    ],
)
def test_bad_combinations(args: list[str], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        options_from_args(build_parser().parse_args(args))


@pytest.mark.parametrize(
    "args", [["iris", "--epochs", "0"], ["digits", "--image-size", "4"], ["iris", "--lr", "-1"]]
)
def test_bad_numbers_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

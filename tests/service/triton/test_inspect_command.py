"""`python -m service inspect`, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.triton.json_form import config_json
from service.triton.pbtxt import parse_config
from service.triton.resolve import resolve_model
from tests.service.triton.models import model_folder, pt2_model, two_heads_model

REPO = Path(__file__).resolve().parents[3]


def inspect(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "inspect", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_onnx_file_and_pt2_print_their_completed_config(tmp_path: Path) -> None:
    for path in (
        two_heads_model(tmp_path / "onnx" / "model.onnx"),
        pt2_model(tmp_path / "pt2" / "model.pt2"),
    ):
        done = inspect(path)
        assert done.returncode == 0, done.stderr
        printed = parse_config(done.stdout)
        assert printed == resolve_model(path).config
        assert printed.max_batch_size == 4 and printed.HasField("dynamic_batching")


def test_json_form_and_name(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "scorer")
    two_heads_model(folder / "1" / "model.onnx")
    done = inspect(folder, "--json", "--name", "scorer")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == config_json(resolve_model(folder).config)


def test_refused_model_exits_1_with_the_reason(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "chain", 'platform: "ensemble"')
    done = inspect(folder)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("python -m service inspect: error: model 'chain': ")
    assert "ensemble_scheduling" in done.stderr

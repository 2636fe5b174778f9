"""The launcher's file handling, without starting TorchServe (see test_torchserve.py for that)."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

from deploy.torchserve.launcher import (
    DEFAULT_CONFIG,
    TorchServeError,
    copy_with_batching,
    free_port_range,
    launch,
    read_key,
    read_properties,
    with_settings,
    write_properties,
)


def test_with_settings_replaces_top_level_keys_only() -> None:
    text = "minWorkers: 1\nbatchSize: 32\nhandler:\n  batchSize: 9\n  top_k: 5\n"
    updated = with_settings(text, {"batchSize": 1, "maxBatchDelay": 0})
    assert updated.splitlines() == [
        "batchSize: 1",
        "maxBatchDelay: 0",
        "minWorkers: 1",
        "handler:",
        "  batchSize: 9",
        "  top_k: 5",
    ]


def test_copy_with_batching_rewrites_only_the_model_config(tmp_path: Path) -> None:
    source, target = tmp_path / "a.mar", tmp_path / "b.mar"
    with zipfile.ZipFile(source, "w") as mar:
        mar.writestr("model-config.yaml", "batchSize: 32\nmaxBatchDelay: 5\n")
        mar.writestr("model.pt", b"\x00weights")
    copy_with_batching(source, target, {"batchSize": 4, "maxBatchDelay": 50})
    with zipfile.ZipFile(target) as mar:
        assert mar.read("model-config.yaml") == b"batchSize: 4\nmaxBatchDelay: 50\n"
        assert mar.read("model.pt") == b"\x00weights"


def test_properties_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    write_properties(path, {"a": "1", "vmargs": "-Xmx1g -Dx=y"})
    assert read_properties(path) == {"a": "1", "vmargs": "-Xmx1g -Dx=y"}


def test_deploy_config_keeps_auth_on_and_the_model_api_off() -> None:
    properties = read_properties(DEFAULT_CONFIG)
    assert properties["disable_token_authorization"] == "false"
    assert properties["enable_model_api"] == "false"
    assert properties["metrics_mode"] == "prometheus"
    assert properties["inference_address"].startswith("http://127.0.0.1:")
    assert int(properties["max_request_size"]) >= 16 * 1024 * 1024


def test_free_port_range_is_free() -> None:
    first = free_port_range(4)
    for port in range(first, first + 4):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_read_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"inference": {"key": "abc"}, "management": {"key": "m"}}')
    assert read_key(key_file) == "abc"
    assert read_key(key_file, "management") == "m"


def test_missing_archives_are_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(TorchServeError, match="archive not found"):
        launch(tmp_path, tmp_path / "work", ["nope"])
    with pytest.raises(TorchServeError, match="no models"):
        launch(tmp_path, tmp_path / "work", [])

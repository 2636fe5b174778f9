"""`make archives`: one self-contained .mar per TorchScript model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from deploy.torchserve import archive
from deploy.torchserve.archive import ArchiveError, build_archives
from tests import tiny_models
from tests.handlers import torch_models


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    torch_models.classifier(root)
    torch_models.text_embedder(root)
    tiny_models.regressor(root, name="onnx-only")
    return root


def members(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as mar:
        return set(mar.namelist())


def test_every_torchscript_model_gets_an_archive(store: Path, tmp_path: Path) -> None:
    archives = build_archives(store, tmp_path)
    assert sorted(path.name for path in archives) == ["tab.mar", "txt.mar"]


def test_archive_is_self_contained(store: Path, tmp_path: Path) -> None:
    (mar,) = build_archives(store, tmp_path, ["txt"])
    names = members(mar)
    assert {"model.pt", "model.json", "tokenizer.json", "model-config.yaml"} <= names
    assert "manifest_handler.py" in names
    assert {f"service/{m}.py" for m in ("processing", "feeds", "manifest", "errors")} <= names
    assert {"handlers/decoding.py", "service/backends/tensor_payload.py"} <= names
    assert not any(name.startswith("service/routes") for name in names)
    with zipfile.ZipFile(mar) as opened:
        manifest = json.loads(opened.read("MAR-INF/MANIFEST.json"))
    assert manifest["model"]["modelVersion"] == "1"
    assert manifest["model"]["handler"] == "manifest_handler.py"


def test_shipped_modules_import_nothing_heavy() -> None:
    """The archive's copy of the gateway code must not need FastAPI, ORT or the gateway."""
    for module in archive.SHIPPED_MODULES:
        source = (archive.SOURCE_ROOT / module).read_text()
        for heavy in ("fastapi", "onnxruntime", "aiohttp", "service.routes", "service.app"):
            assert f"import {heavy}" not in source and f"from {heavy}" not in source, module


def test_model_config_per_name_then_default(store: Path, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tab.yaml").write_text("batchSize: 3\n")
    (configs / "default.yaml").write_text("batchSize: 7\n")
    for mar in build_archives(store, tmp_path / "out", config_dir=configs):
        with zipfile.ZipFile(mar) as opened:
            text = opened.read("model-config.yaml").decode()
        assert text == ("batchSize: 3\n" if mar.stem == "tab" else "batchSize: 7\n")


def test_built_in_defaults_use_the_manifest_batch(store: Path, tmp_path: Path) -> None:
    (mar,) = build_archives(store, tmp_path, ["tab"], config_dir=tmp_path / "none")
    with zipfile.ZipFile(mar) as opened:
        assert "batchSize: 8\n" in opened.read("model-config.yaml").decode()


def test_deploy_configs_exist_for_the_default_models() -> None:
    for name in ("default", "iris", "diabetes", "digits", "resnet18", "minilm", "lstm"):
        assert (archive.DEFAULT_CONFIG_DIR / f"{name}.yaml").is_file()


def test_asking_for_unknown_or_onnx_only_models_fails(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not in"):
        build_archives(store, tmp_path, ["nope"])
    with pytest.raises(ArchiveError, match="no TorchScript"):
        build_archives(store, tmp_path, ["onnx-only"])


def test_command_line(store: Path, tmp_path: Path) -> None:
    archive.main(["--model-store", str(store), "--out-dir", str(tmp_path), "--models", "tab"])
    assert (tmp_path / "tab.mar").is_file()
    with pytest.raises(SystemExit, match="no model"):
        archive.main(["--model-store", str(tmp_path / "empty")])

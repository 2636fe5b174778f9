"""Reading TorchServe's config.properties, model stores and archives."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from service.errors import InvalidInput
from service.native.archives import (
    ArchiveManifest,
    ExtractionLimits,
    ServingOptions,
    StoreConfig,
    extract,
    read_properties,
)

PROPERTIES = """\
# TorchServe's own example layout
inference_address=http://0.0.0.0:8080
model_store = store
load_models=digits.mar,fast=iris.mar
models={\\
  "digits": {\\
    "1.0": {\\
        "defaultVersion": true,\\
        "marName": "digits.mar",\\
        "minWorkers": 2,\\
        "batchSize": 8,\\
        "maxBatchDelay": 50,\\
        "responseTimeout": 30\\
    }\\
  }\\
}
"""


def mar(path: Path, name: str, version: str = "1.0", extra: dict[str, bytes] | None = None) -> Path:
    manifest = {"model": {"modelName": name, "modelVersion": version, "handler": "h.py"}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("h.py", "def handle(data, context):\n    return data\n")
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return path


def test_properties_with_continued_lines(tmp_path: Path) -> None:
    file = tmp_path / "config.properties"
    file.write_text(PROPERTIES)
    properties = read_properties(file)
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["model_store"] == "store"
    assert json.loads(properties["models"])["digits"]["1.0"]["batchSize"] == 8


def test_store_config_reads_load_models_and_models(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    for name in ("digits", "iris", "other"):
        mar(tmp_path / "store" / f"{name}.mar", name)
    file = tmp_path / "config.properties"
    file.write_text(PROPERTIES)
    config = StoreConfig.read(file, default_store=tmp_path / "ignored")
    assert config.model_store == tmp_path / "store"
    assert sorted(config.archives()) == ["digits", "fast"]
    assert config.options_for("digits", "1.0") == ServingOptions(
        batch_size=8, max_batch_delay_ms=50, min_workers=2, response_timeout_s=30.0
    )
    assert config.options_for("fast", "1.0") == ServingOptions()
    everything = StoreConfig(tmp_path / "store")
    assert sorted(everything.archives()) == ["digits", "iris", "other"]


def test_the_archive_config_wins_and_bad_values_are_refused() -> None:
    options = ServingOptions(batch_size=8).merged({"batchSize": 4, "responseTimeout": 2})
    assert (options.batch_size, options.response_timeout_s) == (4, 2.0)
    with pytest.raises(InvalidInput, match="batchSize"):
        ServingOptions().merged({"batchSize": 0})
    with pytest.raises(InvalidInput, match="must be a number"):
        ServingOptions().merged({"minWorkers": "many"})


def test_startup_timeout_is_read_and_checked() -> None:
    assert ServingOptions().startup_timeout_s is None
    assert ServingOptions().merged({"startupTimeout": 2.5}).startup_timeout_s == 2.5
    with pytest.raises(InvalidInput, match="startupTimeout"):
        ServingOptions().merged({"startupTimeout": 0})


def test_extraction_is_private_reused_and_safe(tmp_path: Path) -> None:
    archive = mar(tmp_path / "m.mar", "m", "2.0", {"model-config.yaml": b"batchSize: 3\n"})
    first = extract(archive, tmp_path / "x")
    assert first.manifest == ArchiveManifest.read(archive)
    assert first.manifest.version == "2.0"
    assert (first.path / "h.py").is_file()
    assert extract(archive, tmp_path / "x").path == first.path
    evil = mar(tmp_path / "evil.mar", "evil", extra={"../../escape.py": b"x"})
    with pytest.raises(InvalidInput, match="escapes"):
        extract(evil, tmp_path / "x")
    assert not (tmp_path / "escape.py").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mar"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match="not a model archive"):
        ArchiveManifest.read(junk)


def manifest_mar(path: Path, model: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": model}))
    return path


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"modelName": "../../../outside", "handler": "h.py"}, "model.modelName"),
        ({"modelName": "a/b", "handler": "h.py"}, "model.modelName"),
        ({"modelName": "m", "modelVersion": {"x": 1}, "handler": "h.py"}, "model.modelVersion"),
        ({"modelName": "m", "handler": "h.py", "configFile": 5}, "model.configFile"),
        ({"modelName": "m", "handler": "h.py", "configFile": "../x.yaml"}, "model.configFile"),
        ({"modelName": "m"}, "model.handler"),
    ],
)
def test_manifest_problems_are_named(tmp_path: Path, model: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        ArchiveManifest.read(manifest_mar(tmp_path / "m.mar", model))


def test_an_archive_name_that_is_no_plain_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"model name '\.\.bad'"):
        ArchiveManifest.read(manifest_mar(tmp_path / "..bad.mar", {"handler": "h.py"}))


def test_limits_are_checked_from_the_directory_before_writing(tmp_path: Path) -> None:
    archive = mar(tmp_path / "big.mar", "big", extra={"w.bin": bytes(4096)})
    root = tmp_path / "x"
    with pytest.raises(InvalidInput, match="GATEWAY_ARCHIVE_MAX_BYTES"):
        extract(archive, root, ExtractionLimits(max_bytes=4096, max_members=10))
    with pytest.raises(InvalidInput, match="3 members; the limit is 2"):
        extract(archive, root, ExtractionLimits(max_bytes=1 << 20, max_members=2))
    assert not [path for path in root.rglob("*") if path.is_file()]
    assert extract(archive, root, ExtractionLimits(max_bytes=8192, max_members=3)).path.is_dir()


def understate(archive: Path, member: str, size: int) -> None:
    """Rewrite the member's uncompressed size in its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    name = member.encode()
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, size)
    archive.write_bytes(bytes(data))


def test_a_directory_that_understates_sizes_writes_no_more_than_it_says(tmp_path: Path) -> None:
    archive = tmp_path / "liar.mar"
    mar(archive, "liar")
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as opened:
        opened.writestr("w.bin", bytes(8 << 20))
    understate(archive, "w.bin", 1000)
    with zipfile.ZipFile(archive) as opened:
        assert opened.getinfo("w.bin").file_size == 1000
    root = tmp_path / "x"
    with pytest.raises(InvalidInput, match=r"liar\.mar: member 'w\.bin' is corrupt"):
        extract(archive, root, ExtractionLimits(max_bytes=1 << 20, max_members=10))
    assert not [path for path in root.rglob("*") if path.is_file()]


SNAPSHOT = {
    "name": "startup.cfg",
    "modelCount": 2,
    "models": {
        "mnist": {
            "1.0": {
                "defaultVersion": True,
                "marName": "mnist.mar",
                "minWorkers": 2,
                "maxWorkers": 5,
                "batchSize": 4,
                "maxBatchDelay": 10,
                "responseTimeout": 60,
            }
        },
        "renamed": {
            "1.0": {"marName": "other.mar", "batchSize": 2},
            "2.0": {"defaultVersion": True, "marName": "iris.mar", "batchSize": 3},
        },
    },
}


def snapshot_store(tmp_path: Path, snapshot: dict[str, Any], extra: str = "") -> Path:
    """KServe's TorchServe layout: config/config.properties and model-store/*.mar."""
    (tmp_path / "model-store").mkdir()
    for name in ("mnist", "iris", "other", "unlisted"):
        mar(tmp_path / "model-store" / f"{name}.mar", name)
    (tmp_path / "config").mkdir()
    file = tmp_path / "config" / "config.properties"
    file.write_text(
        "inference_address=http://0.0.0.0:8085\n"
        "enable_envvars_config=true\n"
        "load_models=unlisted.mar\n"
        f"model_store={tmp_path / 'model-store'}\n"
        f"model_snapshot={json.dumps(snapshot)}\n" + extra
    )
    return file


def test_model_snapshot_names_the_models_their_archives_and_settings(tmp_path: Path) -> None:
    file = snapshot_store(tmp_path, SNAPSHOT, "service_envelope=kserve\n")
    config = StoreConfig.read(file, default_store=tmp_path / "ignored")
    # As TorchServe: the snapshot replaces load_models; names are the snapshot's own.
    assert config.archives() == {
        "mnist": tmp_path / "model-store" / "mnist.mar",
        "renamed": tmp_path / "model-store" / "iris.mar",  # its defaultVersion's archive
    }
    assert config.options_for("mnist", "1.0") == ServingOptions(
        batch_size=4, max_batch_delay_ms=10, min_workers=2, response_timeout_s=60.0
    )
    assert config.options_for("renamed", "2.0").batch_size == 3
    assert config.envelope == "kserve"


def test_model_snapshot_settings_win_over_models(tmp_path: Path) -> None:
    models = {"mnist": {"1.0": {"batchSize": 16, "responseTimeout": 5}}}
    file = snapshot_store(tmp_path, SNAPSHOT, f"models={json.dumps(models)}\n")
    options = StoreConfig.read(file, tmp_path).options_for("mnist", "1.0")
    assert (options.batch_size, options.response_timeout_s) == (4, 60.0)


def test_model_snapshot_with_no_models_loads_nothing(tmp_path: Path) -> None:
    file = snapshot_store(tmp_path, {"name": "empty", "modelCount": 0, "models": {}})
    assert StoreConfig.read(file, tmp_path).archives() == {}


def test_model_snapshot_naming_a_missing_archive_stops_the_start(tmp_path: Path) -> None:
    broken = json.loads(json.dumps(SNAPSHOT))
    broken["models"]["mnist"]["1.0"]["marName"] = "gone.mar"
    config = StoreConfig.read(snapshot_store(tmp_path, broken), tmp_path)
    with pytest.raises(InvalidInput, match=r"'gone.mar' of model 'mnist'.*not in the model store"):
        config.archives()


@pytest.mark.parametrize(
    ("snapshot", "problem"),
    [
        ("not json", "model_snapshot= .* is not JSON"),
        ('{"models": []}', "expected"),
        ('{"models": {"m": {}}}', "lists no version"),
        ('{"models": {"m": {"1.0": {"batchSize": 1}}}}', "needs a marName"),
        ('{"models": {"m": {"1.0": {"marName": "../x.mar"}}}}', "needs a marName"),
        ('{"models": {"../m": {"1.0": {"marName": "m.mar"}}}}', "model name"),
    ],
)
def test_a_bad_model_snapshot_is_refused(tmp_path: Path, snapshot: str, problem: str) -> None:
    file = tmp_path / "config.properties"
    file.write_text(f"model_snapshot={snapshot}\n")
    with pytest.raises(InvalidInput, match=problem):
        StoreConfig.read(file, tmp_path)

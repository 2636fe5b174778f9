"""Hostile `.mar` archives in a real native-runtime gateway (`GATEWAY_BACKEND=torchserve-native`):
a model name that climbs out of the extraction folder, a zip bomb, an archive of too many files,
a manifest with the wrong types and a member path with `..`. Each leaves its model not ready
with a reason that says what is wrong, writes nothing outside the scratch folder and at most
the limit inside it, while a good archive beside them serves."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.probes import repository_index
from tests.servers import GatewayProcess, gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1024 * 1024
TOKEN = "manage-archives"
LIMIT_BYTES = 32 * MB
LIMIT_MEMBERS = 100
HANDLER = "def handle(data, context):\n    return None if data is None else ['ok' for _ in data]\n"


def write_mar(path: Path, model: dict[str, Any], members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": model}))
        archive.writestr("h.py", HANDLER)
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return path


def bomb(path: Path, inflated: int) -> Path:
    """A small archive with one member of `inflated` zeros (deflate: ~1000:1)."""
    write_mar(path, {"modelName": "bomb", "modelVersion": "1.0", "handler": "h.py"})
    zeros = bytes(MB)
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("weights.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(inflated // MB):
            member.write(zeros)
    return path


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@dataclass
class Stack:
    server: GatewayProcess
    tmp: Path
    escape_target: Path

    def index(self) -> dict[str, dict[str, str]]:
        return repository_index(self.server.url, TOKEN)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hostile-archives")
    store = root / "store"
    store.mkdir()
    model = {"modelVersion": "1.0", "handler": "h.py"}
    write_mar(store / "good.mar", {**model, "modelName": "good"})
    # The extraction folder is <TMPDIR>/gateway-mar-*/<modelName>/<digest>: three `..` climb to
    # the parent of TMPDIR's parent.
    write_mar(store / "escape.mar", {**model, "modelName": "../../../outside"})
    bomb(store / "bomb.mar", 8 * LIMIT_BYTES)
    files = {f"f{index}.txt": b"x" for index in range(LIMIT_MEMBERS + 10)}
    write_mar(store / "many.mar", {**model, "modelName": "many"}, files)
    write_mar(
        store / "types.mar",
        {"modelName": "types", "modelVersion": {"x": 1}, "handler": "h.py", "configFile": 5},
    )
    write_mar(store / "climb.mar", {**model, "modelName": "climb"}, {"../../climbed.py": b"x"})
    tmp = root / "a" / "b" / "tmp"
    tmp.mkdir(parents=True)
    env = {
        "GATEWAY_BACKEND": "torchserve-native",
        "GATEWAY_MANAGEMENT_TOKEN": TOKEN,
        "GATEWAY_ARCHIVE_MAX_BYTES": str(LIMIT_BYTES),
        "GATEWAY_ARCHIVE_MAX_MEMBERS": str(LIMIT_MEMBERS),
        "TMPDIR": str(tmp),
    }
    with gateway(store, root, env=env, timeout_s=180) as server:
        yield Stack(server, tmp, root / "a" / "outside")


def test_the_good_archive_serves_beside_the_hostile_ones(stack: Stack) -> None:
    assert stack.index()["good"]["state"] == "READY"
    answer = httpx.post(f"{stack.server.url}/predictions/good", content=b"{}", timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_model_name_that_climbs_out_is_refused(stack: Stack) -> None:
    entry = stack.index()["escape"]
    assert entry["state"] != "READY"
    assert "modelName" in entry["reason"], entry
    assert not stack.escape_target.exists()
    outside_tmp = [
        p for p in (stack.tmp.parent.parent).rglob("*") if not p.is_relative_to(stack.tmp)
    ]
    assert outside_tmp == [stack.tmp.parent], outside_tmp
    answer = httpx.post(f"{stack.server.url}/predictions/escape", content=b"{}", timeout=10)
    assert answer.status_code == 503
    assert "modelName" in answer.text, answer.text


def test_a_zip_bomb_is_refused_within_the_limit(stack: Stack) -> None:
    entry = stack.index()["bomb"]
    assert entry["state"] != "READY"
    assert "GATEWAY_ARCHIVE_MAX_BYTES" in entry["reason"], entry
    scratch = folder_bytes(stack.tmp)
    print(f"scratch folder after the bomb ({8 * LIMIT_BYTES // MB} MB inflated): {scratch} bytes")
    assert scratch < LIMIT_BYTES


def test_an_archive_of_too_many_files_is_refused(stack: Stack) -> None:
    entry = stack.index()["many"]
    assert entry["state"] != "READY"
    assert "GATEWAY_ARCHIVE_MAX_MEMBERS" in entry["reason"], entry


def test_a_manifest_with_wrong_types_says_what_is_wrong(stack: Stack) -> None:
    entry = stack.index()["types"]
    assert entry["state"] != "READY"
    assert "model.modelVersion" in entry["reason"], entry
    assert "model.configFile" in entry["reason"], entry
    assert "TypeError" not in entry["reason"]


def test_a_member_that_climbs_out_is_refused(stack: Stack) -> None:
    entry = stack.index()["climb"]
    assert entry["state"] != "READY"
    assert "escapes" in entry["reason"], entry
    assert not any(path.name == "climbed.py" for path in stack.tmp.parent.parent.parent.rglob("*"))
    assert os.listdir(stack.tmp)  # the scratch folder was used

"""The shared memory registry on real POSIX shared memory objects (`/dev/shm`): keys are never
paths, every slice is checked before it is touched, regions are unmapped on unregister."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.codecs import v2
from service.errors import AlreadyExists, InvalidInput, NotFound, NotSupported
from service.shared_memory import SHM_DIR, SharedMemory, object_name

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")

SIZE = 64 * 1024


@pytest.fixture
def key() -> Iterator[str]:
    """A fresh shared memory object of SIZE bytes, removed afterwards."""
    name = f"gateway-test-{uuid.uuid4().hex}"
    path = SHM_DIR / name
    with path.open("wb") as sink:
        sink.truncate(SIZE)
    yield f"/{name}"
    path.unlink(missing_ok=True)


@pytest.fixture
def registry() -> Iterator[SharedMemory]:
    regions = SharedMemory(enabled=True, max_regions=4)
    yield regions
    regions.close()


def write(key: str, offset: int, data: bytes) -> None:
    with (SHM_DIR / key.lstrip("/")).open("r+b") as sink:
        sink.seek(offset)
        sink.write(data)


def read(key: str, offset: int, size: int) -> bytes:
    with (SHM_DIR / key.lstrip("/")).open("rb") as source:
        source.seek(offset)
        return source.read(size)


@pytest.mark.parametrize(
    "bad",
    ["", "/", "//x", "/a/b", "a/b", "..", "/..", ".", "/.hidden", "../etc/passwd", "/x\x00y"],
)
def test_keys_that_are_not_plain_shm_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="invalid shared memory key"):
        object_name(bad)


def test_a_link_in_dev_shm_is_not_followed(registry: SharedMemory, tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 4096)
    link = SHM_DIR / f"gateway-test-{uuid.uuid4().hex}"
    link.symlink_to(target)
    try:
        with pytest.raises(InvalidInput, match="Unable to open shared memory region"):
            registry.register("linked", f"/{link.name}", 0, 16)
    finally:
        link.unlink()
    assert registry.status(None) == []


def test_register_status_unregister(registry: SharedMemory, key: str) -> None:
    registry.register("in", key, 4096 + 8, 1024)  # an offset that is not page aligned
    [status] = registry.status("in")
    assert status.as_dict() == {"name": "in", "key": key, "offset": 4104, "byte_size": 1024}
    with pytest.raises(AlreadyExists, match="already in manager"):
        registry.register("in", key, 0, 16)
    registry.unregister("in")
    registry.unregister("in")  # not registered any more: no error, as in Triton
    with pytest.raises(NotFound, match="Unable to find system shared memory region: 'in'"):
        registry.status("in")


def test_a_region_past_the_object_or_empty_is_refused(registry: SharedMemory, key: str) -> None:
    with pytest.raises(InvalidInput, match="past the end"):
        registry.register("big", key, 0, SIZE + 1)
    with pytest.raises(InvalidInput, match="past the end"):
        registry.register("far", key, SIZE, 1)
    with pytest.raises(InvalidInput, match="byte_size must be > 0"):
        registry.register("empty", key, 0, 0)
    with pytest.raises(InvalidInput, match="Unable to open"):
        registry.register("missing", "/gateway-test-no-such-object", 0, 16)
    assert registry.status(None) == []


def test_the_number_of_regions_is_bounded(registry: SharedMemory, key: str) -> None:
    for index in range(4):
        registry.register(f"r{index}", key, 0, 16)
    with pytest.raises(InvalidInput, match="unregister one first"):
        registry.register("r4", key, 0, 16)
    registry.unregister(None)
    assert registry.status(None) == []


def test_slices_are_checked_before_reading(registry: SharedMemory, key: str) -> None:
    values = np.arange(16, dtype=np.float32)
    write(key, 4096 + 100, values.tobytes())
    registry.register("in", key, 4096, 1024)
    place = registry.slice(
        {"shared_memory_region": "in", "shared_memory_byte_size": 64, "shared_memory_offset": 100},
        "input",
        "x",
    )
    assert place is not None
    decoded = v2.shared_tensor("x", "FP32", [4, 4], place)
    np.testing.assert_array_equal(decoded, values.reshape(4, 4))
    registry.unregister("in")  # the decoded copy holds nothing of the mapping
    np.testing.assert_array_equal(decoded, values.reshape(4, 4))

    registry.register("in", key, 4096, 1024)
    for parameters, message in (
        ({"shared_memory_region": "in", "shared_memory_byte_size": 4, "shared_memory_offset": 1024}, "Invalid offset for"),
        ({"shared_memory_region": "in", "shared_memory_byte_size": 1025}, "Invalid offset \\+ byte size"),
        ({"shared_memory_region": "in", "shared_memory_byte_size": 8, "shared_memory_offset": 1020}, "Invalid offset \\+ byte size"),
        ({"shared_memory_region": "nope", "shared_memory_byte_size": 4}, "Unable to find shared memory region: 'nope'"),
        ({"shared_memory_region": "in"}, "needs shared_memory_byte_size"),
        ({"shared_memory_byte_size": 4}, "need shared_memory_region"),
        ({"shared_memory_region": "in", "shared_memory_byte_size": -1}, "whole number"),
    ):  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            registry.slice(parameters, "input", "x")
    assert registry.slice({"binary_data_size": 4}, "input", "x") is None


def test_a_shrunk_object_is_an_error_not_a_crash(registry: SharedMemory, key: str) -> None:
    registry.register("in", key, 0, SIZE)
    place = registry.slice(
        {"shared_memory_region": "in", "shared_memory_byte_size": 64, "shared_memory_offset": SIZE - 64},
        "input", "x",
    )  # fmt: skip
    assert place is not None
    os.truncate(SHM_DIR / key.lstrip("/"), 4096)
    with pytest.raises(InvalidInput, match="shrank since it was registered"):
        v2.shared_tensor("x", "FP32", [16], place)
    with pytest.raises(InvalidInput, match="shrank"):
        place.write(b"\x00" * 64)


def test_bytes_use_the_length_prefixed_layout(registry: SharedMemory, key: str) -> None:
    items = [b"a\x00b", b"", "é".encode()]
    blob = v2.raw_bytes(np.array(items, dtype=object))
    write(key, 0, blob)
    registry.register("text", key, 0, 256)
    inp = registry.slice(
        {"shared_memory_region": "text", "shared_memory_byte_size": len(blob)}, "input", "i"
    )
    assert inp is not None
    assert v2.shared_tensor("s", "BYTES", [3], inp).tolist() == items
    out = registry.slice(
        {"shared_memory_region": "text", "shared_memory_byte_size": 100, "shared_memory_offset": 100},
        "output",
        "o",
    )  # fmt: skip
    assert out is not None
    answer = v2.shared_output(v2.RequestedOutput("y", False, 0, out), np.array(items, dtype=object))
    assert answer == {"shared_memory_region": "text", "shared_memory_byte_size": len(blob)}
    assert read(key, 100, len(blob)) == blob
    small = registry.slice(
        {"shared_memory_region": "text", "shared_memory_byte_size": 4}, "output", "o"
    )
    assert small is not None
    with pytest.raises(
        InvalidInput, match=f"the output needs {len(blob)} bytes, the request gave 4"
    ):
        small.write(blob)


def test_unregister_while_a_view_is_held_unmaps_later(registry: SharedMemory, key: str) -> None:
    registry.register("in", key, 0, 64)
    place = registry.slice(
        {"shared_memory_region": "in", "shared_memory_byte_size": 8}, "input", "i"
    )
    assert place is not None
    with place.view() as view:
        registry.unregister("in")
        assert bytes(view) == b"\x00" * 8  # still mapped while viewed
    assert registry.status(None) == []
    with pytest.raises(InvalidInput, match="was unregistered"):
        place.write(b"x")
    registry.unregister(None)  # retries the deferred unmap
    assert place.region.close()


def test_disabled_registry_says_so(key: str) -> None:
    registry = SharedMemory(enabled=False, max_regions=4)
    assert registry.extensions == ()
    with pytest.raises(NotSupported, match="GATEWAY_SHARED_MEMORY=true"):
        registry.register("in", key, 0, 16)
    with pytest.raises(InvalidInput, match="disabled"):
        registry.slice({"shared_memory_region": "in", "shared_memory_byte_size": 4}, "input", "i")


def test_close_unmaps_every_region(key: str) -> None:
    """What the data plane calls at shutdown: this process's maps no longer list the object."""
    registry = SharedMemory(enabled=True, max_regions=4)
    registry.register("a", key, 0, 4096)
    registry.register("b", key, 4096, 4096)
    maps = Path("/proc/self/maps")
    assert maps.read_text().count(key.lstrip("/")) == 2
    registry.close()
    assert key.lstrip("/") not in maps.read_text()
    assert registry.status(None) == []

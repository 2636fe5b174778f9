"""System shared memory (Triton's `system_shared_memory` extension): the regions clients
register, and the slices of them that requests name for their inputs and outputs.

A co-located client creates a POSIX shared memory object (`shm_open("/name")`, what
`tritonclient.utils.shared_memory` does), registers a *region* of it under a name
(`key`, `offset`, `byte_size`), then names that region in a tensor's parameters
(`shared_memory_region`, `shared_memory_byte_size`, `shared_memory_offset`) instead of sending
the tensor's bytes. The registry belongs to the data plane; the codecs only read and write
slices through it:

- a key is a POSIX shm name (`/name` or `name`: one optional leading slash, then letters,
  digits, `.`, `_`, `-`, not starting with a dot) opened under `/dev/shm` without following
  links, and only a regular file is mapped: a key is never a path;
- every slice is checked against its region (offset inside it, offset + size not past its
  end) before anything is read or written, and against the object's current size, so a
  client that shrank its object after registering gets an error instead of the server a
  SIGBUS (a client that shrinks it *during* the copy still can: share memory only with
  processes you trust);
- an input slice is copied out at once and decoded by the same code as binary tensor data,
  so nothing a model computes on stays mapped, and an output is written after it is encoded;
- a region is unmapped on unregister and when the server closes.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import AlreadyExists, InvalidInput, NotFound, NotSupported

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
"""Where Linux keeps POSIX shared memory objects (what `shm_open` opens)."""
EXTENSION = "system_shared_memory"
"""The extension's name in the server metadata, as Triton spells it."""
REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"
PARAMETERS = (REGION, BYTE_SIZE, OFFSET)
"""The tensor parameters that place a tensor in a registered region."""
_KEY = re.compile(r"/?([A-Za-z0-9_-][A-Za-z0-9._-]{0,254})")
CUDA_UNSUPPORTED = "CUDA shared memory is not supported on this server"


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """One registered region as the status verb reports it (Triton's fields)."""

    name: str
    key: str
    offset: int
    byte_size: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


def _whole_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a whole number of bytes >= 0")
    return value


def object_name(key: str) -> str:
    """A registered key -> the shared memory object's name under `/dev/shm`; anything that is
    not a plain POSIX shm name (a path, `..`, a second slash) is refused.

    >>> object_name("/input_data")
    'input_data'
    """
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise InvalidInput(
            f"invalid shared memory key {key!r}: use a POSIX shm name such as '/input_data' "
            "(one optional leading slash, then letters, digits, '.', '_' or '-')"
        )
    return match.group(1)


class Region:
    """One registered region: a read-write mapping of `byte_size` bytes at `offset` of the
    object named by `key`. The descriptor stays open so each access can check the object
    still covers the region."""

    def __init__(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.status = RegionStatus(name, key, offset, byte_size)
        folder = os.open(SHM_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._fd = os.open(
                object_name(key),
                os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                dir_fd=folder,
            )
        except OSError as error:
            raise InvalidInput(
                f"Unable to open shared memory region: '{key}' ({error.strerror})"
            ) from None
        finally:
            os.close(folder)
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"'{key}' is not a shared memory object")
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"failed to register shared memory region '{name}': offset {offset} + "
                    f"byte_size {byte_size} is past the end of '{key}' ({info.st_size} bytes)"
                )
            # mmap's offset must be page aligned: map from the page the region starts in.
            self._skip = offset % mmap.ALLOCATIONGRANULARITY
            self._map = mmap.mmap(
                self._fd,
                self._skip + byte_size,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=offset - self._skip,
            )
        except BaseException:
            os.close(self._fd)
            raise
        self.closed = False

    @property
    def name(self) -> str:
        return self.status.name

    def check(self, offset: int, byte_size: int) -> int:
        """The mapping's index of the slice's first byte, once the slice is known to lie in
        the region and in the object as it is now."""
        if self.closed:
            raise InvalidInput(f"shared memory region '{self.name}' was unregistered")
        size = self.status.byte_size
        if offset >= size:
            raise InvalidInput(
                f"Invalid offset for shared memory region: '{self.name}' "
                f"(offset {offset}, the region holds {size} bytes)"
            )
        if offset + byte_size > size:
            raise InvalidInput(
                f"Invalid offset + byte size for shared memory region: '{self.name}' "
                f"({offset} + {byte_size} bytes, the region holds {size})"
            )
        if os.fstat(self._fd).st_size < self.status.offset + offset + byte_size:
            raise InvalidInput(
                f"shared memory region '{self.name}': its object '{self.status.key}' "
                "shrank since it was registered"
            )
        return self._skip + offset

    @contextlib.contextmanager
    def view(self, offset: int, byte_size: int) -> Iterator[memoryview]:
        """The slice's bytes, checked, as a view released on exit: copy what you keep."""
        start = self.check(offset, byte_size)
        with memoryview(self._map)[start : start + byte_size] as view:
            yield view

    def write(self, offset: int, byte_size: int, data: bytes) -> None:
        """Put `data` at `offset`; it must fit the `byte_size` the request gave."""
        if len(data) > byte_size:
            raise InvalidInput(
                f"shared memory region '{self.name}': the output needs {len(data)} bytes, "
                f"the request gave {byte_size}"
            )
        start = self.check(offset, len(data))
        self._map[start : start + len(data)] = data

    def close(self) -> bool:
        """Unmap the region and close its object; False while a view of it is still held
        (then try again later)."""
        self.closed = True
        if self._fd < 0:
            return True
        try:
            self._map.close()
        except BufferError:
            return False
        os.close(self._fd)
        self._fd = -1
        return True


@dataclass(frozen=True, slots=True)
class Slice:
    """Where a request puts one tensor: `byte_size` bytes at `offset` of a registered
    region (the region held, so unregistering it meanwhile fails this request cleanly)."""

    region: Region
    offset: int
    byte_size: int

    @contextlib.contextmanager
    def view(self) -> Iterator[memoryview]:
        with self.region.view(self.offset, self.byte_size) as view:
            yield view

    def write(self, data: bytes) -> None:
        self.region.write(self.offset, self.byte_size, data)


class SharedMemory:
    """The registry: region name -> `Region`, bounded, one per server process."""

    def __init__(self, enabled: bool, max_regions: int) -> None:
        self.enabled = enabled
        self.max_regions = max_regions
        self._regions: dict[str, Region] = {}
        self._retired: list[Region] = []
        """Unregistered regions a view still held (closed at the next chance)."""

    @property
    def extensions(self) -> tuple[str, ...]:
        return (EXTENSION,) if self.enabled else ()

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise NotSupported(
                "system shared memory is disabled on this server "
                "(start it with GATEWAY_SHARED_MEMORY=true)"
            )

    def register(self, name: str, key: str, offset: Any, byte_size: Any) -> None:
        self._check_enabled()
        offset = _whole_number(offset, "offset")
        if _whole_number(byte_size, "byte_size") == 0:
            raise InvalidInput(f"shared memory region '{name}': byte_size must be > 0")
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        if name in self._regions:
            raise AlreadyExists(f"shared memory region '{name}' already in manager")
        if len(self._regions) >= self.max_regions:
            raise InvalidInput(
                f"{len(self._regions)} shared memory regions are registered, the most this "
                "server holds; unregister one first"
            )
        self._regions[name] = Region(name, key, offset, byte_size)
        log.info("shared memory region registered", extra={"region": name, "key": key})

    def unregister(self, name: str | None) -> None:
        """Unregister one region (a name not registered is no error, as in Triton) or, with
        no name, every region."""
        self._check_enabled()
        names = list(self._regions) if not name else [name] if name in self._regions else []
        for each in names:
            self._retire(self._regions.pop(each))
        self._retired = [region for region in self._retired if not region.close()]

    def _retire(self, region: Region) -> None:
        if not region.close():
            self._retired.append(region)

    def status(self, name: str | None) -> list[RegionStatus]:
        if not name:
            return [region.status for region in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.status]

    def slice(self, parameters: Mapping[str, Any], kind: str, tensor: str) -> Slice | None:
        """The slice a tensor's parameters name, checked against its region; None when they
        name none. `kind` and `tensor` ('input', 'x') only name it in errors."""
        if REGION not in parameters:
            if BYTE_SIZE in parameters or OFFSET in parameters:
                raise InvalidInput(f"{kind} {tensor!r}: {BYTE_SIZE} and {OFFSET} need {REGION}")
            return None
        what = f"{kind} {tensor!r}"
        name = parameters[REGION]
        if not isinstance(name, str):
            raise InvalidInput(f"{what}: {REGION} must be a region's name")
        if BYTE_SIZE not in parameters:
            raise InvalidInput(f"{what}: {REGION} needs {BYTE_SIZE}")
        byte_size = _whole_number(parameters[BYTE_SIZE], f"{what}: {BYTE_SIZE}")
        offset = _whole_number(parameters.get(OFFSET, 0), f"{what}: {OFFSET}")
        if not self.enabled:
            raise InvalidInput(f"{what}: system shared memory is disabled on this server")
        region = self._regions.get(name)
        if region is None:
            raise InvalidInput(f"Unable to find shared memory region: '{name}'")
        region.check(offset, byte_size)
        return Slice(region, offset, byte_size)

    def close(self) -> None:
        """Unmap every region (server shutdown)."""
        for region in [*self._regions.values(), *self._retired]:
            if not region.close():
                log.warning("shared memory region %r still in use at shutdown", region.name)
        self._regions.clear()
        self._retired.clear()


NO_SHARED_MEMORY = SharedMemory(enabled=False, max_regions=1)
"""For codecs called without a server's registry: a tensor placed in shared memory is refused."""

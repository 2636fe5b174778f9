"""The loader interface: one per kind of model a store can hold."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from service.models.served import ServedModel


class ModelLoader(ABC):
    """Finds the models of one kind in a store and loads one version of them."""

    parallel_start = False
    """Whether the repository may load every model of this kind at once at start-up (archive
    workers spend their start importing torch in their own processes)."""

    @property
    @abstractmethod
    def root(self) -> Path:
        """The folder this loader reads."""

    @abstractmethod
    def discover(self) -> dict[str, list[str]]:
        """Model name -> its versions on disk (strings, in `version_key` order)."""

    @abstractmethod
    async def load(self, name: str, version: str) -> ServedModel:
        """Load and warm up one version; raise (a `ServingError` says why) when it cannot
        serve. Whatever was started is released before raising."""

    @abstractmethod
    def source(self, name: str) -> Path:
        """The folder or file a model is read from (its changes are what polling watches)."""

    def fingerprint(self, name: str) -> tuple[tuple[str, int, int], ...]:
        """What changes when a model's files change: every file's name, size and mtime."""
        return fingerprint(self.source(name))

    def close(self) -> None:
        """Release what the loader holds (scratch folders)."""


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file under `path` (or `path` itself): relative name, size, modification time."""
    if path.is_file():
        stat = path.stat()
        return ((path.name, stat.st_size, stat.st_mtime_ns),)
    if not path.is_dir():
        return ()
    entries = []
    for child in sorted(path.rglob("*")):
        if child.is_file():
            stat = child.stat()
            entries.append((str(child.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def version_key(version: str) -> tuple[int, ...]:
    """The one order of versions: numeric, part by part (`1` < `2` < `10`; `1.0` < `1.10`;
    TorchServe archives carry dotted versions). A part that is not a number sorts first."""
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))

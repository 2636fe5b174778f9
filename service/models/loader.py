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

    def close(self) -> None:
        """Release what the loader holds (scratch folders)."""


def version_key(version: str) -> tuple[int, ...]:
    """The one order of versions: numeric, part by part (`1` < `2` < `10`; `1.0` < `1.10`;
    TorchServe archives carry dotted versions). A part that is not a number sorts first."""
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))

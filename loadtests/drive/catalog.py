"""The models a benchmark serves: manifest, files, and the request bodies every system receives."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from loadtests.drive.payloads import (
    Feed,
    native_payload,
    sample_feed,
    v2_binary,
    v2_grpc,
    v2_json,
)
from service.manifest import MANIFEST_FILE, Manifest

DEFAULT_MODELS = ("iris", "digits", "minilm", "resnet18", "lstm")


class ModelMissing(LookupError):
    """The model store has no servable version of this model."""


@dataclass(frozen=True)
class BenchModel:
    name: str
    version_dir: Path
    manifest: Manifest

    @property
    def max_batch_size(self) -> int:
        return self.manifest.batching.max_batch_size

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.manifest.outputs]

    @cached_property
    def feed(self) -> Feed:
        """One row: the same tensors go to every system."""
        return sample_feed(self.manifest, self.version_dir, rows=1)

    @cached_property
    def v2_json(self) -> bytes:
        return v2_json(self.feed)

    @cached_property
    def v2_binary(self) -> tuple[bytes, int]:
        return v2_binary(self.feed, self.output_names)

    @cached_property
    def v2_grpc(self) -> bytes:
        """The serialized gRPC ModelInferRequest (raw_input_contents), same tensors."""
        return v2_grpc(self.name, self.feed, self.output_names)

    @cached_property
    def native(self) -> tuple[bytes, str]:
        """The TorchServe-style body (image file, text, JSON features) and its content type."""
        return native_payload(self.manifest, self.version_dir)


def latest_version(store: Path, name: str) -> Path:
    versions = [
        p for p in (store / name).glob("*") if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
    ]
    if not versions:
        raise ModelMissing(f"{name}: no {store / name}/<version>/{MANIFEST_FILE}")
    return max(versions, key=lambda p: int(p.name))


def load_model(store: Path, name: str, artifact: str = "onnx") -> BenchModel:
    """The newest version of `name`, which must have the `artifact` file ("onnx",
    "torchscript" or "pt2")."""
    directory = latest_version(store, name)
    manifest = Manifest.read(directory)
    file = getattr(manifest.artifacts, artifact)
    if file is None or not (directory / file).is_file():
        kind = "ONNX" if artifact == "onnx" else artifact
        raise ModelMissing(f"{name}: version {directory.name} has no {kind} file")
    return BenchModel(name, directory, manifest)

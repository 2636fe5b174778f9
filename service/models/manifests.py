"""Our own model store: `<store>/<model>/<version>/model.json` (`service.manifest`) beside the
exported artifacts; the backend the settings ask for computes it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from service.backends.base import Backend
from service.errors import InvalidInput
from service.manifest import MANIFEST_FILE, Manifest
from service.models.loader import ModelLoader, version_key
from service.models.tensor import ManifestModel, ServingContext, start_manifest_model
from service.processing import processor_for
from service.settings import Settings

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class ManifestLoader(ModelLoader):
    def __init__(self, context: ServingContext) -> None:
        self.context = context
        self._root = context.settings.model_store.resolve()

    @property
    def root(self) -> Path:
        return self._root

    def source(self, name: str) -> Path:
        return self.root / name

    def discover(self) -> dict[str, list[str]]:
        """Valid model names with integer version folders holding a `model.json`."""
        found: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return found
        wanted = self.context.settings.models
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not MODEL_NAME.match(model_dir.name):
                continue
            if wanted and model_dir.name not in wanted:
                continue
            versions = [
                child.name
                for child in model_dir.iterdir()
                if child.is_dir() and child.name.isdigit() and (child / MANIFEST_FILE).is_file()
            ]
            if versions:
                found[model_dir.name] = sorted(versions, key=version_key)
        return found

    async def load(self, name: str, version: str) -> ManifestModel:
        path = self.root / name / version
        manifest = read_manifest(path, name, version)
        processor = processor_for(manifest, path, self.context.limits)
        backend = build_backend(manifest, path, self.context.settings)
        try:
            await backend.load()
            return await start_manifest_model(
                self.context, name, version, manifest, processor, backend
            )
        except BaseException:
            await backend.close()
            raise


def read_manifest(path: Path, name: str, version: str) -> Manifest:
    """The version folder's `model.json`, which must name this model and version."""
    try:
        manifest = Manifest.read(path)
    except ValidationError as error:
        raise InvalidInput(f"invalid manifest: {_describe(error)}") from None
    except ValueError as error:
        raise InvalidInput(f"invalid manifest: {error}") from None
    if manifest.name != name or str(manifest.version) != version:
        raise InvalidInput(
            f"manifest says {manifest.name} v{manifest.version}, found at {name}/{version}"
        )
    return manifest


def build_backend(manifest: Manifest, path: Path, settings: Settings) -> Backend:
    """The backend the settings (or the manifest's artifacts) call for."""
    kind = settings.backend or "onnxruntime"
    artifacts = manifest.artifacts
    if kind == "onnxruntime":
        from service.backends.onnxruntime import OnnxRuntimeBackend

        if artifacts.onnx is None:
            raise InvalidInput(f"{manifest.name} has no ONNX artifact")
        return OnnxRuntimeBackend(
            manifest,
            path / artifacts.onnx,
            instances=settings.instances,
            providers=settings.providers,
            intra_op_threads=settings.intra_op_threads,
            spinning=settings.spinning(manifest.name),
            graph_optimization=settings.graph_optimization,
        )
    if kind in ("torchscript", "pt2"):
        from service.backends.torchscript import Pt2Backend, TorchScriptBackend

        file = artifacts.torchscript if kind == "torchscript" else artifacts.pt2
        if file is None:
            raise InvalidInput(f"{manifest.name} has no {kind} artifact")
        cls = TorchScriptBackend if kind == "torchscript" else Pt2Backend
        return cls(
            manifest,
            path / file,
            instances=settings.instances,
            device=settings.device,
            fp16=settings.fp16,
            threads=settings.intra_op_threads,
        )
    if kind == "torchserve":
        from service.backends.torchserve import TorchServeBackend

        return TorchServeBackend(manifest, settings)
    raise InvalidInput(f"unknown backend {kind!r}")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "model.json"
    return f"{where}: {first['msg']}"

"""The loader of Triton model repositories and bare model files, for the folders of a store
that hold no `model.json` versions (those are `ManifestLoader`'s).

What it claims:
- every folder with a valid model name and no `model.json` version: a Triton model folder
  (`[config.pbtxt]`, numeric version folders). A folder it cannot serve still becomes a model
  whose load fails with the reason (in the log and the repository index): never skipped;
- every model file (`.onnx`, `.pt`, `.pt2`) at the store's top, or the store itself when it is
  one file: a model of one version, named by `model_name` or the file's stem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.backends.base import Backend
from service.errors import InvalidInput, ModelConfigError
from service.manifest import MANIFEST_FILE
from service.models.loader import ModelLoader, version_key
from service.models.loader import fingerprint as fingerprint_of
from service.models.manifests import MODEL_NAME
from service.models.tensor import BatchingPlan, ServingContext, build_batcher, started
from service.triton.layout import PLATFORMS, model_files
from service.triton.model import TritonModel, TritonSignature
from service.triton.processor import TritonProcessor
from service.triton.resolve import ResolvedModel, ServedVersion, resolve_model
from service.triton.sequence_model import (
    SequenceModel,
    TritonStepFeeds,
    build_sequence_batcher,
)
from service.triton.versions import version_folders, versions_to_serve
from service.triton.view import ServingConfig

log = logging.getLogger(__name__)

MODEL_SUFFIXES = {Path(platform.filename).suffix for platform in PLATFORMS}


@dataclass(frozen=True, slots=True)
class _Cached:
    fingerprint: tuple[tuple[str, int, int], ...]
    resolved: ResolvedModel


class TritonLoader(ModelLoader):
    def __init__(self, context: ServingContext) -> None:
        self.context = context
        self.store = context.settings.model_store.resolve()
        self._resolved: dict[str, _Cached] = {}

    @property
    def root(self) -> Path:
        return self.store if self.store.is_dir() else self.store.parent

    # -- discovery ----------------------------------------------------------------------------

    def paths(self) -> dict[str, Path]:
        """Model name -> its folder or bare file."""
        if self.store.is_file():
            return {self._bare_name(self.store, alone=True): self.store}
        if not self.store.is_dir():
            return {}
        found: dict[str, Path] = {}
        files = sorted(
            child
            for child in self.store.iterdir()
            if child.is_file() and child.suffix in MODEL_SUFFIXES
        )
        for file in files:
            found[self._bare_name(file, alone=len(files) == 1)] = file
        for child in sorted(self.store.iterdir()):
            if not child.is_dir() or not MODEL_NAME.match(child.name) or _holds_manifests(child):
                continue
            found.setdefault(child.name, child)
        wanted = self.context.settings.models
        return {name: path for name, path in found.items() if not wanted or name in wanted}

    def _bare_name(self, file: Path, *, alone: bool) -> str:
        name = self.context.settings.model_name
        return name if name and alone else file.stem

    def source(self, name: str) -> Path:
        path = self.paths().get(name)
        if path is None:
            raise InvalidInput(f"no model {name!r} in the model store")
        return path

    def discover(self) -> dict[str, list[str]]:
        return {name: self._versions(path) for name, path in self.paths().items()}

    def _versions(self, path: Path) -> list[str]:
        """The versions the policy serves, read cheaply (config.pbtxt, folder names); when
        that fails, the folder's versions (or "1"), so that loading reports why."""
        try:
            files = model_files(path)
            chosen = versions_to_serve(files.config.version_policy, files.versions)
        except ModelConfigError:
            folders = list(version_folders(path)) if path.is_dir() else []
            return sorted(folders, key=version_key) or ["1"]
        return sorted(chosen, key=version_key)

    # -- loading ------------------------------------------------------------------------------

    async def load(self, name: str, version: str) -> TritonModel:
        path = self.paths().get(name)
        if path is None:
            raise InvalidInput(f"no model {name!r} in the model store")
        resolved = self.resolve(name, path)
        served = {v.version: v for v in resolved.versions}.get(version)
        if served is None:
            raise ModelConfigError(f"version_policy: version {version} is not served")
        serving = resolved.serving
        backend = self._backend(serving, served)
        try:
            await backend.load()
            model = self._model(resolved, version, backend)
            await started(model)
        except BaseException:
            await backend.close()
            raise
        return model

    def _model(self, resolved: ResolvedModel, version: str, backend: Backend) -> TritonModel:
        """The kind the configuration asks for: a sequence model with `sequence_batching`,
        else a model behind the dynamic batcher."""
        serving, name = resolved.serving, resolved.name
        processor = TritonProcessor(serving, self.context.limits)
        inflight = self.context.metrics.inflight.labels(name, version)
        if serving.sequence_batching is not None:
            steps = TritonStepFeeds(serving)
            batcher = build_sequence_batcher(self.context, serving, version, backend, steps)
            return SequenceModel(resolved, version, processor, backend, batcher, steps, inflight)
        plan = _plan(serving, self.context)
        return TritonModel(
            resolved,
            version,
            processor,
            backend,
            build_batcher(self.context, name, version, backend, plan),
            inflight,
        )

    def resolve(self, name: str, path: Path) -> ResolvedModel:
        """The completed configuration, resolved once per change of the model's files."""
        fingerprint = fingerprint_of(path)
        cached = self._resolved.get(name)
        if cached is None or cached.fingerprint != fingerprint:
            gpus = (0,) if self.context.settings.device == "cuda" else ()
            resolved = resolve_model(path, name=name, gpus=gpus)
            for missing in resolved.missing_versions:
                log.error("model %s: version_policy names version %s, not found", name, missing)
            cached = _Cached(fingerprint, resolved)
            self._resolved[name] = cached
        return cached.resolved

    def _backend(self, serving: ServingConfig, served: ServedVersion) -> Backend:
        settings = self.context.settings
        signature = TritonSignature.of(serving, served.version)
        groups = serving.instance_groups
        instances = max(1, sum(group.count * max(1, len(group.gpus)) for group in groups))
        kind: Literal["CPU", "GPU"] = (
            "GPU" if any(group.kind == "GPU" for group in groups) else "CPU"
        )
        options = serving.runtime_options
        threads = options.intra_op_threads or settings.intra_op_threads
        if serving.runtime == "onnxruntime":
            from service.backends.onnxruntime import OnnxRuntimeBackend

            return OnnxRuntimeBackend(
                signature,
                served.model_file,
                instances=instances,
                providers=list(options.providers(kind)),
                intra_op_threads=threads,
                graph_optimization=options.graph_optimization,
                spinning=settings.spinning(serving.name),
            )
        from service.backends.torchscript import Pt2Backend, TorchScriptBackend

        cls = TorchScriptBackend if serving.runtime == "torchscript" else Pt2Backend
        return cls(
            signature,
            served.model_file,
            instances=instances,
            device="cuda" if kind == "GPU" else settings.device,
            fp16=settings.fp16,
            threads=threads,
        )


def _plan(serving: ServingConfig, context: ServingContext) -> BatchingPlan:
    """Triton's scheduling: with `dynamic_batching`, requests merge up to `max_batch_size`
    rows, waiting up to `max_queue_delay_microseconds`; without it (or without a batch
    dimension), each request runs alone, as sent."""
    settings = context.settings
    instances = max(
        1, sum(group.count * max(1, len(group.gpus)) for group in serving.instance_groups)
    )
    batching = serving.dynamic_batching
    max_batch = max(1, serving.max_batch_size)
    if batching is None or not serving.batching:
        return BatchingPlan(
            max_batch_size=max_batch,
            max_queue_size=max(settings.max_queue_size, 1),
            max_queue_delay_s=0.0,
            instances=instances,
            batched=False,
        )
    queue = batching.default_queue_policy.max_queue_size or settings.max_queue_size
    return BatchingPlan(
        max_batch_size=max_batch,
        max_queue_size=max(queue, max_batch),
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        instances=instances,
    )


def _holds_manifests(folder: Path) -> bool:
    return any((child / MANIFEST_FILE).is_file() for child in folder.iterdir() if child.is_dir())

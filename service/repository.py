"""The model repository: finds `<store>/<model>/<version>/model.json`, loads and warms each
version, and swaps versions in and out without dropping requests."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Gauge
from pydantic import ValidationError

from service.backends.base import Backend
from service.batcher import BatchTracer, DynamicBatcher
from service.compute import BatchRunner, InlinePolicy
from service.errors import InvalidInput, ModelNotReady, NotFound, ServingError
from service.feeds import Feed, rows_of
from service.input_limits import Limits
from service.manifest import MANIFEST_FILE, Manifest
from service.metrics import GatewayMetrics
from service.processing import Processor, processor_for, warmup_feed
from service.settings import Settings

if TYPE_CHECKING:
    from service.native.loader import ArchiveStore
    from service.native.serving import HandlerRoute

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
BACKEND_DOWN = "backend unavailable"
"""The reason of a loaded version whose backend failed its health probe (it flips back)."""


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A version that loaded and warmed up: everything a request needs, nothing optional."""

    name: str
    version: str
    manifest: Manifest
    processor: Processor
    backend: Backend
    batcher: DynamicBatcher[Feed, Feed] = field(repr=False)
    inflight: Gauge = field(repr=False)


@dataclass(eq=False)
class ModelVersion:
    """One version directory and its lifecycle; `loaded` is set once it has loaded."""

    name: str
    version: str
    path: Path
    state: State = State.LOADING
    reason: str = ""
    loaded: LoadedModel | None = None
    handler: HandlerRoute | None = None
    """A TorchServe archive's raw way in (`torchserve-native` backend only)."""

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def _check_ready(self) -> None:
        if self.state is not State.READY:
            detail = f": {self.reason}" if self.reason else ""
            raise ModelNotReady(
                f"model {self.name!r} version {self.version} is {self.state}{detail}"
            )

    def serving(self) -> LoadedModel:
        """The loaded model, or `ModelNotReady` saying why this version cannot serve."""
        self._check_ready()
        if self.loaded is None:
            if self.handler is not None:
                raise InvalidInput(
                    f"model {self.name!r} is a TorchServe archive without tensor declarations "
                    f"(no model.json): call /predictions/{self.name}"
                )
            raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")
        return self.loaded

    def handler_route(self) -> HandlerRoute:
        """The archive's handler workers, or why this version has none."""
        self._check_ready()
        if self.handler is None:
            raise InvalidInput(f"model {self.name!r} is not served by a TorchServe handler")
        return self.handler


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str

    @classmethod
    def of(cls, model: ModelVersion) -> IndexEntry:
        return cls(model.name, model.version, model.state.value, model.reason)


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
            allow_spinning=settings.intra_op_spinning_models.get(
                manifest.name, settings.intra_op_spinning
            ),
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


class ModelRepository:
    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, tracer: BatchTracer | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.root = settings.model_store.resolve()
        self.limits = Limits(
            max_image_pixels=settings.max_image_pixels,
            max_text_chars=settings.max_text_chars,
            max_bytes_elements=settings.max_bytes_elements,
        )
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self.archives: ArchiveStore | None = None
        if settings.backend == "torchserve-native":
            from service.native.loader import ArchiveStore

            self.archives = ArchiveStore(settings, metrics, tracer)
            self.root = self.archives.root
        self._lock = asyncio.Lock()
        self._probe: asyncio.Task[None] | None = None

    # -- lookup ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> dict[str, ModelVersion]:
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"unknown model {name!r}")
        return versions

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A version, or the highest version when none is named."""
        versions = self.versions(name)
        if version is None:
            ready = [v for v in versions.values() if v.ready]
            pool = ready or list(versions.values())
            return max(pool, key=lambda v: version_key(v.version))
        found = versions.get(version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version!r}")
        return found

    def ready(self, name: str, version: str | None = None) -> LoadedModel:
        return self.get(name, version).serving()

    def all_versions(self) -> list[ModelVersion]:
        return [v for versions in self._models.values() for v in versions.values()]

    def index(self) -> list[IndexEntry]:
        """Every loaded version, then every model on disk that is not loaded (`UNLOADED`)."""
        entries = [IndexEntry.of(model) for model in self.all_versions()]
        entries += [
            IndexEntry(name, version, "UNLOADED", "")
            for name, versions in self.discover().items()
            if name not in self._models
            for version in versions
        ]
        return entries

    # -- loading --------------------------------------------------------------------------------

    def discover(self) -> dict[str, list[str]]:
        """Model names and version directories on disk (only valid names and integer versions)."""
        if self.archives is not None:
            return self.archives.discover()
        found: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return found
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not MODEL_NAME.match(model_dir.name):
                continue
            if self.settings.models and model_dir.name not in self.settings.models:
                continue
            versions = [
                child.name
                for child in model_dir.iterdir()
                if child.is_dir() and child.name.isdigit() and (child / MANIFEST_FILE).is_file()
            ]
            if versions:
                found[model_dir.name] = sorted(versions, key=int)
        return found

    async def load_all(self, skip: Collection[str] = ()) -> None:
        """Load every model found, except those in `skip` (unloaded through the repository API
        while other workers served, see `service.control`)."""
        names = [name for name in self.discover() if name not in skip]
        if self.archives is not None:
            # Archive workers spend their start-up importing torch in their own processes:
            # start them all at once.
            await asyncio.gather(*(self._load_alone(name) for name in names))
        else:
            for name in names:
                await self.load(name)
        interval = self.settings.backend_probe_interval_s
        if self._probe is None and interval > 0:
            self._probe = asyncio.create_task(self._probe_backends(interval), name="probe")

    async def load(self, name: str) -> list[ModelVersion]:
        """(Re)load every version of `name` from disk. New versions are warmed up before they
        serve; versions gone from disk drain and unload; old ones keep serving meanwhile."""
        if not MODEL_NAME.match(name):
            raise InvalidInput(f"invalid model name {name!r}")
        async with self._lock:
            on_disk = self.discover().get(name)
            if on_disk is None:
                raise NotFound(f"no model {name!r} in the model store")
            current = dict(self._models.get(name, {}))
            fresh: dict[str, ModelVersion] = {}
            for version in on_disk:
                kept = current.get(version)
                if kept is not None and kept.ready:
                    fresh[version] = current.pop(version)
                else:
                    fresh[version] = await self._load_version(name, version)
            self._models[name] = fresh
            for old in current.values():
                await self._retire(old)
            return list(fresh.values())

    async def _load_alone(self, name: str) -> None:
        """`load`, without the repository lock (start-up only: nothing else runs yet)."""
        self._models[name] = {
            version: await self._load_version(name, version)
            for version in self.discover().get(name, [])
        }

    async def unload(self, name: str) -> None:
        async with self._lock:
            versions = self._models.pop(name, None)
            if versions is None:
                raise NotFound(f"unknown model {name!r}")
            for model in versions.values():
                await self._retire(model)

    async def close(self) -> None:
        """Drain every batcher and release every backend."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        for model in self.all_versions():
            await self._retire(model)
        self._models.clear()
        if self.archives is not None:
            self.archives.close()

    async def _probe_backends(self, interval: float) -> None:
        """Flip loaded versions READY <-> UNAVAILABLE as their backends' health changes
        (remote backends such as TorchServe; local ones are always healthy)."""
        while True:
            await asyncio.sleep(interval)
            for model in self.all_versions():
                if model.loaded is None and model.handler is None:
                    continue
                probed = model.state is State.UNAVAILABLE and model.reason == BACKEND_DOWN
                if model.state is not State.READY and not probed:
                    continue
                try:
                    healthy = (
                        await model.loaded.backend.healthy()
                        if model.loaded is not None
                        else model.handler is not None and model.handler.pool.ready
                    )
                except Exception:
                    log.exception("health probe of %s v%s failed", model.name, model.version)
                    healthy = False
                if healthy == model.ready or model.state not in (State.READY, State.UNAVAILABLE):
                    continue
                model.state, model.reason = (
                    (State.READY, "") if healthy else (State.UNAVAILABLE, BACKEND_DOWN)
                )
                self.metrics.model_ready.labels(model.name, model.version).set(int(healthy))
                log.warning("model %s v%s is %s", model.name, model.version, model.state.value)

    async def _retire(self, model: ModelVersion) -> None:
        model.state = State.UNLOADING
        self.metrics.model_ready.labels(model.name, model.version).set(0)
        if model.loaded is not None:
            await model.loaded.batcher.close()
            await model.loaded.backend.close()
        if model.handler is not None:
            await model.handler.close()

    async def _load_version(self, name: str, version: str) -> ModelVersion:
        if self.archives is not None:
            return await self._load_archive(self.archives, name, version)
        path = self.root / name / version
        model = ModelVersion(name=name, version=version, path=path)
        gauge = self.metrics.model_ready.labels(name, version)
        gauge.set(0)
        backend: Backend | None = None
        try:
            manifest = Manifest.read(path)
            if manifest.name != name or str(manifest.version) != version:
                raise InvalidInput(
                    f"manifest says {manifest.name} v{manifest.version}, found at {name}/{version}"
                )
            processor = processor_for(manifest, path, self.limits)
            backend = build_backend(manifest, path, self.settings)
            await backend.load()
            loaded = LoadedModel(
                name=name,
                version=version,
                manifest=manifest,
                processor=processor,
                backend=backend,
                batcher=self._batcher_for(name, version, manifest, backend),
                inflight=self.metrics.inflight.labels(name, version),
            )
            await self._warm_up(loaded)
        except ValidationError as error:
            model.state, model.reason = State.UNAVAILABLE, f"invalid manifest: {_describe(error)}"
        except ValueError as error:
            model.state, model.reason = State.UNAVAILABLE, f"invalid manifest: {error}"
        except ServingError as error:
            model.state, model.reason = State.UNAVAILABLE, error.message
        except Exception as error:
            model.state, model.reason = State.UNAVAILABLE, f"{type(error).__name__}: {error}"
        else:
            model.loaded = loaded
            model.state = State.READY
            gauge.set(1)
            log.info("model %s v%s ready (%s)", name, version, backend.description)
        if model.state is not State.READY:
            log.error("model %s v%s failed to load: %s", name, version, model.reason)
            if backend is not None:
                await backend.close()
        return model

    async def _load_archive(self, store: ArchiveStore, name: str, version: str) -> ModelVersion:
        """A TorchServe archive: its handler workers, and the tensor way in when it ships our
        model.json (then it is warmed up like any model)."""
        model = ModelVersion(name=name, version=version, path=store.root / f"{name}.mar")
        gauge = self.metrics.model_ready.labels(name, version)
        gauge.set(0)
        try:
            archive = await store.load(name, version)
        except ServingError as error:
            model.state, model.reason = State.UNAVAILABLE, error.message
        except Exception as error:
            model.state, model.reason = State.UNAVAILABLE, f"{type(error).__name__}: {error}"
        else:
            model.handler = archive.route
            if archive.manifest is not None and archive.backend is not None:
                try:
                    processor = processor_for(
                        archive.manifest, archive.route.archive.path, self.limits
                    )
                    loaded = LoadedModel(
                        name=name,
                        version=version,
                        manifest=archive.manifest,
                        processor=processor,
                        backend=archive.backend,
                        batcher=self._batcher_for(name, version, archive.manifest, archive.backend),
                        inflight=self.metrics.inflight.labels(name, version),
                    )
                    await self._warm_up(loaded)
                except Exception as error:
                    await archive.route.close()
                    model.handler = None
                    reason = error.message if isinstance(error, ServingError) else str(error)
                    model.state, model.reason = State.UNAVAILABLE, reason
                else:
                    model.loaded = loaded
            if model.handler is not None:
                model.state = State.READY
                gauge.set(1)
                log.info("model %s v%s ready (%s)", name, version, _describe_route(archive.route))
        if model.state is not State.READY:
            log.error("model %s v%s failed to load: %s", name, version, model.reason)
        return model

    def _batcher_for(
        self, name: str, version: str, manifest: Manifest, backend: Backend
    ) -> DynamicBatcher[Feed, Feed]:
        max_batch = self.settings.max_batch_size or manifest.batching.max_batch_size
        observer = self.metrics.observer(name, version)
        run_batch = BatchRunner(
            backend,
            inline=InlinePolicy(self.settings.inline_batch_max_ms / 1000.0),
            observer=observer,
        )
        return DynamicBatcher(
            run_batch,
            max_batch_size=max_batch,
            max_queue_size=max(self.settings.max_queue_size, max_batch),
            max_queue_delay_s=self.settings.max_queue_delay_ms / 1000.0,
            instances=self.settings.instances,
            rows_of=rows_of,
            observer=observer,
            tracer=self.tracer,
        )

    async def _warm_up(self, model: LoadedModel) -> None:
        """Run batch 1 and the max batch once, so the first real request is not slow."""
        for rows in sorted({1, model.batcher.max_batch_size}):
            outputs = await model.backend.infer(warmup_feed(model.manifest, rows))
            expected = {spec.name for spec in model.manifest.outputs}
            if set(outputs) != expected:
                raise InvalidInput(
                    f"model outputs {sorted(outputs)}, manifest says {sorted(expected)}"
                )


def version_key(version: str) -> tuple[int, ...]:
    """Numeric order of `1`, `2`, `1.0`, `1.10` (TorchServe archives carry dotted versions)."""
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _describe_route(route: HandlerRoute) -> str:
    return f"torchserve-native[{route.archive.manifest.handler}, {route.pool.target} worker(s)]"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "model.json"
    return f"{where}: {first['msg']}"

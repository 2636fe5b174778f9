"""Finds the archives to serve and turns one into a running `HandlerRoute` (+ its manifest
and tensor backend, when the archive declares tensors)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from service.batcher import BatchTracer
from service.manifest import Manifest
from service.metrics import GatewayMetrics
from service.native.archives import (
    ArchiveManifest,
    ExtractionLimits,
    ServingOptions,
    StoreConfig,
    archive_for,
    extract,
)
from service.native.serving import (
    HandlerRoute,
    NativeTensorBackend,
    TorchServeAliases,
    make_handler_route,
    manifest_in,
)
from service.native.workers import WorkerPool, WorkerSpec
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class LoadedArchive:
    route: HandlerRoute
    manifest: Manifest | None
    backend: NativeTensorBackend | None


class ArchiveStore:
    """The `.mar` files the settings point at, and how to start each."""

    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, tracer: BatchTracer | None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        default_store = settings.torchserve_model_store or settings.model_store
        if settings.torchserve_config is not None:
            config = StoreConfig.read(settings.torchserve_config, default_store)
            if settings.torchserve_model_store is not None:
                config = StoreConfig(
                    settings.torchserve_model_store, config.load_models, config.models
                )
        else:
            config = StoreConfig(default_store)
        self.config = config
        self.aliases = TorchServeAliases(metrics.registry)
        self._scratch = tempfile.TemporaryDirectory(prefix="gateway-mar-")
        self.extracted = Path(self._scratch.name)

    @property
    def root(self) -> Path:
        return self.config.model_store.resolve()

    def discover(self) -> dict[str, list[str]]:
        """Model name -> [the archive's version]."""
        found: dict[str, list[str]] = {}
        for name, path in self.config.archives().items():
            if self.settings.models and name not in self.settings.models:
                continue
            try:
                found[name] = [ArchiveManifest.read(path).version]
            except Exception:  # an unreadable archive is reported when it is loaded
                found[name] = ["1.0"]
        return found

    async def load(self, name: str, version: str) -> LoadedArchive:
        path = archive_for(self.config.archives(), name)
        limits = ExtractionLimits(
            self.settings.archive_max_bytes, self.settings.archive_max_members
        )
        extracted = await asyncio.to_thread(extract, path, self.extracted, limits)
        options = self.config.options_for(name, version).merged(extracted.model_config())
        spec = WorkerSpec(
            model_name=name,
            model_dir=extracted.path,
            handler=extracted.manifest.handler,
            batch_size=options.batch_size,
            response_timeout_s=options.response_timeout_s,
            threads=self.settings.torchserve_worker_threads,
        )
        workers = options.min_workers if options.min_workers > 0 else 1
        pool = WorkerPool(spec, workers, gpu_ids=range(self.settings.torchserve_gpus))
        await pool.start()
        route = make_handler_route(
            name,
            version,
            extracted,
            options,
            pool,
            max_queue_size=self.settings.max_queue_size,
            max_queue_delay_s=self._queue_delay(options),
            observer=self.metrics.observer(name, version),
            tracer=self.tracer,
            inflight=self.metrics.inflight.labels(name, version),
            aliases=self.aliases,
        )
        manifest = manifest_in(extracted)
        backend = NativeTensorBackend(manifest, pool) if manifest is not None else None
        return LoadedArchive(route, manifest, backend)

    def _queue_delay(self, options: ServingOptions) -> float:
        if self.settings.torchserve_batch_delay:
            return options.max_batch_delay_ms / 1000.0
        return self.settings.max_queue_delay_ms / 1000.0

    def close(self) -> None:
        self._scratch.cleanup()

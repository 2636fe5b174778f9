"""The loader of TorchServe archives (`torchserve-native`): finds the `.mar` files the
settings point at, extracts one, starts its handler pool and, when it declares tensors, its
tensor model too."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from service.backends.native_handler import NativeHandlerBackend
from service.batcher import DynamicBatcher
from service.errors import ServingError
from service.manifest import MANIFEST_FILE, Manifest
from service.models.loader import ModelLoader
from service.models.tensor import ServingContext, start_manifest_model
from service.native.aliases import TorchServeAliases
from service.native.archive_model import ArchiveModel, TensorArchiveModel, handler_batch_function
from service.native.archives import (
    ArchiveManifest,
    ExtractedArchive,
    ExtractionLimits,
    ServingOptions,
    StoreConfig,
    archive_for,
    extract,
)
from service.native.envelope import EnvelopeArchiveModel, service_envelope
from service.native.frames import HandlerRequest, HandlerResponse
from service.native.handler_pool import HandlerPool, HandlerSpec
from service.processing import processor_for

log = logging.getLogger(__name__)


class ArchiveLoader(ModelLoader):
    parallel_start = True

    def __init__(self, context: ServingContext) -> None:
        self.context = context
        settings = context.settings
        default_store = settings.torchserve_model_store or settings.model_store
        if settings.torchserve_config is not None:
            config = StoreConfig.read(settings.torchserve_config, default_store)
            if settings.torchserve_model_store is not None:
                config = replace(config, model_store=settings.torchserve_model_store)
        else:
            config = StoreConfig(default_store)
        self.config = config
        self.envelope = service_envelope(settings, config.envelope)
        self.aliases = TorchServeAliases(context.metrics.registry)
        self._scratch = tempfile.TemporaryDirectory(prefix="gateway-mar-")
        self.extracted = Path(self._scratch.name)

    @property
    def root(self) -> Path:
        return self.config.model_store.resolve()

    def source(self, name: str) -> Path:
        return archive_for(self.config.archives(), name)

    def discover(self) -> dict[str, list[str]]:
        """Model name -> [the archive's version]."""
        found: dict[str, list[str]] = {}
        wanted = self.context.settings.models
        for name, path in self.config.archives().items():
            if wanted and name not in wanted:
                continue
            try:
                found[name] = [ArchiveManifest.read(path).version]
            except Exception:  # an unreadable archive is reported when it is loaded
                found[name] = ["1.0"]
        return found

    async def load(self, name: str, version: str) -> ArchiveModel:
        settings = self.context.settings
        path = archive_for(self.config.archives(), name)
        limits = ExtractionLimits(settings.archive_max_bytes, settings.archive_max_members)
        extracted = await asyncio.to_thread(extract, path, self.extracted, limits)
        options = self.config.options_for(name, version).merged(extracted.model_config())
        spec = HandlerSpec(
            model_name=name,
            model_dir=extracted.path,
            handler=extracted.manifest.handler,
            batch_size=options.batch_size,
            response_timeout_s=options.response_timeout_s,
            start_timeout_s=options.startup_timeout_s or settings.torchserve_start_timeout_s,
            threads=settings.torchserve_worker_threads,
            max_rss_bytes=settings.torchserve_worker_max_rss_mb * 1024 * 1024 or None,
            envelope=self.envelope,
        )
        workers = options.min_workers if options.min_workers > 0 else 1
        recycles = self.context.metrics.handler_recycles
        pool = HandlerPool(
            spec,
            workers,
            gpu_ids=range(settings.torchserve_gpus),
            recycled=lambda model, reason: recycles.labels(model, reason).inc(),
        )
        await pool.start()
        model = self._raw_model(name, version, extracted, options, pool)
        manifest = manifest_in(extracted)
        if manifest is None or self.envelope:  # an envelope takes every request to the handler
            return model
        try:
            tensors = await start_manifest_model(
                self.context,
                name,
                version,
                manifest,
                processor_for(manifest, extracted.path, self.context.limits),
                NativeHandlerBackend(manifest, pool),
            )
        except BaseException:
            await model.close()
            raise
        return TensorArchiveModel(model, tensors)

    def _raw_model(
        self,
        name: str,
        version: str,
        archive: ExtractedArchive,
        options: ServingOptions,
        pool: HandlerPool,
    ) -> ArchiveModel:
        settings = self.context.settings
        metrics = self.context.metrics
        delay_ms = (
            options.max_batch_delay_ms
            if settings.torchserve_batch_delay
            else settings.max_queue_delay_ms
        )
        batcher: DynamicBatcher[HandlerRequest, HandlerResponse] = DynamicBatcher(
            handler_batch_function(pool),
            max_batch_size=options.batch_size,
            max_queue_size=max(settings.max_queue_size, options.batch_size),
            max_queue_delay_s=delay_ms / 1000.0,
            instances=max(1, pool.target),
            observer=self.aliases.observer(metrics.observer(name, version), name, version),
            tracer=self.context.tracer,
        )
        kind = EnvelopeArchiveModel if self.envelope in ("kserve", "kservev2") else ArchiveModel
        model = kind(
            name,
            version,
            archive,
            options,
            pool,
            batcher,
            metrics.inflight.labels(name, version),
            self.aliases,
        )
        if isinstance(model, EnvelopeArchiveModel):
            model.envelope, model.limits = self.envelope, self.context.limits
        return model

    def close(self) -> None:
        self._scratch.cleanup()


def manifest_in(archive: ExtractedArchive) -> Manifest | None:
    """Our `model.json`, when the archive ships one (then V2 and gRPC serve it too)."""
    if not (archive.path / MANIFEST_FILE).is_file():
        return None
    try:
        return Manifest.read(archive.path)
    except (ValueError, ServingError) as error:
        log.warning(
            "%s: model.json unreadable (%s); serving /predictions only", archive.path, error
        )
        return None

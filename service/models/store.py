"""Which loaders read the model store the settings name, and the repository over them."""

from __future__ import annotations

from service.batcher import BatchTracer
from service.metrics import GatewayMetrics
from service.models.loader import ModelLoader
from service.models.manifests import ManifestLoader
from service.models.tensor import ServingContext
from service.repository import ModelRepository
from service.settings import Settings


def store_loaders(context: ServingContext) -> list[ModelLoader]:
    """TorchServe archives with the `torchserve-native` backend, else our manifests."""
    if context.settings.serves_archives:
        from service.native.loader import ArchiveLoader

        return [ArchiveLoader(context)]
    return [ManifestLoader(context)]


def repository_for(
    settings: Settings, metrics: GatewayMetrics, tracer: BatchTracer | None = None
) -> ModelRepository:
    """The repository of the store the settings name, with its loaders."""
    loaders = store_loaders(ServingContext.of(settings, metrics, tracer))
    return ModelRepository(loaders, metrics, probe_interval_s=settings.backend_probe_interval_s)

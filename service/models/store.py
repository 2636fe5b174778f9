"""Which loaders read the model store the settings name, and the repository over them.

One store may mix layouts: our manifests (`<model>/<n>/model.json`), Triton model folders and
bare model files; with the `torchserve-native` backend, TorchServe archives (`*.mar`) take the
manifests' place."""

from __future__ import annotations

from service.batcher import BatchTracer
from service.metrics import GatewayMetrics
from service.models.loader import ModelLoader
from service.models.manifests import ManifestLoader
from service.models.tensor import ServingContext
from service.repository import ModelRepository
from service.settings import Settings


def store_loaders(context: ServingContext) -> list[ModelLoader]:
    """In the order they claim names: a name two loaders find is served by the first."""
    from service.triton.loader import TritonLoader

    first: ModelLoader
    if context.settings.serves_archives:
        from service.native.loader import ArchiveLoader

        first = ArchiveLoader(context)
    else:
        first = ManifestLoader(context)
    return [first, TritonLoader(context)]


def repository_for(
    settings: Settings, metrics: GatewayMetrics, tracer: BatchTracer | None = None
) -> ModelRepository:
    """The repository of the store the settings name, with its loaders."""
    loaders = store_loaders(ServingContext.of(settings, metrics, tracer))
    mode = settings.model_control_mode
    startup = None
    if mode == "explicit":
        wanted = settings.load_model or []
        startup = None if "*" in wanted else wanted
    return ModelRepository(
        loaders,
        metrics,
        probe_interval_s=settings.backend_probe_interval_s,
        startup=startup,
        poll_interval_s=settings.repository_poll_secs if mode == "poll" else 0.0,
        retire_grace_s=settings.drain_seconds,
    )

"""The model repository: discovers what its loaders find in the store, loads and warms each
version, and swaps versions in and out without dropping requests.

It keeps discovery, the versions and their states, the lock that orders loads and unloads, the
swaps, and the health probe. What a model *is* belongs to its kind (`service.models`); how a
kind is found and loaded belongs to its loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from service.errors import InvalidInput, ModelNotReady, NotFound, ServingError
from service.metrics import GatewayMetrics
from service.models.loader import ModelLoader, version_key
from service.models.manifests import MODEL_NAME
from service.models.served import NoModel, ServedModel

log = logging.getLogger(__name__)

BACKEND_DOWN = "backend unavailable"
"""The reason of a loaded version whose backend failed its health probe (it flips back)."""


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(eq=False)
class ModelVersion:
    """One version and its lifecycle. `model` is what serves it: `NoModel` until it loaded.

    Requests hold a lease (`leased`) while they use the model, so that a version swapped out
    is closed only after the requests that found it are answered."""

    name: str
    version: str
    model: ServedModel
    state: State = State.LOADING
    reason: str = ""
    _leases: int = field(default=0, repr=False)
    _released: asyncio.Event | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @contextlib.contextmanager
    def leased(self) -> Iterator[ServedModel]:
        """The served model (or `ModelNotReady`), held until the block ends."""
        model = self.serving()
        self._leases += 1
        try:
            yield model
        finally:
            self._leases -= 1
            if self._leases == 0 and self._released is not None:
                self._released.set()

    async def released(self, timeout_s: float) -> bool:
        """Wait until no request holds this version; False after `timeout_s`."""
        if self._leases == 0:
            return True
        self._released = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._released.wait()
        except TimeoutError:
            return False
        return True

    def serving(self) -> ServedModel:
        """The served model, or `ModelNotReady` saying why this version cannot serve."""
        if self.state is not State.READY:
            detail = f": {self.reason}" if self.reason else ""
            raise ModelNotReady(
                f"model {self.name!r} version {self.version} is {self.state}{detail}"
            )
        return self.model


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str

    @classmethod
    def of(cls, model: ModelVersion) -> IndexEntry:
        return cls(model.name, model.version, model.state.value, model.reason)


class ModelRepository:
    def __init__(
        self,
        loaders: Sequence[ModelLoader],
        metrics: GatewayMetrics,
        *,
        probe_interval_s: float = 0.0,
        startup: Collection[str] | None = None,
        poll_interval_s: float = 0.0,
        retire_grace_s: float = 30.0,
    ) -> None:
        self.loaders = list(loaders)
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.startup = None if startup is None else frozenset(startup)
        """The models loaded at start (None: every model found): `explicit` control mode."""
        self.poll_interval_s = poll_interval_s
        """Seconds between looks at the store (`poll` control mode); 0: no polling."""
        self.retire_grace_s = retire_grace_s
        self._models: dict[str, dict[str, ModelVersion]] = {}
        self._fingerprints: dict[str, object] = {}
        self._lock = asyncio.Lock()
        self._probe: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None

    # -- lookup ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> dict[str, ModelVersion]:
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        return versions

    def version_names(self, name: str) -> list[str]:
        """A model's versions, in the one version order."""
        return sorted(self.versions(name), key=version_key)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A version, or the highest version when none is named."""
        versions = self.versions(name)
        if version is None:
            ready = [v for v in versions.values() if v.ready]
            pool = ready or list(versions.values())
            return max(pool, key=lambda v: version_key(v.version))
        found = versions.get(version)
        if found is None:
            if not all(part.isdigit() for part in version.split(".")):
                raise NotFound(
                    f"failed to get model version from specified version string '{version}' "
                    "(details: expected integral value), version should be an integral value "
                    f"> 0; model '{name}' has versions {sorted(versions, key=version_key)}"
                )
            raise NotFound(f"Request for unknown model: '{name}' version {version} is not found")
        return found

    def serving(self, name: str, version: str | None = None) -> ServedModel:
        return self.get(name, version).serving()

    def all_versions(self) -> list[ModelVersion]:
        return [v for versions in self._models.values() for v in versions.values()]

    def index(self) -> list[IndexEntry]:
        """Every loaded version, then every model on disk that is not loaded (`UNLOADED`)."""
        entries = [IndexEntry.of(model) for model in self.all_versions()]
        entries += [
            IndexEntry(name, version, "UNLOADED", "")
            for name, (_loader, versions) in self.discover().items()
            if name not in self._models
            for version in versions
        ]
        return entries

    # -- loading --------------------------------------------------------------------------------

    def discover(self) -> dict[str, tuple[ModelLoader, list[str]]]:
        """Model name -> the loader that found it and its versions on disk. A name two loaders
        find is served by the first."""
        found: dict[str, tuple[ModelLoader, list[str]]] = {}
        for loader in self.loaders:
            for name, versions in loader.discover().items():
                found.setdefault(name, (loader, versions))
        return found

    async def load_all(self, skip: Collection[str] = ()) -> None:
        """Load every model found, except those in `skip` (unloaded through the repository API
        while other workers served, see `service.control`)."""
        found = {
            name: item
            for name, item in self.discover().items()
            if name not in skip and (self.startup is None or name in self.startup)
        }
        parallel = [name for name, (loader, _) in found.items() if loader.parallel_start]
        one_by_one = [name for name in found if name not in parallel]
        # Nothing else runs yet: the lock is not needed.
        await asyncio.gather(*(self._load_alone(name, *found[name]) for name in parallel))
        for name in one_by_one:
            await self.load(name)
        if self._probe is None and self.probe_interval_s > 0:
            self._probe = asyncio.create_task(self._probe_backends(), name="probe")
        if self._poll is None and self.poll_interval_s > 0:
            self._poll = asyncio.create_task(self._watch_store(), name="poll")

    async def load(self, name: str) -> list[ModelVersion]:
        """(Re)load every version of `name` from disk. New versions are warmed up before they
        serve; versions gone from disk drain and unload; old ones keep serving meanwhile. When
        the model's files changed since it loaded, every version is loaded afresh, and if none
        of the fresh ones can serve, the serving ones stay (the failure is logged)."""
        if not MODEL_NAME.match(name):
            raise InvalidInput(f"invalid model name {name!r}")
        async with self._lock:
            return await self._load_locked(name)

    async def _load_locked(self, name: str) -> list[ModelVersion]:
        found = self.discover().get(name)
        if found is None:
            raise NotFound(f"no model {name!r} in the model store")
        loader, on_disk = found
        fingerprint = loader.fingerprint(name)
        changed = self._fingerprints.get(name, fingerprint) != fingerprint
        current = dict(self._models.get(name, {}))
        fresh: dict[str, ModelVersion] = {}
        for version in on_disk:
            kept = current.get(version)
            if kept is not None and kept.ready and not changed:
                fresh[version] = current.pop(version)
            else:
                fresh[version] = await self._load_version(loader, name, version)
        serving = [v for v in current.values() if v.ready]
        if changed and serving and not any(v.ready for v in fresh.values()):
            reasons = "; ".join(f"v{v.version}: {v.reason}" for v in fresh.values())
            log.error("model %s changed but cannot load (%s); keeps serving", name, reasons)
            for failed in fresh.values():
                await self._retire(failed)
            return list(current.values())
        self._models[name] = fresh
        self._fingerprints[name] = fingerprint
        for old in current.values():
            await self._retire(old)
        return list(fresh.values())

    async def _load_alone(self, name: str, loader: ModelLoader, versions: list[str]) -> None:
        self._fingerprints[name] = loader.fingerprint(name)
        self._models[name] = {
            version: await self._load_version(loader, name, version) for version in versions
        }

    async def refresh(self) -> None:
        """One look at the store (`poll` mode): load added models, reload changed ones (and
        those whose versions changed), unload removed ones. One model's failure is logged and
        the others go on."""
        async with self._lock:
            found = self.discover()
            for name in [n for n in self._models if n not in found]:
                log.info("model %s left the store: unloading", name)
                for model in self._models.pop(name).values():
                    await self._retire(model)
                self._fingerprints.pop(name, None)
            for name, (loader, versions) in found.items():
                loaded = self._models.get(name)
                if (
                    loaded is not None
                    and sorted(loaded) == sorted(versions)
                    and self._fingerprints.get(name) == loader.fingerprint(name)
                ):
                    continue
                log.info("model %s %s: loading", name, "changed" if loaded else "appeared")
                try:
                    await self._load_locked(name)
                except ServingError as error:
                    log.error("model %s: %s", name, error.message)

    async def _watch_store(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("polling the model store failed")

    async def unload(self, name: str) -> None:
        async with self._lock:
            versions = self._models.pop(name, None)
            if versions is None:
                raise NotFound(f"Request for unknown model: '{name}' is not found")
            for model in versions.values():
                await self._retire(model)

    async def close(self) -> None:
        """Drain every batcher and release every backend."""
        for task in (self._probe, self._poll):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._probe = self._poll = None
        for model in self.all_versions():
            await self._retire(model)
        self._models.clear()
        for loader in self.loaders:
            loader.close()

    async def _probe_backends(self) -> None:
        """Flip loaded versions READY <-> UNAVAILABLE as their backends' health changes
        (remote backends such as TorchServe, handler pools; local ones are always healthy)."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            for model in self.all_versions():
                probed = model.state is State.UNAVAILABLE and model.reason == BACKEND_DOWN
                if model.state is not State.READY and not probed:
                    continue
                try:
                    healthy = await model.model.healthy()
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
        """Out of service: wait for the requests that hold it, then drain and close it."""
        model.state = State.UNLOADING
        self.metrics.model_ready.labels(model.name, model.version).set(0)
        if not await model.released(self.retire_grace_s):
            log.warning("model %s v%s: requests still hold it; closing", model.name, model.version)
        await model.model.close()

    async def _load_version(self, loader: ModelLoader, name: str, version: str) -> ModelVersion:
        """Load one version with its kind's loader: its state, gauge and log, the same for
        every kind. A version that fails keeps `NoModel` and the reason."""
        entry = ModelVersion(name=name, version=version, model=NoModel(name, version))
        gauge = self.metrics.model_ready.labels(name, version)
        gauge.set(0)
        try:
            served = await loader.load(name, version)
        except ServingError as error:
            entry.state, entry.reason = State.UNAVAILABLE, error.message
        except Exception as error:
            entry.state, entry.reason = State.UNAVAILABLE, f"{type(error).__name__}: {error}"
        else:
            entry.model = served
            entry.state = State.READY
            gauge.set(1)
            log.info("model %s v%s ready (%s)", name, version, served.description)
        if entry.state is not State.READY:
            log.error("model %s v%s failed to load: %s", name, version, entry.reason)
        return entry

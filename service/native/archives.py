"""Where the archives are and how each one is served: TorchServe's model store, its
`config.properties`, each archive's `MAR-INF/MANIFEST.json` and `model-config.yaml`.

Precedence is TorchServe's: an archive's own `model-config.yaml` wins over the `models=` entry
of `config.properties`, which wins over the defaults.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service.errors import InvalidInput, NotFound

ARCHIVE_SUFFIX = ".mar"
MANIFEST_MEMBER = "MAR-INF/MANIFEST.json"


def read_properties(path: Path) -> dict[str, str]:
    """A Java properties file: `key=value` or `key: value`, `#`/`!` comments, and lines
    continued by a trailing backslash (TorchServe's `models=` JSON is written that way)."""
    properties: dict[str, str] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip() if not pending else raw.lstrip()
        if not pending and (not line or line.startswith(("#", "!"))):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        key, separator, value = _split_property(line)
        if separator:
            properties[key] = value
    return properties


def _split_property(line: str) -> tuple[str, str, str]:
    positions = [index for index in (line.find("="), line.find(":")) if index >= 0]
    if not positions:
        return line, "", ""
    cut = min(positions)
    return line[:cut].strip(), line[cut], line[cut + 1 :].strip()


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """How one model is served (TorchServe's names in the comments)."""

    batch_size: int = 1  # batchSize
    max_batch_delay_ms: int = 100  # maxBatchDelay: used only when the gateway is told to
    min_workers: int = 1  # minWorkers
    response_timeout_s: float = 120.0  # responseTimeout

    def merged(self, overrides: Mapping[str, Any]) -> ServingOptions:
        keys = {
            "batchSize": "batch_size",
            "maxBatchDelay": "max_batch_delay_ms",
            "minWorkers": "min_workers",
            "responseTimeout": "response_timeout_s",
        }
        changes: dict[str, Any] = {}
        for their, ours in keys.items():
            if their in overrides and overrides[their] is not None:
                try:
                    value = float(overrides[their])
                except (TypeError, ValueError):
                    raise InvalidInput(
                        f"{their} must be a number, not {overrides[their]!r}"
                    ) from None
                changes[ours] = value if ours == "response_timeout_s" else int(value)
        options = replace(self, **changes)
        if options.batch_size < 1 or options.min_workers < 0 or options.response_timeout_s <= 0:
            raise InvalidInput("batchSize must be >= 1, minWorkers >= 0, responseTimeout > 0")
        return options


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The model store and what to load from it (`model_store`, `load_models`, `models`)."""

    model_store: Path
    load_models: tuple[str, ...] = ("all",)
    models: Mapping[str, Any] | None = None

    @classmethod
    def read(cls, properties_file: Path, default_store: Path) -> StoreConfig:
        properties = read_properties(properties_file)
        store = Path(properties.get("model_store") or default_store)
        if not store.is_absolute():
            store = properties_file.parent / store
        load = tuple(
            item.strip() for item in properties.get("load_models", "all").split(",") if item.strip()
        )
        models: Mapping[str, Any] | None = None
        if properties.get("models"):
            try:
                models = json.loads(properties["models"])
            except json.JSONDecodeError as error:
                raise InvalidInput(f"models= in {properties_file} is not JSON: {error}") from None
        return cls(store, load or ("all",), models)

    def archives(self) -> dict[str, Path]:
        """Model name -> archive, for the archives `load_models` names (`all`: every one)."""
        if not self.model_store.is_dir():
            return {}
        found = {path.stem: path for path in sorted(self.model_store.glob(f"*{ARCHIVE_SUFFIX}"))}
        if "all" in self.load_models:
            return found
        chosen: dict[str, Path] = {}
        for item in self.load_models:
            name, _, file = item.partition("=")
            path = self.model_store / (file or name)
            if path.suffix != ARCHIVE_SUFFIX:
                path = path.with_name(path.name + ARCHIVE_SUFFIX)
            if path.is_file():
                chosen[name if file else path.stem] = path
        return chosen

    def options_for(self, name: str, version: str) -> ServingOptions:
        """`models=` settings for one model version (or its only / default version)."""
        entry = (self.models or {}).get(name)
        if not isinstance(entry, Mapping):
            return ServingOptions()
        settings = entry.get(version)
        if not isinstance(settings, Mapping):
            versions = [v for v in entry.values() if isinstance(v, Mapping)]
            default = [v for v in versions if v.get("defaultVersion")]
            settings = (default or versions or [{}])[0]
        return ServingOptions().merged(settings)


@dataclass(frozen=True, slots=True)
class ArchiveManifest:
    """What `MAR-INF/MANIFEST.json` says about the model."""

    name: str
    version: str
    handler: str
    config_file: str | None
    raw: Mapping[str, Any]

    @classmethod
    def read(cls, archive: Path) -> ArchiveManifest:
        try:
            with zipfile.ZipFile(archive) as mar:
                raw = json.loads(mar.read(MANIFEST_MEMBER))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
            raise InvalidInput(f"{archive.name} is not a model archive: {error}") from None
        model = raw.get("model") if isinstance(raw, Mapping) else None
        if not isinstance(model, Mapping) or not model.get("handler"):
            raise InvalidInput(f"{archive.name}: {MANIFEST_MEMBER} names no handler")
        return cls(
            name=str(model.get("modelName") or archive.stem),
            version=str(model.get("modelVersion") or "1.0"),
            handler=str(model["handler"]),
            config_file=model.get("configFile"),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class ExtractedArchive:
    path: Path
    manifest: ArchiveManifest

    def model_config(self) -> Mapping[str, Any]:
        """The archive's `model-config.yaml` (empty when it has none)."""
        if not self.manifest.config_file:
            return {}
        file = self.path / self.manifest.config_file
        if not file.is_file():
            return {}
        import yaml  # installed with TorchServe; needed only by this backend

        loaded = yaml.safe_load(file.read_text())
        return loaded if isinstance(loaded, Mapping) else {}


def extract(archive: Path, root: Path) -> ExtractedArchive:
    """Unpack into `<root>/<name>/<digest>` (private to this gateway, reused when unchanged)."""
    manifest = ArchiveManifest.read(archive)
    digest = hashlib.sha256()
    with archive.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    target = root / manifest.name / digest.hexdigest()[:16]
    if not (target / MANIFEST_MEMBER).is_file():
        shutil.rmtree(target, ignore_errors=True)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(archive) as mar:
            for member in mar.infolist():
                destination = (staging / member.filename).resolve()
                if not destination.is_relative_to(staging.resolve()):
                    raise InvalidInput(f"{archive.name}: member {member.filename!r} escapes")
            mar.extractall(staging)
        staging.rename(target)
    return ExtractedArchive(target, manifest)


def archive_for(archives: Mapping[str, Path], name: str) -> Path:
    found = archives.get(name)
    if found is None:
        raise NotFound(f"no archive for model {name!r} in the model store")
    return found

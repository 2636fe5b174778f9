"""Where the archives are and how each one is served: TorchServe's model store, its
`config.properties`, each archive's `MAR-INF/MANIFEST.json` and `model-config.yaml`.

Precedence is TorchServe's: an archive's own `model-config.yaml` wins over the `models=` entry
of `config.properties`, which wins over the defaults. A `model_snapshot` in `config.properties`
(what KServe's TorchServe layout ships, and what TorchServe writes on shutdown) replaces
`load_models` as TorchServe's `SnapshotManager.restore` does: it names every model, its archive
(`marName`) and its settings; an archive it names that is missing stops the start.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidInput, NotFound
from service.input_limits import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS

ARCHIVE_SUFFIX = ".mar"
MANIFEST_MEMBER = "MAR-INF/MANIFEST.json"
MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest is a few hundred bytes; a bigger one is refused before it is read."""


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
    startup_timeout_s: float | None = None  # startupTimeout (None: the gateway's setting)

    def merged(self, overrides: Mapping[str, Any]) -> ServingOptions:
        keys = {
            "batchSize": "batch_size",
            "maxBatchDelay": "max_batch_delay_ms",
            "minWorkers": "min_workers",
            "responseTimeout": "response_timeout_s",
            "startupTimeout": "startup_timeout_s",
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
                changes[ours] = value if ours.endswith("_timeout_s") else int(value)
        options = replace(self, **changes)
        if options.batch_size < 1 or options.min_workers < 0 or options.response_timeout_s <= 0:
            raise InvalidInput("batchSize must be >= 1, minWorkers >= 0, responseTimeout > 0")
        if options.startup_timeout_s is not None and options.startup_timeout_s <= 0:
            raise InvalidInput("startupTimeout must be > 0")
        return options


@dataclass(frozen=True, slots=True)
class SnapshotModel:
    """One model of a `model_snapshot`: the version served, its archive and its settings."""

    version: str
    mar_name: str
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The model store and what to load from it (`model_store`, `load_models`, `models`,
    `model_snapshot`, `service_envelope`)."""

    model_store: Path
    load_models: tuple[str, ...] = ("all",)
    models: Mapping[str, Any] | None = None
    snapshot: Mapping[str, SnapshotModel] | None = None
    """Model name -> what `model_snapshot` says; when set, `load_models` is not read."""
    envelope: str = ""
    """`service_envelope`: how TorchServe wraps requests for the handler (`kserve`...)."""

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
            models = _json_property(properties, "models", properties_file)
        snapshot = None
        if properties.get("model_snapshot"):
            raw = _json_property(properties, "model_snapshot", properties_file)
            snapshot = snapshot_models(raw, f"model_snapshot in {properties_file}")
        envelope = properties.get("service_envelope", "")
        return cls(store, load or ("all",), models, snapshot, envelope)

    def archives(self) -> dict[str, Path]:
        """Model name -> archive: those `model_snapshot` names, else those `load_models`
        names (`all`: every one)."""
        if self.snapshot is not None:
            return self._snapshot_archives(self.snapshot)
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

    def _snapshot_archives(self, snapshot: Mapping[str, SnapshotModel]) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for name, model in snapshot.items():
            path = self.model_store / model.mar_name
            if not path.is_file():
                # TorchServe refuses to start on such a snapshot (InvalidSnapshotException).
                raise InvalidInput(
                    f"model_snapshot: the archive {model.mar_name!r} of model {name!r}, "
                    f"version {model.version!r}, is not in the model store {self.model_store}"
                )
            found[name] = path
        return found

    def options_for(self, name: str, version: str) -> ServingOptions:
        """`models=` settings for one model version (or its only / default version), then the
        snapshot's for that model."""
        options = ServingOptions().merged(_version_settings((self.models or {}).get(name), version))
        if self.snapshot is not None and name in self.snapshot:
            options = options.merged(self.snapshot[name].settings)
        return options


def _json_property(properties: Mapping[str, str], key: str, file: Path) -> Any:
    try:
        return json.loads(properties[key])
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{key}= in {file} is not JSON: {error}") from None


def _version_settings(entry: Any, version: str) -> Mapping[str, Any]:
    """One version's settings of a `{version: {...}}` map: that version, else the one marked
    `defaultVersion`, else the first."""
    if not isinstance(entry, Mapping):
        return {}
    settings = entry.get(version)
    if isinstance(settings, Mapping):
        return settings
    versions = [v for v in entry.values() if isinstance(v, Mapping)]
    default = [v for v in versions if v.get("defaultVersion")]
    chosen: Mapping[str, Any] = (default or versions or [{}])[0]
    return chosen


def snapshot_models(raw: Any, where: str) -> dict[str, SnapshotModel]:
    """The models of a TorchServe snapshot, `{"modelCount": N, "models": {name: {version:
    {"marName": ..., "defaultVersion": ..., "batchSize": ...}}}}`: per model, the version marked
    `defaultVersion` (else the only or first one). A `modelCount` of 0 loads nothing, as in
    TorchServe. The gateway serves one version per archive model, so the other versions a
    snapshot lists are not loaded."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("models", {}), Mapping):
        raise InvalidInput(f'{where}: expected {{"models": {{name: {{version: {{...}}}}}}}}')
    count = raw.get("modelCount")
    if isinstance(count, int) and count <= 0:
        return {}
    found: dict[str, SnapshotModel] = {}
    for name, versions in raw.get("models", {}).items():
        if not isinstance(versions, Mapping) or not versions:
            raise InvalidInput(f"{where}: model {name!r} lists no version")
        entries = [(str(v), s) for v, s in versions.items() if isinstance(s, Mapping)]
        default = [(v, s) for v, s in entries if s.get("defaultVersion")]
        if not entries:
            raise InvalidInput(f"{where}: model {name!r} lists no version settings")
        version, settings = (default or entries)[0]
        mar_name = settings.get("marName")
        if not isinstance(mar_name, str) or not mar_name or "/" in mar_name or mar_name == "..":
            raise InvalidInput(
                f"{where}: model {name!r} version {version!r} needs a marName, an archive "
                f"file name in the model store (got {mar_name!r})"
            )
        if not MODEL_NAME.fullmatch(str(name)):
            raise InvalidInput(f"{where}: model name {name!r} {PLAIN_NAME_RULE}")
        found[str(name)] = SnapshotModel(version, mar_name, settings)
    return found


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""A model name that is one plain path component (TorchServe's own rule for names)."""


PLAIN_NAME_RULE = (
    "must be letters, digits, '_', '-' or '.', starting with a letter or digit "
    "(it names the extraction folder)"
)


def _plain_name(value: str) -> str:
    if not MODEL_NAME.fullmatch(value):
        raise ValueError(PLAIN_NAME_RULE)
    return value


def _relative_member(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError("must be a path inside the archive (no '..', not absolute)")
    return value


class _ModelEntry(BaseModel):
    """The `model` object of `MANIFEST.json`, as `torch-model-archiver` writes it."""

    model_config = ConfigDict(extra="allow", strict=True)

    modelName: Annotated[str, AfterValidator(_plain_name)] | None = None
    modelVersion: Annotated[str, Field(min_length=1)] | None = None
    handler: Annotated[str, Field(min_length=1)]
    configFile: Annotated[str, AfterValidator(_relative_member)] | None = None


class _ManifestFile(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: _ModelEntry


def _manifest_problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']} (got {item['input']!r:.60})"
        for item in error.errors(include_url=False)
    )


@dataclass(frozen=True, slots=True)
class ArchiveManifest:
    """What `MAR-INF/MANIFEST.json` says about the model, validated: the name must be one
    plain path component (it names the extraction folder), the version and config file strings,
    the config file a path inside the archive."""

    name: str
    version: str
    handler: str
    config_file: str | None
    raw: Mapping[str, Any]

    @classmethod
    def read(cls, archive: Path) -> ArchiveManifest:
        try:
            with zipfile.ZipFile(archive) as mar, mar.open(MANIFEST_MEMBER) as member:
                text = member.read(MAX_MANIFEST_BYTES + 1)
            if len(text) > MAX_MANIFEST_BYTES:
                raise InvalidInput(
                    f"{archive.name}: {MANIFEST_MEMBER} is over {MAX_MANIFEST_BYTES} bytes"
                )
            raw = json.loads(text)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidInput(f"{archive.name} is not a model archive: {error}") from None
        try:
            parsed = _ManifestFile.model_validate(raw)
        except ValidationError as error:
            raise InvalidInput(
                f"{archive.name}: invalid {MANIFEST_MEMBER}: {_manifest_problems(error)}"
            ) from None
        model = parsed.model
        name = model.modelName or archive.stem
        if not MODEL_NAME.fullmatch(name):
            raise InvalidInput(f"{archive.name}: model name {name!r} {PLAIN_NAME_RULE}")
        return cls(
            name=name,
            version=model.modelVersion or "1.0",
            handler=model.handler,
            config_file=model.configFile,
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


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    """What one archive may put on disk (`GATEWAY_ARCHIVE_MAX_BYTES`, `..._MAX_MEMBERS`)."""

    max_bytes: int = MAX_ARCHIVE_BYTES
    max_members: int = MAX_ARCHIVE_MEMBERS


def extract(
    archive: Path, root: Path, limits: ExtractionLimits = ExtractionLimits()
) -> ExtractedArchive:
    """Unpack into `<root>/<name>/<digest>` (private to this gateway, reused when unchanged).

    Nothing is written outside `root`, and at most `limits` is written: the member count and
    the declared sizes are checked from the zip's directory first, and the bytes are counted
    again while they are written, since a directory can understate what a member inflates to.
    """
    manifest = ArchiveManifest.read(archive)
    digest = hashlib.sha256()
    with archive.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    base = root.resolve()
    target = base / manifest.name / digest.hexdigest()[:16]
    if not target.is_relative_to(base):  # the name is checked already; never write outside
        raise InvalidInput(f"{archive.name}: model name {manifest.name!r} escapes")
    if not (target / MANIFEST_MEMBER).is_file():
        shutil.rmtree(target, ignore_errors=True)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(archive) as mar:
                _unpack(mar, archive.name, staging, limits)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.rename(target)
    return ExtractedArchive(target, manifest)


def _unpack(mar: zipfile.ZipFile, label: str, staging: Path, limits: ExtractionLimits) -> None:
    members = mar.infolist()
    if len(members) > limits.max_members:
        raise InvalidInput(
            f"{label}: {len(members)} members; the limit is {limits.max_members} "
            "(GATEWAY_ARCHIVE_MAX_MEMBERS)"
        )
    declared = sum(member.file_size for member in members)
    if declared > limits.max_bytes:
        raise InvalidInput(f"{label}: {_too_big(declared, limits)}")
    destinations = []
    for member in members:
        destination = (staging / member.filename).resolve()
        if not destination.is_relative_to(staging.resolve()):
            raise InvalidInput(f"{label}: member {member.filename!r} escapes")
        destinations.append(destination)
    staging.mkdir(parents=True)
    written = 0
    for member, destination in zip(members, destinations, strict=True):
        if member.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with mar.open(member) as source, destination.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > limits.max_bytes:
                        raise InvalidInput(f"{label}: {_too_big(written, limits)} (while writing)")
                    sink.write(chunk)
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise InvalidInput(f"{label}: member {member.filename!r} is corrupt: {error}") from None


def _too_big(size: int, limits: ExtractionLimits) -> str:
    return (
        f"unpacks to more than {limits.max_bytes} bytes ({size} seen); "
        "the limit is GATEWAY_ARCHIVE_MAX_BYTES"
    )


def archive_for(archives: Mapping[str, Path], name: str) -> Path:
    found = archives.get(name)
    if found is None:
        raise NotFound(f"no archive for model {name!r} in the model store")
    return found

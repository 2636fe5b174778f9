"""Builds one TorchServe archive (`<name>.mar`) per model of the store.

Each archive holds the TorchScript artifact, `model.json` (+ `tokenizer.json` for text), the
`model-config.yaml` for that model, the handler, and the few pure-Python modules the handler
imports (`service.processing` and its numpy/PIL/tokenizers/pydantic-only helpers, the tensor
payload codec, `handlers.decoding`). The archive is self-contained: TorchServe puts the
extracted archive first on the worker's `sys.path`, so the shipped copies serve even where this
project is not installed; the worker's Python needs torch, numpy, pillow, tokenizers, pydantic.

    python -m deploy.torchserve.archive --model-store model_store [--out-dir DIR] [--models a,b]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from service.manifest import MANIFEST_FILE, Manifest, TextPreprocessing

log = logging.getLogger(__name__)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
HANDLER_FILE = SOURCE_ROOT / "handlers" / "manifest_handler.py"
SHIPPED_MODULES = (
    "service/__init__.py",
    "service/errors.py",
    "service/input_limits.py",
    "service/datatypes.py",
    "service/feeds.py",
    "service/manifest.py",
    "service/processing.py",
    "service/codecs/__init__.py",
    "service/codecs/wire.py",
    "service/backends/__init__.py",
    "service/backends/tensor_payload.py",
    "service/backends/torch_module.py",
    "handlers/__init__.py",
    "handlers/decoding.py",
)
DEFAULT_CONFIG_DIR = SOURCE_ROOT / "deploy" / "torchserve" / "model-config"
CONFIG_FILE = "model-config.yaml"


class ArchiveError(RuntimeError):
    """A model cannot be archived; the message says which and why."""


def build_archives(
    model_store: Path,
    out_dir: Path,
    models: list[str] | None = None,
    *,
    config_dir: Path = DEFAULT_CONFIG_DIR,
) -> list[Path]:
    """Write `<out_dir>/<name>.mar` for each model (default: every model with a TorchScript
    artifact, at its highest version); return the archive paths."""
    found = latest_versions(model_store)
    if models is None:
        chosen = {name: path for name, path in found.items() if _has_torchscript(path)}
        skipped = sorted(set(found) - set(chosen))
        if skipped:
            log.warning("no TorchScript artifact, not archived: %s", ", ".join(skipped))
    else:
        missing = [name for name in models if name not in found]
        if missing:
            raise ArchiveError(f"not in {model_store}: {', '.join(missing)}")
        chosen = {name: found[name] for name in models}
    out_dir.mkdir(parents=True, exist_ok=True)
    return [archive_model(path, out_dir, config_dir=config_dir) for path in chosen.values()]


def latest_versions(model_store: Path) -> dict[str, Path]:
    """Model name -> its highest version directory holding a manifest."""
    found: dict[str, Path] = {}
    if not model_store.is_dir():
        return found
    for model_dir in sorted(model_store.iterdir()):
        if not model_dir.is_dir():
            continue
        versions = [
            child
            for child in model_dir.iterdir()
            if child.is_dir() and child.name.isdigit() and (child / MANIFEST_FILE).is_file()
        ]
        if versions:
            found[model_dir.name] = max(versions, key=lambda child: int(child.name))
    return found


def archive_model(
    version_dir: Path, out_dir: Path, *, config_dir: Path = DEFAULT_CONFIG_DIR
) -> Path:
    """One version directory -> `<out_dir>/<name>.mar`."""
    manifest = Manifest.read(version_dir)
    artifact = manifest.artifacts.torchscript
    if artifact is None or not (version_dir / artifact).is_file():
        raise ArchiveError(f"{manifest.name} v{manifest.version} has no TorchScript artifact")
    extra = [version_dir / MANIFEST_FILE]
    if isinstance(manifest.preprocessing, TextPreprocessing):
        extra.append(version_dir / manifest.preprocessing.tokenizer)
    with tempfile.TemporaryDirectory(prefix="mar-") as staging_name:
        staging = Path(staging_name)
        code = staging / "code"
        for module in SHIPPED_MODULES:
            target = code / module
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SOURCE_ROOT / module, target)
        config = staging / CONFIG_FILE
        config.write_text(model_config_text(manifest, config_dir))
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            manifest.name,
            "--version",
            str(manifest.version),
            "--serialized-file",
            str(version_dir / artifact),
            "--handler",
            str(HANDLER_FILE),
            "--extra-files",
            ",".join(str(path) for path in [code, *extra]),
            "--config-file",
            str(config),
            "--export-path",
            str(out_dir),
            "--force",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ArchiveError(
            f"torch-model-archiver failed for {manifest.name}: {done.stderr.strip()[-2000:]}"
        )
    archive = out_dir / f"{manifest.name}.mar"
    log.info("wrote %s (%s v%d)", archive, manifest.name, manifest.version)
    return archive


def model_config_text(manifest: Manifest, config_dir: Path) -> str:
    """`<config_dir>/<name>.yaml`, else `<config_dir>/default.yaml`, else built-in defaults."""
    for candidate in (config_dir / f"{manifest.name}.yaml", config_dir / "default.yaml"):
        if candidate.is_file():
            return candidate.read_text()
    return default_model_config(manifest.batching.max_batch_size)


def default_model_config(max_batch_size: int) -> str:
    return (
        "# Built-in defaults (no model-config file was found for this model).\n"
        "minWorkers: 1\n"
        "maxWorkers: 1\n"
        f"batchSize: {max_batch_size}\n"
        "maxBatchDelay: 5\n"
        "responseTimeout: 60\n"
        "handler:\n"
        "  top_k: 5\n"
    )


def _has_torchscript(version_dir: Path) -> bool:
    artifact = Manifest.read(version_dir).artifacts.torchscript
    return artifact is not None and (version_dir / artifact).is_file()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.torchserve.archive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--out-dir", type=Path, help="where to write (default: the model store)")
    parser.add_argument("--models", help="comma-separated names (default: every model)")
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=DEFAULT_CONFIG_DIR,
        help="directory of <name>.yaml / default.yaml model-config files",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = (
        [name.strip() for name in args.models.split(",") if name.strip()] if args.models else None
    )
    try:
        archives = build_archives(
            args.model_store, args.out_dir or args.model_store, models, config_dir=args.config_dir
        )
    except ArchiveError as error:
        raise SystemExit(f"archives: {error}") from None
    if not archives:
        raise SystemExit(f"archives: no model with a TorchScript artifact in {args.model_store}")


if __name__ == "__main__":
    main()

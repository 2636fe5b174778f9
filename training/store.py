"""The model store layout: `<store>/<name>/<version>/`, published atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.manifest import MANIFEST_FILE
from training.errors import TrainingError

STAGING_PREFIX = ".staging-"


def existing_versions(store: Path, name: str) -> list[int]:
    """Version numbers present for `name` (directories named by an integer), ascending."""
    model_dir = store / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def has_complete_version(store: Path, name: str, marker: str = MANIFEST_FILE) -> bool:
    """True when some version of `name` holds `marker` (the manifest, written last), i.e. a
    finished export."""
    return any(
        (store / name / str(version) / marker).is_file()
        for version in existing_versions(store, name)
    )


def next_version(store: Path, name: str) -> int:
    """One more than the highest existing version, or 1."""
    versions = existing_versions(store, name)
    return versions[-1] + 1 if versions else 1


@contextmanager
def staged_version_dir(store: Path, name: str, version: int) -> Iterator[Path]:
    """Yield a hidden staging directory that becomes `<store>/<name>/<version>` on success.

    On any failure the staging directory is removed, so a half-written version never appears.
    """
    final = store / name / str(version)
    if final.exists():
        raise TrainingError(f"{final} already exists; pick another --version or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the server may run as another user
        if final.exists():
            raise TrainingError(f"{final} appeared while training; not overwriting it")
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

"""Version folders and `version_policy`: which of a model's versions to serve.

As Triton does: a version is a sub-folder named by a non-negative integer without leading
zeros ("0" is one, "01" is not); other folders are ignored. Versions are strings, ordered as
numbers. `latest { num_versions: N }` serves the N highest (the default is latest 1), `all`
serves every one, `specific { versions: [...] }` those listed that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelVersionPolicy

from service.errors import ModelConfigError


def is_version_name(name: str) -> bool:
    return name.isdigit() and name.isascii() and (name == "0" or not name.startswith("0"))


def version_folders(model_dir: Path) -> dict[str, Path]:
    """The version folders of a model folder, in numeric order."""
    found = [
        child for child in model_dir.iterdir() if child.is_dir() and is_version_name(child.name)
    ]
    return {child.name: child for child in sorted(found, key=lambda child: int(child.name))}


def versions_to_serve(policy: ModelVersionPolicy, available: Mapping[str, Path]) -> list[str]:
    """The versions `policy` selects among `available`, in numeric order.

    Raises when it selects none: a model with nothing to serve is reported, not skipped."""
    ordered = sorted(available, key=int)
    chosen: list[str]
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = ordered
    elif which == "specific":
        wanted = {str(version) for version in policy.specific.versions}
        chosen = [version for version in ordered if version in wanted]
        if not chosen:
            raise ModelConfigError(
                f"version_policy: specific versions {sorted(wanted, key=int)} "
                f"have no version folder (folders: {ordered})"
            )
    else:
        count = policy.latest.num_versions if which == "latest" else 1
        if count < 1:
            raise ModelConfigError("version_policy: latest.num_versions must be at least 1")
        chosen = ordered[-count:]
    if not chosen:
        raise ModelConfigError("no version folder (a sub-folder named by a number, like 1/)")
    return chosen


def missing_versions(policy: ModelVersionPolicy, available: Mapping[str, Path]) -> list[str]:
    """Versions a `specific` policy lists that have no folder. Triton logs them as errors and
    serves the others; so should the loader."""
    if policy.WhichOneof("policy_choice") != "specific":
        return []
    return sorted({str(v) for v in policy.specific.versions} - set(available), key=int)

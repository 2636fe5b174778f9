#!/usr/bin/env python3
"""Build the CPU gateway image from the top-level Dockerfile with podman (`make image`).

    python3 deploy/image.py build [--force] [--tag gateway:cpu] [--target gateway-torchserve]
    python3 deploy/image.py base [--refresh]   make the local Debian base (once; cached)
    python3 deploy/image.py inputs             print the hash of what the image is built from

The image is the Dockerfile's `gateway` target with RUNTIME=cpu (`--target gateway-torchserve`:
the gateway with torch and TorchServe's Python side, `gateway-torchserve:cpu`, for the KServe
`pytorch` runtime; torch is the CPU wheel found in this machine's pip find-links, else PyTorch's
CPU index). Its base is given as a build
argument: here a Debian bookworm made locally with mmdebstrap from Debian's packages and
imported into podman (`localhost/debian:bookworm-local`), because no image registry can be
reached from these machines; elsewhere the Dockerfile's default, the public Debian image.

Reuse: the image carries a label with the hash of its inputs (the Dockerfile, .dockerignore,
every file the target's stages COPY, the build arguments with the base image's id, this script
and the podman settings). `build` does nothing when the tagged image has the same hash.

pip inside the build sees the same index as pip on this machine: the pip configuration (files
and PIP_* variables, merged) is written to one pip.conf whose local paths (find-links, file://
indexes, constraints, the CA bundle) point to read-only mounts of those directories under /mnt;
the build argument PIP_CONFIG_FILE names it. Mounts are not part of any layer, and /mnt exists
in the bases, so no mount point is left behind either. Standard library only: it runs before
any virtual environment exists.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
PODMAN = [str(REPO / "deploy" / "podman.sh")]
TAG = "gateway:cpu"
TARGET = "gateway"
TAGS = {"gateway": TAG, "gateway-torchserve": "gateway-torchserve:cpu"}
"""The targets built here and their default tags."""
RUNTIME = "cpu"
BASE = "localhost/debian:bookworm-local"
SUITE = "bookworm"
INPUTS_LABEL = "io.model-serving.inputs"
# Docker's slim Debian images leave these out; so does ours (dpkg keeps excluding them in
# every later apt-get install, build stages included).
SLIM_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/groff/*",
    "/usr/share/lintian/*",
    "/usr/share/linda/*",
)
PIP_CONFIG_FILES = (
    Path("/etc/pip.conf"),
    Path("/etc/xdg/pip/pip.conf"),
    Path.home() / ".config" / "pip" / "pip.conf",
    Path.home() / ".pip" / "pip.conf",
)
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")


class ImageError(RuntimeError):
    """A step failed; the message says which and why."""


def run(command: list[str], capture: bool = False) -> str:
    result = subprocess.run(command, capture_output=capture, text=True, check=False)
    if result.returncode != 0:
        detail = f":\n{result.stdout}\n{result.stderr}" if capture else ""
        raise ImageError(f"{shlex.join(command)} exited {result.returncode}{detail}")
    return result.stdout if capture else ""


def podman(*args: str, capture: bool = True) -> str:
    return run([*PODMAN, *args], capture=capture)


def image_exists(name: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", name], check=False).returncode == 0


def image_inspect(name: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(podman("image", "inspect", name))
    return data[0]


def check_podman() -> None:
    """Fail with podman's own words when it cannot work here (not installed, no storage...)."""
    result = subprocess.run(
        [*PODMAN, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"podman cannot run here:\n{result.stdout}{result.stderr}".rstrip())


# ---- the local base ----


def make_base(refresh: bool = False) -> str:
    """Debian bookworm (Priority: required + apt + ca-certificates, slimmed) as BASE."""
    if image_exists(BASE) and not refresh:
        return BASE
    if os.geteuid() != 0:
        raise ImageError("making the local base needs root (mmdebstrap, podman import)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        excludes = [f"--dpkgopt=path-exclude={path}" for path in SLIM_EXCLUDES]
        excludes.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        # Merged /usr set up by mmdebstrap's hook, as in Docker's debian images: without it
        # bookworm gets the usrmerge package, which pulls in a full perl (~50 MB).
        hooks = [f"--hook-dir={MERGED_USR_HOOK}"] if MERGED_USR_HOOK.is_dir() else []
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--include=ca-certificates",
                *excludes,
                *hooks,
                SUITE,
                str(rootfs),
            ]
        )
        # An imported tarball has no configuration; give it what Docker's debian image has.
        podman(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["bash"]',
            "--message",
            f"mmdebstrap --variant=minbase {SUITE}",
            str(rootfs),
            BASE,
        )
    print(f"image.py: made {BASE} in {time.monotonic() - started:.0f} s", flush=True)
    return BASE


# ---- what the image is built from ----


def logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), value)


def copied_paths(dockerfile: str, target: str, build_args: dict[str, str]) -> list[str]:
    """The build-context paths COPYed by the target and the stages it is built from."""
    args: dict[str, str] = {}
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in logical_lines(dockerfile):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and current is None:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        elif keyword == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            current = []
            name = words[2] if len(words) >= 3 else f"#{len(stages)}"
            stages[name] = (words[0], current)
        elif current is not None:
            current.append(line)
    args.update(build_args)
    sources: list[str] = []
    todo, seen = [target], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        base, instructions = stages[name]
        todo.append(expand(base, args))
        for line in instructions:
            keyword, _, rest = line.partition(" ")
            if keyword.upper() not in ("COPY", "ADD"):
                continue
            words = shlex.split(rest)
            origin = [word for word in words if word.startswith("--from=")]
            if origin:
                todo.append(expand(origin[0].removeprefix("--from="), args))
                continue
            sources += [word for word in words if not word.startswith("--")][:-1]
    return sorted(set(sources))


def dockerignore() -> list[tuple[re.Pattern[str], bool]]:
    patterns = []
    path = REPO / ".dockerignore"
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip("/")
        regex = ""
        for index, part in enumerate(re.split(r"(\*\*/|\*\*|\*|\?)", line)):
            if index % 2 == 0:
                regex += re.escape(part)
            else:
                regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}[part]
        patterns.append((re.compile(regex + "(?:/.*)?"), negate))
    return patterns


def ignored(path: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    result = False
    for pattern, negate in patterns:
        if pattern.fullmatch(path):
            result = not negate
    return result


def context_files(sources: list[str]) -> list[Path]:
    patterns = dockerignore()
    files: list[Path] = []
    for source in sources:
        path = REPO / source
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files += [p for p in candidates if not ignored(str(p.relative_to(REPO)), patterns)]
    return files


def build_args(base: str, target: str = TARGET) -> dict[str, str]:
    # Only the CPU chain is built here; the GPU stages are never reached (RUNTIME=cpu).
    args = {"RUNTIME": RUNTIME, "DEBIAN_IMAGE": base}
    if target == "gateway-torchserve":
        wheel = local_cpu_torch()
        if wheel is not None:  # no PyTorch index from here: the CPU wheel pip can find
            args |= {"TORCH": f"torch=={wheel}", "TORCH_INDEX_URL": ""}
    return args


def local_cpu_torch() -> str | None:
    """The version of a CPU-only torch wheel in pip's find-links directories, if any."""
    links = pip_settings().get("global", {}).get("find-links", "")
    versions = []
    for word in links.split():
        folder = Path(urlparse(word).path if word.startswith("file://") else word)
        if folder.is_dir():
            for wheel in folder.glob("torch-*+cpu-cp311-*.whl"):
                versions.append(wheel.name.split("-")[1])
    return max(versions) if versions else None


def inputs_hash(base: str, target: str = TARGET) -> str:
    args = build_args(base, target)
    digest = hashlib.sha256()
    base_id = str(image_inspect(base)["Id"]) if image_exists(base) else "absent"
    digest.update(json.dumps({"args": args, "base": base_id, "target": target}).encode())
    fixed = [
        DOCKERFILE,
        REPO / ".dockerignore",
        Path(__file__).resolve(),
        REPO / "deploy" / "podman.sh",
        REPO / "deploy" / "podman" / "containers.conf",
    ]
    files = fixed + context_files(copied_paths(DOCKERFILE.read_text(), target, args))
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"-")
    return digest.hexdigest()


# ---- pip inside the build ----

# Where the build sees this machine's pip settings: /mnt exists, empty, in Debian and Ubuntu
# images, so mounting there leaves no mount-point stub in any layer (a new path would).
PIP_MOUNT = Path("/mnt")


def pip_settings() -> dict[str, dict[str, str]]:
    """This machine's pip configuration, merged as pip merges it: site files, then the user's,
    then PIP_* variables (later wins)."""
    merged: dict[str, dict[str, str]] = {}
    for config in PIP_CONFIG_FILES:
        if not config.is_file():
            continue
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(config)
        for section in parser.sections():
            merged.setdefault(section, {}).update(parser.items(section))
    for key, value in os.environ.items():
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            merged.setdefault("global", {})[key[4:].lower().replace("_", "-")] = value
    return merged


def _local_root(value: str) -> tuple[Path, str] | None:
    """(directory to mount, path below it) for a local path or file:// URL, else None."""
    path_text = urlparse(value).path if value.startswith("file://") else value
    if not path_text.startswith("/"):
        return None
    path = Path(path_text)
    if not path.exists():
        return None
    directory = path if path.is_dir() else path.parent
    # A PEP 503 index `<root>/simple` links its files by relative URLs (../../files/...).
    if directory.name == "simple" or directory.parent.name == "simple":
        directory = directory.parent if directory.name == "simple" else directory.parent.parent
    return directory, str(path.relative_to(directory))


def pip_build_config(scratch: Path) -> list[str]:
    """podman build flags that give the build's pip this machine's index and settings.

    Writes SCRATCH/pip.conf with every local path rewritten to where it is mounted, mounts
    SCRATCH at /mnt and each local directory read-only below it, and sets PIP_CONFIG_FILE
    through a build argument (a path, nothing secret, in the image history).
    """
    mounts: dict[Path, str] = {}
    config = configparser.ConfigParser(interpolation=None)
    for section, values in pip_settings().items():
        config[section] = {}
        for key, value in values.items():
            words = []
            for word in value.split():
                local = _local_root(word)
                if local is None:
                    words.append(word)
                    continue
                directory, below = local
                name = mounts.setdefault(directory, f"d{len(mounts)}")
                inside = PIP_MOUNT / name / below if below != "." else PIP_MOUNT / name
                words.append(f"file://{inside}" if word.startswith("file://") else str(inside))
            config[section][key] = "\n".join(words) if len(words) > 1 else " ".join(words)
    with (scratch / "pip.conf").open("w") as out:
        config.write(out)
    flags = ["--volume", f"{scratch}:{PIP_MOUNT}:ro"]
    for directory, name in mounts.items():
        (scratch / name).mkdir()
        flags += ["--volume", f"{directory}:{PIP_MOUNT / name}:ro"]
    return [*flags, "--build-arg", f"PIP_CONFIG_FILE={PIP_MOUNT / 'pip.conf'}"]


# ---- build ----


def build(tag: str | None = None, force: bool = False, target: str = TARGET) -> dict[str, object]:
    """Build (or reuse) the image; a summary of what happened."""
    tag = tag or TAGS[target]
    check_podman()
    base = make_base()
    wanted = inputs_hash(base, target)
    if not force and image_exists(tag):
        labels = image_inspect(tag).get("Labels") or {}
        if isinstance(labels, dict) and labels.get(INPUTS_LABEL) == wanted:
            print(f"image.py: {tag} is up to date (inputs {wanted[:12]})", flush=True)
            return {"tag": tag, "built": False, "inputs": wanted, "seconds": 0.0}
    previous = str(image_inspect(tag)["Id"]) if image_exists(tag) else None
    args = build_args(base, target)
    command = [
        "build",
        "--format",
        "docker",  # OCI image configs have no HEALTHCHECK; the image must keep it
        "--file",
        str(DOCKERFILE),
        "--target",
        target,
        *(flag for key, value in args.items() for flag in ("--build-arg", f"{key}={value}")),
        "--label",
        f"{INPUTS_LABEL}={wanted}",
        *(["--no-cache"] if force else []),
        "--tag",
        tag,
        str(REPO),
    ]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-pip-") as scratch:
        Path(scratch).chmod(0o755)
        pip = pip_build_config(Path(scratch))
        command[-3:-3] = pip
        print(f"image.py: podman {shlex.join(command)}", flush=True)
        podman(*command, capture=False)
    seconds = time.monotonic() - started
    if previous is not None and previous != str(image_inspect(tag)["Id"]):
        # The image the tag pointed to before, now untagged; its layers stay in the cache.
        subprocess.run([*PODMAN, "rmi", previous], capture_output=True, check=False)
    # Every rebuild leaves untagged intermediate images (the layer cache, ~0.5 GB when the venv
    # changed); those a day old go, so a CI machine's store stays bounded.
    subprocess.run(
        [*PODMAN, "image", "prune", "--force", "--filter", "until=24h"],
        capture_output=True,
        check=False,
    )
    print(f"image.py: built {tag} in {seconds:.0f} s", flush=True)
    return {"tag": tag, "built": True, "inputs": wanted, "seconds": seconds}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build or reuse the CPU gateway image")
    build_command.add_argument("--tag", default=None, help="default: gateway:cpu per target")
    build_command.add_argument("--target", default=TARGET, choices=sorted(TAGS))
    build_command.add_argument(
        "--force", action="store_true", help="rebuild every layer, even if up to date"
    )
    build_command.add_argument("--json", action="store_true", help="print a JSON summary")
    base_command = commands.add_parser("base", help="make the local Debian base image")
    base_command.add_argument("--refresh", action="store_true", help="remake it (updates)")
    commands.add_parser("inputs", help="print the hash of the image's inputs")
    options = parser.parse_args(argv)
    try:
        if options.command == "build":
            summary = build(options.tag, options.force, options.target)
            if options.json:
                print(json.dumps(summary))
        elif options.command == "base":
            check_podman()
            print(make_base(options.refresh))
        else:
            print(inputs_hash(BASE))
    except (ImageError, OSError) as error:
        print(f"image.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

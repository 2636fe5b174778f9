"""`python -m service` flags, derived from `Settings`: help, spellings, lists, precedence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import __main__ as cli
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `GATEWAY_*` variables and no `.env` from the developer's shell or checkout."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_help_lists_every_setting_with_its_docstring() -> None:
    env = {**os.environ, "COLUMNS": "10000"}  # no wrapping: descriptions stay on one line
    done = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(done.stdout.split())
    assert text.startswith("usage: python -m service")
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no docstring"
        assert flag(name) in text
        assert " ".join(field.description.split()) in text, name
        assert f"GATEWAY_{name.upper()}" in text


def test_existing_flags_keep_their_spelling() -> None:
    settings = cli.settings_from_args(
        [
            "--host", "0.0.0.0",
            "--port", "9001",
            "--model-store", "store",
            "--models", "tab,img",
            "--backend", "torchserve",
            "--device", "cuda",
            "--providers", "CUDAExecutionProvider,CPUExecutionProvider",
            "--instances", "2",
            "--max-batch-size", "16",
            "--max-queue-size", "64",
            "--max-queue-delay-ms", "2.5",
            "--intra-op-threads", "1",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    assert settings.host == "0.0.0.0"
    assert settings.port == 9001
    assert settings.model_store == Path("store")
    assert settings.models == ["tab", "img"]
    assert settings.backend == "torchserve"
    assert settings.device == "cuda"
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.instances == 2
    assert settings.max_batch_size == 16
    assert settings.max_queue_size == 64
    assert settings.max_queue_delay_ms == 2.5
    assert settings.intra_op_threads == 1
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    "args",
    [
        ["--models", "tab,img"],
        ["--models", '["tab", "img"]'],
        ["--models", "tab", "--models", "img"],
        ["--models=tab,img"],
    ],
)
def test_lists_take_commas_json_or_repeats(args: list[str]) -> None:
    assert cli.settings_from_args(args).models == ["tab", "img"]


def test_booleans_are_flags_and_new_settings_are_flags_too() -> None:
    settings = cli.settings_from_args(["--no-grpc-enabled", "--grpc-port", "9002", "--fp16"])
    assert settings.grpc_enabled is False
    assert settings.grpc_port == 9002
    assert settings.fp16 is True
    assert cli.settings_from_args([]).grpc_enabled is True


def test_flags_override_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=9100\nGATEWAY_TOP_K=3\nGATEWAY_INSTANCES=4\n")
    monkeypatch.setenv("GATEWAY_PORT", "9200")
    monkeypatch.setenv("GATEWAY_MAX_QUEUE_SIZE", "7")
    monkeypatch.setenv("GATEWAY_MODELS", '["env"]')
    settings = cli.settings_from_args(["--port", "9300", "--instances", "5"])
    assert settings.port == 9300  # flag over environment over .env
    assert settings.instances == 5  # flag over .env
    assert settings.max_queue_size == 7  # environment, no flag
    assert settings.models == ["env"]
    assert settings.top_k == 3  # .env, nothing else
    assert cli.settings_from_args([]).port == 9200  # environment over .env


def test_settings_in_code_never_read_sys_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest", "--port", "1234", "--no-such-flag"])
    assert Settings(_env_file=None).port == 8000  # type: ignore[call-arg]
    assert cli.settings_from_args([]).port == 8000


def test_without_argv_the_process_arguments_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m service", "--port", "1234"])
    assert cli.settings_from_args().port == 1234


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "nope"], "port: Input should be a valid integer"),
        (["--port", "70000"], "port: Input should be less than or equal to 65535"),
        (["--backend", "tensorflow"], "backend: Input should be 'onnxruntime'"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_before_serving(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def serve(_settings: Settings) -> None:
        raise AssertionError("the gateway must not start")

    monkeypatch.setattr("service.server.run", serve)
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_list_settings_read_commas_or_json_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_MODELS", "iris, digits")
    monkeypatch.setenv("GATEWAY_PROVIDERS", '["CUDAExecutionProvider", "CPUExecutionProvider"]')
    settings = Settings()
    assert settings.models == ["iris", "digits"]
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]

"""Which TorchServe envelope is in force: the setting (TS_SERVICE_ENVELOPE), then
config.properties, then KServe's choice for PROTOCOL_VERSION."""

from __future__ import annotations

import pytest

from service.errors import InvalidInput
from service.native.envelope import service_envelope
from service.settings import Settings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("TS_SERVICE_ENVELOPE", "PROTOCOL_VERSION", "GATEWAY_TORCHSERVE_ENVELOPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("env", "configured", "expected"),
    [
        ({}, "", ""),
        ({"TS_SERVICE_ENVELOPE": "kservev2"}, "kserve", "kservev2"),
        ({"GATEWAY_TORCHSERVE_ENVELOPE": "kserve"}, "", "kserve"),
        # KServe renders a missing serviceEnvelope label as Go's "<no value>".
        ({"TS_SERVICE_ENVELOPE": "<no value>"}, "kserve", "kserve"),
        ({"TS_SERVICE_ENVELOPE": "<no value>", "PROTOCOL_VERSION": "v2"}, "", "kservev2"),
        ({"PROTOCOL_VERSION": "grpc-v2"}, "", "kservev2"),
        ({"PROTOCOL_VERSION": "v1"}, "", "kserve"),
        ({"PROTOCOL_VERSION": "v1"}, "json", "json"),
    ],
)
def test_envelope_precedence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], configured: str, expected: str
) -> None:
    assert service_envelope(settings(monkeypatch, **env), configured) == expected


def test_an_unknown_envelope_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="not one of TorchServe's"):
        service_envelope(settings(monkeypatch, TS_SERVICE_ENVELOPE="kserve3"))


def test_the_setting_is_read_from_torchserves_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, TS_SERVICE_ENVELOPE="kserve").torchserve_envelope == "kserve"
    assert settings(monkeypatch, PROTOCOL_VERSION="grpc-v2").protocol_version == "grpc-v2"

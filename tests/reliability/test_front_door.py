"""The HTTP front door of a real gateway process, probed with raw sockets: a body without end,
a client gone mid-body, connections that never send a request, and oversized headers. Each is
answered or closed within its bound while the health probe keeps answering."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import GatewayProcess, gateway, sample_total
from tests.tiny_models import full_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1024 * 1024
BODY_LIMIT = 1 * MB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("front-door")
    store = full_store(root / "store")
    env = {"GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT)}
    with gateway(store, root, env=env) as process:
        yield process


def connect(server: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def infer_head(extra: str) -> bytes:
    return (
        "POST /v2/models/tab/infer HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_a_body_without_end_gets_413_and_its_connection_closed(server: GatewayProcess) -> None:
    """Chunks sent as fast as the server takes them: after the 413 the server must end the
    connection, not read (and discard) the body for as long as the client sends."""
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"0" * 64 * 1024)
    with connect(server) as sock:
        sock.sendall(infer_head("Transfer-Encoding: chunked\r\n"))
        sock.setblocking(False)
        answer = b""
        sent = sent_after = 0
        answered_at: float | None = None
        closed = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not closed:
            if answered_at is not None and time.monotonic() - answered_at > 5:
                break
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed = True
                    break
                answer += data
                if answered_at is None and b"\r\n\r\n" in answer:
                    answered_at = time.monotonic()
            if writable:
                try:
                    count = sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sent += count
                if answered_at is not None:
                    sent_after += count
    print(
        f"sent {sent / MB:.1f} MB, {sent_after / MB:.1f} MB of it after the answer; "
        f"closed: {closed}; answer: {answer[:12]!r}"
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert closed, f"still open 5 s after the 413, {sent_after / MB:.0f} MB read meanwhile"
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def test_a_client_gone_mid_body_is_recorded_as_499(server: GatewayProcess) -> None:
    def gone_total() -> float:
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        return sample_total(metrics, "gateway_requests_total", model="tab", code="499")

    def errors_total() -> float:
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        return sample_total(metrics, "gateway_requests_total", model="tab", code="500")

    before, errors_before = gone_total(), errors_total()
    for _ in range(3):
        with connect(server) as sock:
            sock.sendall(infer_head("Content-Length: 100000\r\n") + b'{"inputs": [')
    deadline = time.monotonic() + 10
    while gone_total() < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server's own metric: nothing to await from here
    assert gone_total() == before + 3
    assert errors_total() == errors_before
    assert "Traceback" not in server.output()

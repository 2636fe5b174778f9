"""The HTTP front door of a real gateway process, probed with raw sockets: a body without end,
a client gone mid-body, connections that never send a request, oversized headers, and bodies
trickled past their deadline. Each is answered or closed within its bound while the health
probe keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability.probes import HealthProbe, PeakRss
from tests.servers import GatewayProcess, gateway, sample_total
from tests.tiny_models import full_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1024 * 1024
BODY_LIMIT = 1 * MB
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 3.0
SILENT = 200
SLOW_BODIES = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("front-door")
    store = full_store(root / "store")
    env = {
        "GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT),
        "GATEWAY_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GATEWAY_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "GATEWAY_GRPC_HANDSHAKE_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GATEWAY_GRPC_MAX_CONNECTION_IDLE_S": str(HEADER_TIMEOUT_S),
    }
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


def tab_total(server: GatewayProcess, code: str) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sample_total(metrics, "gateway_requests_total", model="tab", code=code)


def test_a_client_gone_mid_body_is_recorded_as_499(server: GatewayProcess) -> None:
    def gone_total() -> float:
        return tab_total(server, "499")

    def errors_total() -> float:
        return tab_total(server, "500")

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


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def wait_closed(
    sockets: list[socket.socket], timeout_s: float, trickle: list[socket.socket] | None = None
) -> tuple[dict[socket.socket, bytes], float]:
    """Read each socket until the server closes it (or `timeout_s` passes); sends one byte a
    tenth of a second to the `trickle` ones meanwhile. Returns what each received, and when
    the last one closed (seconds)."""
    started = time.monotonic()
    received = {sock: b"" for sock in sockets}
    open_ = set(sockets)
    while open_ and time.monotonic() - started < timeout_s:
        readable, _, _ = select.select(list(open_), [], [], 0.1)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            received[sock] += data
            if not data:
                open_.discard(sock)
        for sock in trickle or []:
            if sock in open_:
                try:
                    sock.send(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    open_.discard(sock)
    assert not open_, f"{len(open_)} of {len(sockets)} still open after {timeout_s} s"
    return received, time.monotonic() - started


def test_connections_that_never_finish_their_headers_are_closed(server: GatewayProcess) -> None:
    pid = server.process.pid
    baseline = open_descriptors(pid)
    silent = [connect(server) for _ in range(SILENT)]
    partial = [connect(server) for _ in range(20)]
    trickling = [connect(server) for _ in range(5)]
    for sock in partial:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: gateway\r\n")
    for sock in trickling:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nX-Slow: ")
    held = open_descriptors(pid)
    with HealthProbe(server.url) as probe:
        received, seconds = wait_closed(
            silent + partial + trickling, 4 * HEADER_TIMEOUT_S, trickling
        )
    try:
        print(
            f"{len(received)} connections ({held - baseline} descriptors) closed within "
            f"{seconds:.2f} s; slowest health probe {probe.worst_s * 1000:.0f} ms"
        )
        assert all(received[sock] == b"" for sock in silent)
        assert all(received[sock].startswith(b"HTTP/1.1 408") for sock in partial + trickling)
        assert probe.worst_s < 1.0
        assert open_descriptors(pid) <= baseline + 5
    finally:
        for sock in silent + partial + trickling:
            sock.close()


def test_headers_over_the_bounds_are_431_and_closed(server: GatewayProcess) -> None:
    big = (
        b"GET /v2/health/ready HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    )
    many = (
        b"GET /v2/health/ready HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(b"X-H%d: v\r\n" % index for index in range(1_000))
        + b"\r\n"
    )
    with HealthProbe(server.url) as probe:
        for request in (big, many):
            with connect(server) as sock:
                sock.sendall(request)
                received, _ = wait_closed([sock], 5)
                answer = received[sock]
                assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
                assert b'{"error":' in answer
        # A header without end: the server stops reading at the bound instead of parsing on.
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
            sent = 0
            try:
                while sent < 200 * MB:
                    sent += sock.send(b"a" * MB)
            except (BrokenPipeError, ConnectionResetError):
                pass
    print(
        f"endless header: closed after {sent / MB:.1f} MB sent; slowest probe {probe.worst_s:.3f} s"
    )
    assert sent < 200 * MB
    assert probe.worst_s < 1.0
    normal = httpx.get(f"{server.url}/v2/health/ready", headers={"X-Ok": "a" * 4096}, timeout=5)
    assert normal.status_code == 200


async def test_grpc_connections_that_never_speak_or_idle_are_closed(server: GatewayProcess) -> None:
    silent = [socket.create_connection(("127.0.0.1", server.grpc_port)) for _ in range(SILENT)]
    try:
        _, seconds = wait_closed(silent, 4 * HEADER_TIMEOUT_S)
    finally:
        for sock in silent:
            sock.close()
    print(f"{SILENT} silent gRPC connections closed within {seconds:.2f} s")
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        started = time.monotonic()
        await asyncio.wait_for(
            channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 4 * HEADER_TIMEOUT_S
        )
        print(f"idle gRPC connection closed by the server after {time.monotonic() - started:.2f} s")
        assert channel.get_state() != grpc.ChannelConnectivity.READY


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compression_bombs_are_413_within_the_body_limit(
    server: GatewayProcess, encoding: str
) -> None:
    """Held before (kept as a test): ~1 MB that inflates to 1 GiB is refused once the body
    limit is inflated, never inflated whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    zeros = bytes(MB)
    bomb = b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush()
    assert len(bomb) < BODY_LIMIT
    with PeakRss(server.process.pid) as peak, HealthProbe(server.url) as probe:
        answer = httpx.post(
            f"{server.url}/v2/models/tab/infer",
            content=bomb,
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
            timeout=30,
        )
    print(
        f"{encoding} bomb of {len(bomb) // 1024} KB (1 GiB inflated): {answer.status_code}, "
        f"peak RSS +{peak.growth_mb:.0f} MB, slowest probe {probe.worst_s * 1000:.0f} ms"
    )
    assert answer.status_code == 413, answer.text
    assert "decompressed body exceeds" in answer.json()["error"]
    assert peak.growth_mb < 50
    assert probe.worst_s < 1.0


TAB_BODY = (
    b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}'
)


def trickle_until_closed(
    heads: dict[socket.socket, bytes], drip: dict[socket.socket, bytes], timeout_s: float
) -> tuple[dict[socket.socket, bytes], dict[socket.socket, float]]:
    """Send each socket its request head, then its `drip` every 0.2 s until the server closes
    it (or `timeout_s` passes). Returns what each received and how long after its head it was
    closed (sockets still open have no time)."""
    sent_at = {}
    for sock, head in heads.items():
        sock.sendall(head)
        sent_at[sock] = time.monotonic()
    sockets = list(heads)
    received = {sock: b"" for sock in sockets}
    closed_after: dict[socket.socket, float] = {}
    open_ = set(sockets)
    started = next_drip = time.monotonic()
    while open_ and time.monotonic() - started < timeout_s:
        readable, _, _ = select.select(list(open_), [], [], 0.05)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            received[sock] += data
            if not data:
                open_.discard(sock)
                closed_after[sock] = time.monotonic() - sent_at[sock]
        if time.monotonic() >= next_drip:
            next_drip += 0.2
            for sock in list(open_):
                # Closed by the server: its reader sees the end next.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.send(drip[sock])
    return received, closed_after


def split_answer(answer: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.lower().split(b"\r\n"), body


def test_a_body_trickled_past_its_deadline_gets_408_and_its_connection_closed(
    server: GatewayProcess,
) -> None:
    """Complete headers, then a byte of a 100,000-byte body every 0.2 s: the body deadline
    (absolute, not moved by the trickle) answers 408 and closes; the route sees a client
    gone (499), with no traceback."""
    gone_before, errors_before = tab_total(server, "499"), tab_total(server, "500")
    with connect(server) as sock, HealthProbe(server.url) as probe:
        head = infer_head("Content-Length: 100000\r\n") + b'{"inputs": ['
        received, closed_after = trickle_until_closed({sock: head}, {sock: b" "}, 10)
    assert sock in closed_after, f"still open 10 s after its headers; received {received[sock]!r}"
    seconds = closed_after[sock]
    lines, body = split_answer(received[sock])
    print(
        f"trickled body: {lines[0]!r} {body!r} after {seconds:.2f} s (deadline "
        f"{BODY_TIMEOUT_S} s); slowest health probe {probe.worst_s * 1000:.0f} ms"
    )
    assert lines[0].startswith(b"http/1.1 408"), received[sock][:200]
    assert b"connection: close" in lines
    assert json.loads(body) == {"error": f"request body not received within {BODY_TIMEOUT_S:g} s"}
    assert BODY_TIMEOUT_S - 0.1 <= seconds < BODY_TIMEOUT_S + 2.0
    assert probe.worst_s < 1.0
    deadline = time.monotonic() + 10
    while tab_total(server, "499") < gone_before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server's own metric: nothing to await from here
    assert tab_total(server, "499") == gone_before + 1
    assert tab_total(server, "500") == errors_before
    assert "Traceback" not in server.output()


def test_many_slow_bodies_are_all_closed_by_the_deadline(server: GatewayProcess) -> None:
    """Half declare 100,000 bytes and trickle them, half send a chunked body whose chunks
    trickle without end: every connection gets its 408 and is closed at its deadline, and the
    server answers inference afterwards."""
    pid = server.process.pid
    baseline = open_descriptors(pid)
    gone_before = tab_total(server, "499")
    sockets = [connect(server) for _ in range(SLOW_BODIES)]
    heads, drip = {}, {}
    for index, sock in enumerate(sockets):
        if index % 2:
            heads[sock] = infer_head("Content-Length: 100000\r\n") + b'{"inputs": ['
            drip[sock] = b" "
        else:
            heads[sock] = infer_head("Transfer-Encoding: chunked\r\n") + b'c\r\n{"inputs": [\r\n'
            drip[sock] = b"1\r\n \r\n"
    try:
        with HealthProbe(server.url) as probe:
            received, closed_after = trickle_until_closed(heads, drip, 10)
        answered_408 = sum(received[sock].startswith(b"HTTP/1.1 408") for sock in sockets)
        latest = max(closed_after.values(), default=0.0)
        print(
            f"{SLOW_BODIES} slow bodies: {len(closed_after)} closed, {answered_408} with 408, "
            f"the last {latest:.2f} s after its headers (deadline {BODY_TIMEOUT_S} s); "
            f"slowest health probe {probe.worst_s * 1000:.0f} ms"
        )
        assert len(closed_after) == SLOW_BODIES, f"{SLOW_BODIES - len(closed_after)} still open"
        assert answered_408 == SLOW_BODIES
        assert min(closed_after.values()) >= BODY_TIMEOUT_S - 0.1
        assert latest < BODY_TIMEOUT_S + 2.0
        assert probe.worst_s < 1.0
    finally:
        for sock in sockets:
            sock.close()
    answer = httpx.post(
        f"{server.url}/v2/models/tab/infer",
        content=TAB_BODY,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while tab_total(server, "499") < gone_before + SLOW_BODIES and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tab_total(server, "499") == gone_before + SLOW_BODIES
    after = open_descriptors(pid)
    print(f"descriptors {baseline} before, {after} after; inference 200 after")
    assert after <= baseline + 5
    assert "Traceback" not in server.output()


def read_answer(sock: socket.socket) -> tuple[list[bytes], bytes]:
    """One answer with a Content-Length, read whole."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        assert data, f"closed before an answer: {answer!r}"
        answer += data
    lines, body = split_answer(answer)
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    while len(body) < length:
        data = sock.recv(65536)
        assert data, f"closed mid-answer: {answer!r}"
        body += data
    return lines, body


def test_a_body_in_many_slices_within_the_deadline_is_answered(server: GatewayProcess) -> None:
    """A ~1 MB body sent in 64 KB pieces with pauses, within the deadline, is answered 200;
    its timer is gone after: the connection, idle past the deadline, serves another request."""
    piece = 64 * 1024
    body = TAB_BODY + b" " * (BODY_LIMIT - 4096 - len(TAB_BODY))
    pieces = [body[start : start + piece] for start in range(0, len(body), piece)]
    with connect(server) as sock:
        sock.sendall(infer_head(f"Content-Length: {len(body)}\r\n"))
        started = time.monotonic()
        for part in pieces:
            time.sleep(0.02)
            sock.sendall(part)
        lines, answer = read_answer(sock)
        upload_s = time.monotonic() - started
        print(f"{len(body)} bytes in {len(pieces)} pieces over {upload_s:.2f} s: {lines[0]!r}")
        assert upload_s < BODY_TIMEOUT_S
        assert lines[0].startswith(b"http/1.1 200"), answer[:200]
        assert json.loads(answer)["outputs"]
        time.sleep(BODY_TIMEOUT_S + 0.5)
        sock.sendall(infer_head(f"Content-Length: {len(TAB_BODY)}\r\n") + TAB_BODY)
        lines, answer = read_answer(sock)
        assert lines[0].startswith(b"http/1.1 200"), answer[:200]


def test_a_keep_alive_connection_outlives_the_header_deadline(server: GatewayProcess) -> None:
    """Between requests only the keep-alive timeout applies: a request that arrived whole in
    one slice leaves no header deadline behind. Bytes that begin no request (a stray CRLF)
    stop uvicorn's keep-alive timer, so they get the header deadline."""
    request = infer_head(f"Content-Length: {len(TAB_BODY)}\r\n") + TAB_BODY
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(request)
            lines, answer = read_answer(sock)
            assert lines[0].startswith(b"http/1.1 200"), answer[:200]
            time.sleep(HEADER_TIMEOUT_S + 0.5)
        sock.sendall(b"\r\n")
        _, seconds = wait_closed([sock], 4 * HEADER_TIMEOUT_S)
    print(f"stray CRLF after an answer: closed after {seconds:.2f} s")
    assert seconds < HEADER_TIMEOUT_S + 1.0

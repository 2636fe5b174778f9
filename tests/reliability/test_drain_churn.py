"""SIGTERM under connection churn: every request on a new connection, 32 senders, through the
signal and the listener's close. A request whose connection was accepted is always answered
(200 before the signal, 503 + Retry-After + `Connection: close` during the drain); a connect
refused once the listener is gone is not a lost request — the client knows nothing was sent."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import gateway
from tests.tiny_models import full_store

pytestmark = pytest.mark.integration

SENDERS = 32
SIGNAL_AFTER_S = 2.0
DRAIN_SECONDS = 3.0
# Senders stop when their connect is refused (the listener is closed) or at this cap.
SENDER_CAP_S = SIGNAL_AFTER_S + DRAIN_SECONDS + 12.0
# Every fourth sender waits this long between connect() and sending, like a client across a
# network: its connection is accepted but idle when the listener closes.
SLOW_SEND_S = 0.05


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # connected, no complete HTTP answer
    refused: int = 0  # connect() refused: nothing was sent
    connect_errors: list[str] = field(default_factory=list)  # other connect failures: not sent
    bad_503: list[str] = field(default_factory=list)  # 503 without Retry-After/Connection: close
    answered: int = 0
    warmed: asyncio.Event = field(default_factory=asyncio.Event)


def request_bytes(port: int) -> bytes:
    body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.5] * 4}]}
    ).encode()
    # HTTP/1.1 without `Connection: close`: closing after the answer is the server's call
    # during a drain (and the client's here, after reading one answer).
    head = (
        f"POST /v2/models/tab/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_request(port: int, payload: bytes, tally: Tally, pause_s: float) -> bool:
    """Send one request on a new connection; False once the server refuses connections."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        tally.refused += 1
        return False
    except OSError as error:
        tally.connect_errors.append(repr(error))
        return True
    try:
        if pause_s:
            await asyncio.sleep(pause_s)
        writer.write(payload)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        await reader.readexactly(int(headers.get("content-length", "0")))
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        tally.lost.append(repr(error))
        return True
    finally:
        writer.close()
    tally.statuses[status] += 1
    tally.answered += 1
    if status == 503 and (
        "retry-after" not in headers or "close" not in headers.get("connection", "").lower()
    ):
        tally.bad_503.append(repr(headers))
    if tally.answered >= SENDERS * 20:
        tally.warmed.set()
    return True


async def sender(port: int, payload: bytes, tally: Tally, stop_at: float, pause_s: float) -> None:
    while time.monotonic() < stop_at:
        if not await one_request(port, payload, tally, pause_s):
            return


async def test_sigterm_under_connection_churn_answers_every_accepted_request(
    tmp_path: Path,
) -> None:
    store = full_store(tmp_path / "store")
    env = {"GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    with gateway(store, tmp_path, env=env) as server:
        tally = Tally()
        payload = request_bytes(server.port)
        started = time.monotonic()
        senders = [
            asyncio.create_task(
                sender(
                    server.port,
                    payload,
                    tally,
                    started + SENDER_CAP_S,
                    SLOW_SEND_S if index % 4 == 0 else 0.0,
                )
            )
            for index in range(SENDERS)
        ]
        # Signal once every sender is in its stride, and no earlier than SIGNAL_AFTER_S.
        await asyncio.wait_for(tally.warmed.wait(), timeout=20)
        await asyncio.sleep(max(0.0, started + SIGNAL_AFTER_S - time.monotonic()))
        before = tally.answered
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*senders), timeout=SENDER_CAP_S + 10)
        stopped = time.monotonic()
        code = await asyncio.to_thread(server.process.wait, 30)
    sent = tally.answered + len(tally.lost)
    print(
        f"\ndrain churn: {sent} requests on new connections ({before} before the signal), "
        f"{dict(tally.statuses)}, lost (connected, no answer) {len(tally.lost)}, "
        f"refused connects {tally.refused}, other connect errors {len(tally.connect_errors)}; "
        f"senders stopped {stopped - signalled:.1f} s after the signal; exit code {code}"
    )
    assert tally.lost == [], f"{len(tally.lost)} accepted requests got no answer: {tally.lost[:5]}"
    assert set(tally.statuses) <= {200, 503}, tally.statuses
    assert tally.bad_503 == [], tally.bad_503[:3]
    # The drain accepted and answered traffic, and the listener closed while it still came.
    assert tally.statuses[503] >= SENDERS
    assert tally.refused >= 1
    assert code == 0

"""The fast path's request: the same headers and body starlette's `Request` gives."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from service.fastpath import FirstValueHeaders, HotRequest

RAW = [
    (b"host", b"127.0.0.1"),
    (b"x-twice", b"first"),
    (b"content-type", b"application/json"),
    (b"x-twice", b"second"),
    (b"x-latin", "caf\u00e9".encode("latin-1")),
]


def _scope() -> dict[str, object]:
    return {"type": "http", "method": "POST", "path": "/", "headers": list(RAW)}


def _receiver(messages: list[Message]):  # type: ignore[no-untyped-def]
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


async def _unused_send(message: Message) -> None:
    raise AssertionError("nothing is sent")


@pytest.mark.parametrize(
    "name", ["host", "Content-Type", "X-TWICE", "x-latin", "authorization", "x-request-timeout-ms"]
)
def test_headers_answer_as_starlettes(name: str) -> None:
    ours = FirstValueHeaders(list(RAW))
    theirs = Request(_scope()).headers
    assert ours.get(name) == theirs.get(name)
    assert ours.get(name, "default") == theirs.get(name, "default")
    assert (name in ours) == (name in theirs)
    assert ours.getlist(name) == theirs.getlist(name)


BODIES: list[list[Message]] = [
    [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}],
    [{"type": "http.request"}],
    [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ],
]


@pytest.mark.parametrize("messages", BODIES)
def test_body_is_starlettes(messages: list[Message]) -> None:
    async def both() -> tuple[bytes, bytes, bytes]:
        ours = HotRequest(_scope(), _receiver(messages), _unused_send)
        theirs = Request(_scope(), _receiver(messages), _unused_send)
        body = await ours.body()
        again = await ours.body()  # read once, kept
        return body, again, await theirs.body()

    body, again, expected = asyncio.run(both())
    assert body == again == expected


def test_body_then_stream_and_form_reads_see_the_same_bytes() -> None:
    async def read() -> list[bytes]:
        messages: list[Message] = [{"type": "http.request", "body": b"x=1", "more_body": False}]
        request = HotRequest(_scope(), _receiver(messages), _unused_send)
        await request.body()
        return [chunk async for chunk in request.stream()]

    assert b"".join(asyncio.run(read())) == b"x=1"


def test_client_gone_mid_body_is_starlettes_disconnect() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def read(request: Request) -> None:
        await request.body()

    for kind in (HotRequest, Request):
        request = kind(_scope(), _receiver(messages), _unused_send)
        with pytest.raises(ClientDisconnect):
            asyncio.run(read(request))
        assert request._is_disconnected  # what `is_disconnected()` reports afterwards


def test_a_consumed_stream_is_refused_alike() -> None:
    async def read(kind: type[Request]) -> str:
        messages: list[Message] = [{"type": "http.request", "body": b"ab"}]
        request = kind(_scope(), _receiver(messages), _unused_send)
        async for _chunk in request.stream():
            pass
        with pytest.raises(RuntimeError) as refused:
            await request.body()
        return str(refused.value)

    assert asyncio.run(read(HotRequest)) == asyncio.run(read(Request))

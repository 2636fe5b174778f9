"""The front end's frames, read by TorchServe's own worker-side codec (and its replies read
back), over a real socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest

from service.native.frames import (
    HandlerRequest,
    Parameter,
    encode_load,
    encode_predict,
    read_reply,
)

otf = pytest.importorskip("ts.protocol.otf_message_handler")


def _worker_reads(frame: bytes) -> tuple[bytes, object]:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frame)
        cmd, msg = otf.retrieve_msg(right)
    return cmd, msg


def test_load_command_is_read_by_torchserve() -> None:
    cmd, msg = _worker_reads(
        encode_load(
            model_name="digits",
            model_path="/tmp/x",
            batch_size=8,
            handler="handler.py",
            gpu_id=2,
        )
    )
    assert cmd == b"L"
    assert msg == {
        "modelName": b"digits",
        "modelPath": b"/tmp/x",
        "batchSize": 8,
        "handler": b"handler.py",
        "gpu": 2,
        "envelope": b"",
        "limitMaxImagePixels": True,
    }


def test_cpu_load_sends_no_gpu() -> None:
    _, msg = _worker_reads(
        encode_load(model_name="m", model_path="/p", batch_size=1, handler="h", gpu_id=None)
    )
    assert isinstance(msg, dict) and "gpu" not in msg


def test_a_batch_is_decoded_as_torchserve_decodes_it() -> None:
    batch = [
        HandlerRequest(
            "a",
            (Parameter("body", b'{"x": [1, 2]}', "application/json"),),
            (("content-type", "application/json"), ("x-user", "é")),
        ),
        HandlerRequest("b", (Parameter("q", b"1"), Parameter("data", b"\x89PNG", "image/png"))),
        HandlerRequest("c", (Parameter("body", "héllo".encode(), "text/plain"),)),
    ]
    cmd, msg = _worker_reads(encode_predict(batch))
    assert cmd == b"I"
    assert isinstance(msg, list) and [r["requestId"] for r in msg] == [b"a", b"b", b"c"]
    assert msg[0]["parameters"] == [
        {"name": "body", "contentType": "application/json", "value": {"x": [1, 2]}}
    ]
    assert msg[0]["headers"] == [
        {"name": b"content-type", "value": b"application/json"},
        {"name": b"x-user", "value": "é".encode()},
    ]
    assert [p["value"] for p in msg[1]["parameters"]] == [b"1", b"\x89PNG"]
    assert msg[2]["parameters"][0]["value"] == "héllo"


class _Context:
    """What `create_predict_response` reads of TorchServe's Context."""

    stopping_criteria = None

    def __init__(self, statuses: dict[int, tuple[int, str]]) -> None:
        self.statuses = statuses

    def get_response_content_type(self, idx: int) -> str | None:
        return "application/json" if idx == 0 else None

    def get_response_status(self, idx: int) -> tuple[int | None, str | None]:
        return self.statuses.get(idx, (None, None))

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return {"x-idx": str(idx)}


async def _reply_of(frame: bytes) -> object:
    reader = asyncio.StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    return await read_reply(reader)


async def test_replies_from_torchserve_are_read_per_request() -> None:
    frame = otf.create_predict_response(
        [b'{"ok": 1}', "plain", {"k": [1]}],
        {0: "a", 1: "b", 2: "c"},
        "Prediction success",
        200,
        context=_Context({1: (400, "bad row")}),
    )
    reply = await _reply_of(bytes(frame))
    assert reply.code == 200 and reply.message == "Prediction success"
    first, second, third = reply.predictions
    assert (first.status, first.content_type, first.body) == (200, "application/json", b'{"ok": 1}')
    assert (second.status, second.reason, second.body) == (400, "bad row", b"plain")
    assert third.body == b'{\n  "k": [\n    1\n  ]\n}'  # TorchServe's json.dumps(indent=2)
    assert third.headers == {"x-idx": "2"}


async def test_a_failed_batch_and_a_load_reply() -> None:
    failed = await _reply_of(bytes(otf.create_predict_response(None, {0: "a"}, "boom", 503)))
    assert (failed.code, failed.message, failed.predictions[0].status) == (503, "boom", 503)
    loaded = await _reply_of(bytes(otf.create_load_model_response(200, "loaded model m")))
    assert (loaded.code, loaded.message, loaded.predictions) == (200, "loaded model m", [])

"""The handler driven like TorchServe drives it, with TorchServe's own Context (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from ts.context import Context, RequestProcessor

from handlers.manifest_handler import BATCH_HEADER, ManifestHandler, choose_device, reason_phrase
from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from service.errors import InvalidInput
from tests.handlers import torch_models

JSON = "application/json"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torch_models.full_store(tmp_path_factory.mktemp("store"))


def make_context(
    model_dir: Path, gpu_id: int | None = None, yaml: dict[str, Any] | None = None
) -> Context:
    manifest = {"model": {"modelName": model_dir.parent.name, "serializedFile": "model.pt"}}
    return Context(
        model_dir.parent.name,
        str(model_dir),
        manifest,
        8,
        gpu_id,
        "0.12.0",
        model_yaml_config=yaml or {},
    )


def loaded(store: Path, name: str, yaml: dict[str, Any] | None = None) -> ManifestHandler:
    handler = ManifestHandler()
    handler.initialize(make_context(store / name / "1", yaml=yaml))
    return handler


def run(
    handler: ManifestHandler, requests: list[tuple[dict[str, Any], str]]
) -> tuple[list[bytes], Context]:
    """Requests as (parameters, content type of the `body` parameter) -> bodies and context."""
    context = make_context(Path(handler.model_pt_path).parent)
    context.request_processor = [
        RequestProcessor({name: {"content-type": content_type} for name in parameters})
        for parameters, content_type in requests
    ]
    answers = handler.handle([parameters for parameters, _ in requests], context)
    return answers, context


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_batch_of_n_gives_n_answers_in_order(store: Path) -> None:
    handler = loaded(store, "reg")
    requests = [({"body": [float(i), 0.0, 0.0]}, JSON) for i in range(5)]
    answers, context = run(handler, requests)
    assert [json.loads(answer) for answer in answers] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(context.get_response_status(i)[0] == 200 for i in range(5))
    assert context.get_response_headers(0)[BATCH_HEADER] == "5"


def test_one_bad_request_gets_its_own_400(store: Path) -> None:
    handler = loaded(store, "tab")
    requests = [
        ({"body": [1, 2, 3, 4]}, JSON),
        ({"body": {"f0": 1}}, JSON),
        ({"body": {"instances": [[1, 1, 1, 1], [0, 0, 0, 0]]}}, JSON),
    ]
    answers, context = run(handler, requests)
    assert context.get_response_status(0)[0] == 200
    assert context.get_response_status(2)[0] == 200
    status, phrase = context.get_response_status(1)
    assert status == 400
    assert "missing features" in phrase
    assert json.loads(answers[1])["message"].startswith("missing features")
    assert len(json.loads(answers[2])) == 2
    assert context.get_response_content_type(1) == JSON


def test_top_k_comes_from_model_config(store: Path) -> None:
    handler = loaded(store, "img", yaml={"handler": {"top_k": 2}})
    answers, _ = run(handler, [({"body": bytearray(png(200))}, "image/png")])
    assert len(json.loads(answers[0])) == 2


def test_answers_match_onnx_runtime(store: Path) -> None:
    directory = store / "txt" / "1"
    handler = loaded(store, "txt")
    answers, _ = run(
        handler, [({"body": "hello world"}, "text/plain"), ({"body": "fast"}, "text/plain")]
    )
    session = ort.InferenceSession(str(directory / "model.onnx"))
    for text, answer in zip(["hello world", "fast"], answers, strict=True):
        assert handler.processor is not None
        feed = handler.processor.feed_from_payload(text.encode())
        expected = session.run(None, feed)[0][0]
        np.testing.assert_allclose(json.loads(answer), expected, atol=1e-5)


def test_tensor_payloads_are_answered_with_tensors(store: Path) -> None:
    handler = loaded(store, "img")
    images = np.stack([np.full((1, 8, 8), value, dtype=np.uint8) for value in (0, 90, 255)])
    answers, context = run(
        handler,
        [
            ({"body": encode_feed({"images": images[:2]})}, CONTENT_TYPE),
            ({"body": encode_feed({"images": images[2:]})}, CONTENT_TYPE),
        ],
    )
    assert context.get_response_content_type(0) == CONTENT_TYPE
    first, second = (decode_feed(answer)["probabilities"] for answer in answers)
    assert first.shape == (2, 10)
    assert second.shape == (1, 10)
    session = ort.InferenceSession(str(store / "img" / "1" / "model.onnx"))
    expected = session.run(None, {"images": images})[0]
    np.testing.assert_allclose(np.concatenate([first, second]), expected, atol=1e-5)


def test_a_request_that_breaks_the_model_fails_alone(store: Path) -> None:
    handler = loaded(store, "txt")
    good = {"input_ids": np.array([[2, 3]]), "attention_mask": np.array([[1, 1]])}
    out_of_vocabulary = {"input_ids": np.array([[999, 3]]), "attention_mask": np.array([[1, 1]])}
    answers, context = run(
        handler,
        [
            ({"body": encode_feed(good)}, CONTENT_TYPE),
            ({"body": encode_feed(out_of_vocabulary)}, CONTENT_TYPE),
            ({"body": "hello"}, "text/plain"),
        ],
    )
    assert [context.get_response_status(i)[0] for i in range(3)] == [200, 500, 200]
    assert decode_feed(answers[0])["embedding"].shape == (1, 6)
    assert len(json.loads(answers[2])) == 6


def test_multipart_uploads_become_one_list_answer(store: Path) -> None:
    handler = loaded(store, "img")
    context = make_context(store / "img" / "1")
    context.request_processor = [
        RequestProcessor({"a": {"content-type": "image/png"}, "b": {"content-type": "image/png"}})
    ]
    answers = handler.handle([{"a": bytearray(png(0)), "b": bytearray(png(255))}], context)
    assert len(json.loads(answers[0])) == 2


def test_cpu_unless_a_gpu_is_given_and_present() -> None:
    assert choose_device(None) == torch.device("cpu")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert choose_device(0) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_worker_runs_on_its_gpu(store: Path) -> None:
    handler = ManifestHandler()
    handler.initialize(make_context(store / "tab" / "1", gpu_id=0))
    assert handler.device == torch.device("cuda:0")
    answers, _ = run(handler, [({"body": [1, 2, 3, 4]}, JSON)])
    assert len(json.loads(answers[0])) == 3


def test_reason_phrase_is_one_printable_line() -> None:
    phrase = reason_phrase(InvalidInput("bad\nthing \u00e9" + "x" * 500))
    assert phrase.startswith("bad?thing ?")
    assert len(phrase) == 200

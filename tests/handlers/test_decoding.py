"""What TorchServe users send -> feeds, through the gateway's processors (no torch here)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handlers.decoding import decode_request, encode_answer, error_body, media_type
from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from service.errors import InvalidInput, PayloadTooLarge
from service.input_limits import Limits
from service.manifest import Manifest
from service.processing import Processor, processor_for
from tests import tiny_models


def _processor(directory: Path, limits: Limits | None = None) -> Processor:
    return processor_for(Manifest.read(directory), directory, limits or Limits())


@pytest.fixture
def tab(tmp_path: Path) -> Processor:
    return _processor(tiny_models.classifier(tmp_path))


@pytest.fixture
def img(tmp_path: Path) -> Processor:
    return _processor(tiny_models.image_classifier(tmp_path))


@pytest.fixture
def txt(tmp_path: Path) -> Processor:
    return _processor(tiny_models.text_embedder(tmp_path))


def png(value: int = 128, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, "PNG")
    return buffer.getvalue()


def test_media_type_drops_parameters_and_case() -> None:
    assert media_type("Text/Plain; charset=utf-8") == "text/plain"
    assert media_type("") == ""


def test_parsed_json_list_is_one_row_answered_once(tab: Processor) -> None:
    decoded = decode_request(tab, {"body": [1.0, 2.0, 3.0, 4.0]}, {"body": "application/json"})
    assert decoded.answer == "one"
    assert decoded.feed["features"].shape == (1, 4)


def test_json_dict_of_named_features(tab: Processor) -> None:
    body = {"f0": 1, "f1": 2, "f2": 3, "f3": 4}
    decoded = decode_request(tab, {"body": body}, {"body": "application/json"})
    np.testing.assert_array_equal(decoded.feed["features"], [[1, 2, 3, 4]])


def test_json_list_of_rows_is_answered_with_a_list(tab: Processor) -> None:
    body = {"instances": [[1, 2, 3, 4], [4, 3, 2, 1]]}
    decoded = decode_request(tab, {"body": body}, {"body": "application/json"})
    assert decoded.answer == "many"
    assert decoded.feed["features"].shape == (2, 4)


def test_unparsed_json_bytes_are_parsed_or_rejected(tab: Processor) -> None:
    ok = decode_request(tab, {"body": bytearray(b"[1, 2, 3, 4]")}, {"body": "application/json"})
    assert ok.feed["features"].shape == (1, 4)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_request(tab, {"body": bytearray(b"[1, 2")}, {"body": "application/json"})


def test_json_without_content_type_is_recognised(tab: Processor) -> None:
    decoded = decode_request(tab, {"body": bytearray(b"[[1,2,3,4],[1,1,1,1]]")}, {"body": ""})
    assert decoded.answer == "many"


def test_bad_features_are_invalid_input(tab: Processor) -> None:
    with pytest.raises(InvalidInput, match="missing features"):
        decode_request(tab, {"body": {"f0": 1}}, {"body": "application/json"})


def test_tabular_models_refuse_files(tab: Processor) -> None:
    with pytest.raises(InvalidInput, match="JSON features"):
        decode_request(tab, {"data": bytearray(png())}, {"data": "image/png"})


def test_raw_image_bytes(img: Processor) -> None:
    decoded = decode_request(img, {"body": bytearray(png())}, {"body": "image/png"})
    assert decoded.answer == "one"
    assert decoded.feed["images"].shape == (1, 1, 8, 8)
    assert decoded.feed["images"].dtype == np.uint8


def test_base64_image_in_json(img: Processor) -> None:
    encoded = base64.b64encode(png(7)).decode()
    decoded = decode_request(img, {"body": {"b64": encoded}}, {"body": "application/json"})
    assert decoded.feed["images"][0, 0, 0, 0] == 7


def test_multipart_parts_are_rows_answered_with_a_list(img: Processor) -> None:
    parameters = {"data": bytearray(png(1)), "file2": bytearray(png(2))}
    types = {"data": "image/png", "file2": "application/octet-stream"}
    decoded = decode_request(img, parameters, types)
    assert decoded.answer == "many"
    assert decoded.feed["images"][:, 0, 0, 0].tolist() == [1, 2]


def test_undecodable_image_is_invalid(img: Processor) -> None:
    with pytest.raises(InvalidInput, match="cannot decode image"):
        decode_request(img, {"body": bytearray(b"\x89PNG\r\n\x1a\nbroken")}, {"body": "image/png"})


def test_image_bomb_is_too_large(tmp_path: Path) -> None:
    processor = _processor(tiny_models.image_classifier(tmp_path), Limits(max_image_pixels=10))
    with pytest.raises(PayloadTooLarge):
        decode_request(processor, {"body": bytearray(png())}, {"body": "image/png"})


def test_text_plain_body(txt: Processor) -> None:
    decoded = decode_request(txt, {"body": "hello world"}, {"body": "text/plain"})
    assert decoded.answer == "one"
    assert decoded.feed["input_ids"].tolist() == [[2, 3]]


def test_text_in_json(txt: Processor) -> None:
    decoded = decode_request(txt, {"body": ["hello", "fast batch"]}, {"body": "application/json"})
    assert decoded.answer == "many"
    assert decoded.feed["attention_mask"].tolist() == [[1, 0], [1, 1]]


@pytest.mark.parametrize("parameters", [{}, {"body": bytearray()}, {"body": ""}])
def test_empty_bodies_are_invalid(txt: Processor, parameters: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_request(txt, parameters, {"body": "text/plain"})


def test_tensor_payload_round_trip(img: Processor) -> None:
    images = np.arange(2 * 64, dtype=np.uint8).reshape(2, 1, 8, 8)
    payload = bytearray(encode_feed({"images": images}))
    decoded = decode_request(img, {"body": payload}, {"body": CONTENT_TYPE})
    assert decoded.answer == "tensors"
    np.testing.assert_array_equal(decoded.feed["images"], images)


def test_tensor_payload_is_checked_against_the_manifest(img: Processor) -> None:
    payload = encode_feed({"images": np.zeros((2, 3, 8, 8), dtype=np.uint8)})
    with pytest.raises(InvalidInput, match="shape"):
        decode_request(img, {"body": payload}, {"body": CONTENT_TYPE})
    with pytest.raises(InvalidInput, match="tensor payload"):
        decode_request(img, {"body": b"not a zip"}, {"body": CONTENT_TYPE})


def test_pretokenized_text_payload_keeps_both_inputs(txt: Processor) -> None:
    feed = {
        "input_ids": np.array([[2, 3, 0]], dtype=np.int64),
        "attention_mask": np.array([[1, 1, 0]], dtype=np.int64),
    }
    decoded = decode_request(txt, {"body": encode_feed(feed)}, {"body": CONTENT_TYPE})
    assert sorted(decoded.feed) == ["attention_mask", "input_ids"]


def test_answers_follow_the_request_kind(tab: Processor) -> None:
    outputs = {"probabilities": np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], dtype=np.float32)}
    body, content_type = encode_answer(tab, outputs, "many", top_k=2)
    assert content_type == "application/json"
    assert json.loads(body) == [
        {"class_1": pytest.approx(0.5), "class_2": pytest.approx(0.3)},
        {"class_0": pytest.approx(0.6), "class_1": pytest.approx(0.3)},
    ]
    one, _ = encode_answer(tab, {"probabilities": outputs["probabilities"][:1]}, "one", top_k=1)
    assert json.loads(one) == {"class_1": pytest.approx(0.5)}
    raw, content_type = encode_answer(tab, outputs, "tensors", top_k=1)
    assert content_type == CONTENT_TYPE
    np.testing.assert_array_equal(decode_feed(raw)["probabilities"], outputs["probabilities"])


def test_error_body_is_torchserve_shaped() -> None:
    assert json.loads(error_body(InvalidInput("bad"))) == {
        "code": 400,
        "type": "InvalidInput",
        "message": "bad",
    }

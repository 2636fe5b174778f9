"""Task processing: images, text and tabular inputs, including hostile ones."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from service.codecs.wire import Tensor
from service.errors import InvalidInput, PayloadTooLarge
from service.input_limits import Limits
from service.manifest import Manifest
from service.processing import (
    IMAGE_INLINE_COUNT,
    InstanceInputs,
    PayloadInputs,
    TensorInputs,
    processor_for,
)
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("processing") / "store")


def load(store: Path, name: str, limits: Limits | None = None):  # type: ignore[no-untyped-def]
    directory = store / name / "1"
    return processor_for(Manifest.read(directory), directory, limits or Limits())


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_is_resized_converted_and_laid_out_nchw(stored: Path) -> None:
    processor = load(stored, "img")
    rgb = Image.new("RGB", (40, 20), (255, 255, 255))
    feed = processor.feed_from_payload(encoded(rgb, "JPEG"))
    assert feed["images"].shape == (1, 1, 8, 8)
    assert feed["images"].dtype == np.uint8
    assert feed["images"].min() >= 250


def test_decompression_bomb_is_rejected_before_decoding(stored: Path) -> None:
    processor = load(stored, "img", Limits(max_image_pixels=1_000_000))
    bomb = encoded(Image.new("1", (5_000, 5_000)))  # 25 Mpixel in a few kB
    assert len(bomb) < 20_000
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        processor.feed_from_payload(bomb)
    huge = encoded(Image.new("1", (20_000, 20_000)))  # beyond Pillow's own bomb limit too
    with pytest.raises(PayloadTooLarge):
        processor.feed_from_payload(huge)


@pytest.mark.parametrize("payload", [b"", b"\x89PNG\r\n\x1a\n\0\0", b"GIF89a", b"hello"])
def test_corrupt_images(stored: Path, payload: bytes) -> None:
    with pytest.raises(InvalidInput):
        load(stored, "img").feed_from_payload(payload)


def test_few_small_images_decode_on_the_loop_others_on_a_thread(stored: Path) -> None:
    processor = load(stored, "img")
    small = encoded(Image.new("L", (28, 28), 7))
    as_tensor = Tensor("images", "BYTES", [1], np.array([small], dtype=object))
    assert not processor.plan(PayloadInputs([small])).heavy
    assert not processor.plan(TensorInputs([as_tensor])).heavy
    assert not processor.plan(InstanceInputs([{"b64": base64.b64encode(small).decode()}])).heavy
    assert not processor.plan(InstanceInputs([np.zeros((1, 8, 8), int).tolist()])).heavy
    # A small file that declares a large image goes to the thread, undecoded.
    declared_large = encoded(Image.new("L", (1_000, 1_000)))
    assert len(declared_large) < 8_000
    assert processor.plan(PayloadInputs([declared_large])).heavy
    # So do images whose pixels add up past the bound, and too many images to weigh.
    medium = encoded(Image.new("L", (100, 100)))
    assert not processor.plan(PayloadInputs([medium])).heavy
    assert processor.plan(PayloadInputs([medium, medium])).heavy
    assert processor.plan(PayloadInputs([small] * (IMAGE_INLINE_COUNT + 1))).heavy


def test_a_planned_image_is_opened_once_and_decodes_as_feed_does(
    stored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning reads each header; running the plan decodes those opened images, on whichever
    side of the thread boundary, and gives what `feed` gives."""
    processor = load(stored, "img")
    images = [encoded(Image.new("RGB", (28 + i, 20), (40 * i, 9, 200))) for i in range(3)]
    expected = processor.feed(PayloadInputs(images))
    opened = []
    real_open = Image.open

    def counting_open(*args: object, **kwargs: object) -> Image.Image:
        opened.append(args)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", counting_open)
    plan = processor.plan(PayloadInputs(images))
    assert len(opened) == 3
    assert not plan.heavy
    np.testing.assert_array_equal(plan.run()["images"], expected["images"])
    assert len(opened) == 3
    heavy = processor.plan(PayloadInputs(images * 6))  # past IMAGE_INLINE_COUNT: opened later
    assert heavy.heavy and len(opened) == 3
    np.testing.assert_array_equal(heavy.run()["images"], np.concatenate([expected["images"]] * 6))


@pytest.mark.parametrize("payload", [b"hello", b"\x89PNG\r\n\x1a\n\0\0", "%%%"])
def test_unreadable_images_are_refused_from_the_loop(stored: Path, payload: bytes | str) -> None:
    """Nothing to hand to a thread: planning refuses them at once, with the usual error."""
    processor = load(stored, "img")
    inputs = InstanceInputs([payload]) if isinstance(payload, str) else PayloadInputs([payload])
    with pytest.raises(InvalidInput):
        processor.plan(inputs)
    with pytest.raises(InvalidInput):
        processor.feed(inputs)


def test_the_first_bad_image_refuses_the_request_before_any_decodes(stored: Path) -> None:
    """A large image followed by an unreadable one: the request is refused at planning, on the
    loop, without decoding the large one."""
    processor = load(stored, "img")
    large = encoded(Image.new("L", (1_000, 1_000)))
    with pytest.raises(InvalidInput, match="not a known image format"):
        processor.plan(PayloadInputs([large, b"hello"]))
    bomb = encoded(Image.new("1", (5_000, 5_000)))
    limited = load(stored, "img", Limits(max_image_pixels=1_000_000))
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        limited.plan(PayloadInputs([large, bomb]))


def test_truncated_jpeg(stored: Path) -> None:
    jpeg = encoded(Image.new("L", (64, 64), 128), "JPEG")
    with pytest.raises(InvalidInput, match="cannot decode"):
        load(stored, "img").feed_from_payload(jpeg[: len(jpeg) // 2])


def test_text_limits(stored: Path) -> None:
    processor = load(stored, "txt", Limits(max_text_chars=8_192))
    assert processor.feed_from_payload(b"hello world")["input_ids"].shape == (1, 2)
    with pytest.raises(InvalidInput, match="empty"):
        processor.feed_from_payload(b"   ")
    with pytest.raises(InvalidInput, match="exceeds"):
        processor.feed_from_payload(b"a " * 5_000)
    with pytest.raises(InvalidInput, match="UTF-8"):
        processor.feed_from_payload(b"\xff\xfe")


def test_text_is_truncated_to_max_tokens(stored: Path) -> None:
    feed = load(stored, "txt").feed_from_payload(b"hello " * 100)
    assert feed["input_ids"].shape == (1, 16)


def test_tabular_json_forms(stored: Path) -> None:
    processor = load(stored, "tab")

    def read(body: object) -> tuple[dict[str, np.ndarray], bool]:
        inputs, many = processor.inputs_from_body(orjson.dumps(body), "application/json")
        return processor.feed(inputs), many

    single, many = read({"f0": 1, "f1": 2, "f2": 3, "f3": 4})
    assert not many
    assert single["features"].tolist() == [[1, 2, 3, 4]]
    batch, many = read({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]})
    assert many
    assert batch["features"].shape == (2, 4)
    for bad in ([1, 2], {"f0": 1}, ["a", "b", "c", "d"], [True, 1, 2, 3]):
        with pytest.raises(InvalidInput):
            read(bad)

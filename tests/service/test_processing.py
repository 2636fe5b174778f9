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
    declared_pixels,
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
    assert declared_pixels(small) == 28 * 28
    as_tensor = Tensor("images", "BYTES", [1], np.array([small], dtype=object))
    assert not processor.decodes_heavily(PayloadInputs([small]))
    assert not processor.decodes_heavily(TensorInputs([as_tensor]))
    assert not processor.decodes_heavily(
        InstanceInputs([{"b64": base64.b64encode(small).decode()}])
    )
    assert not processor.decodes_heavily(InstanceInputs([np.zeros((1, 8, 8), int).tolist()]))
    # A small file that declares a large image goes to the thread, unread.
    declared_large = encoded(Image.new("L", (1_000, 1_000)))
    assert len(declared_large) < 8_000
    assert processor.decodes_heavily(PayloadInputs([declared_large]))
    # So do images whose pixels add up past the bound, and too many images to weigh.
    medium = encoded(Image.new("L", (100, 100)))
    assert not processor.decodes_heavily(PayloadInputs([medium]))
    assert processor.decodes_heavily(PayloadInputs([medium, medium]))
    assert processor.decodes_heavily(PayloadInputs([small] * (IMAGE_INLINE_COUNT + 1)))


@pytest.mark.parametrize("payload", [b"hello", b"\x89PNG\r\n\x1a\n\0\0", "%%%"])
def test_unreadable_images_are_refused_from_the_loop(stored: Path, payload: bytes | str) -> None:
    """Nothing to hand to a thread: the decoder refuses them at once, with the usual error."""
    processor = load(stored, "img")
    inputs = InstanceInputs([payload]) if isinstance(payload, str) else PayloadInputs([payload])
    assert not processor.decodes_heavily(inputs)
    with pytest.raises(InvalidInput):
        processor.feed(inputs)


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

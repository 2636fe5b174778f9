"""The request bodies each model gets: V2 JSON and binary, uploads, sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtests.drive import payloads
from loadtests.drive.catalog import load_model
from service.codecs import v2
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


@pytest.mark.parametrize("name", ["tab", "img", "txt"])
def test_bodies_decode_with_the_gateway_codec(store: Path, name: str) -> None:
    model = load_model(store, name)
    from_json = v2.decode_request(model.v2_json, None)
    body, length = model.v2_binary
    from_binary = v2.decode_request(body, str(length))
    for decoded in (from_json, from_binary):
        assert [t.name for t in decoded.inputs] == [s.name for s in model.manifest.inputs]
        for tensor in decoded.inputs:
            np.testing.assert_array_equal(tensor.data, model.feed[tensor.name])
    assert from_binary.outputs is not None and all(o.binary for o in from_binary.outputs)


def test_uploads_are_real_png_and_jpeg_digits() -> None:
    import io

    from PIL import Image

    files = payloads.upload_files(4)
    assert [kind for kind, _ in files] == ["image/png", "image/jpeg"] * 2
    for _, data in files:
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (28, 28) and image.mode == "L"


def test_sentences_vary_in_length() -> None:
    texts = payloads.sentences(50)
    lengths = {len(text.split()) for text in texts}
    assert min(lengths) >= 3 and max(lengths) <= 80 and len(lengths) > 10
    assert payloads.sentences(50) == texts

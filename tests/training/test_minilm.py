"""minilm: export of the pretrained embedder with its tokenizer, checked end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from tests.training.conftest import read_manifest, train, version_dir
from training.minilm import COSINE_FLOOR
from training.parity import TOLERANCE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("minilm") / "store"
    assert train("minilm", "--model-store", store) == 0
    return store


def _embed(session: ort.InferenceSession, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    encodings = tokenizer.encode_batch(texts)
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), longest), dtype=np.int64)
    mask = np.zeros((len(texts), longest), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return np.asarray(session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0])


def test_manifest_follows_the_text_contract(minilm_store: Path) -> None:
    manifest = read_manifest(minilm_store, "minilm")
    assert manifest.task == "text_embedding"
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [
        ("embedding", "FP32", [-1, 384])
    ]
    pre = manifest.preprocessing
    assert pre.kind == "text"
    assert (pre.tokenizer, pre.max_length, pre.pooling, pre.normalized) == (
        "tokenizer.json",
        256,
        "mean",
        True,
    )
    assert manifest.batching.max_batch_size == 32
    assert manifest.labels is None
    assert manifest.provenance.epochs is None
    assert "sentence-transformers" in manifest.provenance.packages
    assert manifest.parity["torchscript"] <= TOLERANCE
    assert manifest.parity["onnx"] <= TOLERANCE
    assert manifest.parity["sentence_transformers_cosine_min"] >= COSINE_FLOOR
    assert (
        manifest.metrics["sanity_paraphrase_cosine"] > manifest.metrics["sanity_unrelated_cosine"]
    )
    files = {p.name for p in version_dir(minilm_store, "minilm").iterdir()}
    assert {"model.onnx", "model.pt", "model.json", "metrics.json", "tokenizer.json"} <= files


def test_onnx_embeddings_are_normalized_and_ignore_padding(minilm_store: Path) -> None:
    directory = version_dir(minilm_store, "minilm")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()  # the gateway pads itself, with attention_mask zeros
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    texts = ["hello world", "a much longer sentence about serving models " * 6, "cats"]
    together = _embed(session, tokenizer, texts)
    assert together.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([_embed(session, tokenizer, [text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_tokenizer_truncates_at_max_length(minilm_store: Path) -> None:
    tokenizer = Tokenizer.from_file(str(version_dir(minilm_store, "minilm") / "tokenizer.json"))
    assert len(tokenizer.encode("word " * 1000).ids) == 256

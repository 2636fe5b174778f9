"""Request bodies for load tests and benchmarks, built from a model's tensor specs.

Images come from scikit-learn's bundled digits data (no download); texts are sentences of
varied length built from a fixed vocabulary. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from service.datatypes import encode_bytes_elements, numpy_dtype, v2_datatype
from service.manifest import (
    ImagePreprocessing,
    Manifest,
    SeriesPreprocessing,
    TensorSpec,
    TextPreprocessing,
)

Feed = dict[str, np.ndarray]
ImageFormat = Literal["PNG", "JPEG"]
SEED = 20

_VOCABULARY = [
    "the",
    "a",
    "model",
    "server",
    "batch",
    "request",
    "queue",
    "latency",
    "answer",
    "quickly",
    "under",
    "heavy",
    "load",
    "while",
    "every",
    "client",
    "waits",
    "for",
    "its",
    "reply",
    "and",
    "the",
    "gateway",
    "keeps",
    "small",
    "tensors",
    "moving",
    "between",
    "threads",
    "cores",
    "caches",
    "and",
    "sockets",
    "so",
    "that",
    "throughput",
    "grows",
    "with",
    "concurrency",
    "until",
    "the",
    "processor",
    "is",
    "saturated",
    "by",
    "matrix",
    "products",
    "attention",
    "layers",
    "and",
    "tokenizer",
    "work",
]

BENCH_SENTENCE = (
    "A steady stream of short questions reaches the server, and each one needs an embedding "
    "before the search can rank the documents it already holds."
)
"""The fixed sentence benchmarks send to text models (about 30 tokens)."""


def sentences(count: int, seed: int = SEED, shortest: int = 3, longest: int = 80) -> list[str]:
    """`count` sentences whose word counts spread from `shortest` to `longest`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        words = rng.choice(_VOCABULARY, size=int(rng.integers(shortest, longest + 1)))
        text = " ".join(str(word) for word in words)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def digit_images(count: int, size: int = 28, seed: int = SEED) -> list[np.ndarray]:
    """Dark-on-light uint8 digit images (H, W) from scikit-learn's bundled 8x8 digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits().images
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data), size=count, replace=count > len(data))
    images = []
    for index in picks:
        ink = (data[index] * (255.0 / 16.0)).astype(np.uint8)
        paper = Image.fromarray(255 - ink, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(paper, dtype=np.uint8))
    return images


def encode_image(pixels: np.ndarray, image_format: ImageFormat) -> bytes:
    """A grayscale (H, W) or RGB (H, W, 3) uint8 array as PNG or JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def upload_files(count: int, size: int = 28, seed: int = SEED) -> list[tuple[str, bytes]]:
    """(content type, file bytes) pairs: real PNG and JPEG digit images, alternating."""
    files = []
    for index, pixels in enumerate(digit_images(count, size, seed)):
        fmt: ImageFormat = "PNG" if index % 2 == 0 else "JPEG"
        files.append((f"image/{fmt.lower()}", encode_image(pixels, fmt)))
    return files


def _image_tensor(spec: TensorSpec, rows: int, seed: int) -> np.ndarray:
    channels, height, width = spec.shape[1:]
    planes = digit_images(rows * channels, size=max(height, width), seed=seed)
    stacked = np.stack(planes).reshape(rows, channels, max(height, width), max(height, width))
    # 255 - x: light-on-dark, as the graph expects once the gateway has inverted an upload.
    return np.ascontiguousarray(255 - stacked[:, :, :height, :width])


def _token_tensors(manifest: Manifest, version_dir: Path, rows: int, text: str) -> Feed:
    from tokenizers import Tokenizer

    assert isinstance(manifest.preprocessing, TextPreprocessing)
    tokenizer = Tokenizer.from_file(str(version_dir / manifest.preprocessing.tokenizer))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=manifest.preprocessing.max_length)
    encoding = tokenizer.encode(text)
    ids = np.tile(np.asarray(encoding.ids, dtype=np.int64), (rows, 1))
    mask = np.tile(np.asarray(encoding.attention_mask, dtype=np.int64), (rows, 1))
    return {"input_ids": ids, "attention_mask": mask}


def sample_feed(
    manifest: Manifest,
    version_dir: Path,
    rows: int = 1,
    seed: int = SEED,
    text: str = BENCH_SENTENCE,
) -> Feed:
    """Graph inputs for `rows` realistic rows: what every benchmarked system receives."""
    if isinstance(manifest.preprocessing, TextPreprocessing):
        tokens = _token_tensors(manifest, version_dir, rows, text)
        return {spec.name: tokens[spec.name] for spec in manifest.inputs}
    rng = np.random.default_rng(seed)
    feed: Feed = {}
    for spec in manifest.inputs:
        if isinstance(manifest.preprocessing, ImagePreprocessing) and spec.datatype == "UINT8":
            feed[spec.name] = _image_tensor(spec, rows, seed)
        else:
            shape = [rows, *(8 if dim == -1 else dim for dim in spec.shape[1:])]
            feed[spec.name] = rng.normal(size=shape).astype(numpy_dtype(spec.datatype))
    return feed


def tensor_feed(specs: Sequence[TensorSpec], rows: int = 1, seed: int = SEED) -> Feed:
    """Inputs from tensor specs alone (a server's metadata), when no model files are at hand."""
    rng = np.random.default_rng(seed)
    feed: Feed = {}
    for spec in specs:
        shape = [rows, *(8 if dim == -1 else dim for dim in spec.shape[1:])]
        if spec.datatype == "UINT8" and len(shape) == 4:
            feed[spec.name] = _image_tensor(
                TensorSpec(name=spec.name, datatype="UINT8", shape=shape), rows, seed
            )
        elif spec.datatype == "BYTES":
            feed[spec.name] = np.array([s.encode() for s in sentences(rows, seed)], dtype=object)
        else:
            dtype = numpy_dtype(spec.datatype)
            if dtype.kind == "f":
                feed[spec.name] = rng.normal(size=shape).astype(dtype)
            else:
                feed[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


def _json_data(array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if array.dtype == np.object_:
        return [bytes(item).decode("utf-8") for item in flat]
    values: list[Any] = flat.tolist()
    return values


def v2_json(feed: Feed) -> bytes:
    """An Open Inference Protocol V2 JSON request."""
    inputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": v2_datatype(array),
            "data": _json_data(array),
        }
        for name, array in feed.items()
    ]
    return orjson.dumps({"inputs": inputs})


def v2_binary(feed: Feed, outputs: Sequence[str]) -> tuple[bytes, int]:
    """A V2 binary-extension request (inputs and requested outputs in binary): body, header length."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in feed.items():
        datatype = v2_datatype(array)
        if datatype == "BYTES":
            blob = encode_bytes_elements([bytes(item) for item in array.reshape(-1)])
        else:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        inputs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = orjson.dumps(
        {
            "inputs": inputs,
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
    )
    return header + b"".join(blobs), len(header)


def v2_grpc(model: str, feed: Feed, outputs: Sequence[str]) -> bytes:
    """A serialized gRPC ModelInferRequest carrying the same tensors as `v2_binary`: every
    input as `raw_input_contents` (what tritonclient.grpc sends), the outputs named."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, array in feed.items():
        datatype = v2_datatype(array)
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(array.shape)
        if datatype == "BYTES":
            blob = encode_bytes_elements([bytes(item) for item in array.reshape(-1)])
        else:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        request.raw_input_contents.append(blob)
    for name in outputs:
        request.outputs.add().name = name
    return bytes(request.SerializeToString())


def native_payload(
    manifest: Manifest, version_dir: Path, seed: int = SEED, text: str = BENCH_SENTENCE
) -> tuple[bytes, str]:
    """What a TorchServe user posts to `/predictions/{model}`: (body, content type).

    An image file for image models, the text for text models, JSON features for tabular ones.
    """
    pre = manifest.preprocessing
    if isinstance(pre, ImagePreprocessing):
        pixels = digit_images(1, size=max(pre.height, pre.width), seed=seed)[0]
        if pre.channels == 3:
            pixels = np.repeat(pixels[:, :, np.newaxis], 3, axis=2)
        return encode_image(pixels, "PNG"), "image/png"
    if isinstance(pre, TextPreprocessing):
        return text.encode("utf-8"), "text/plain"
    row = sample_feed(manifest, version_dir, 1, seed)[manifest.inputs[0].name][0]
    if isinstance(pre, SeriesPreprocessing):
        return orjson.dumps({"series": row.reshape(-1).tolist()}), "application/json"
    return orjson.dumps(dict(zip(pre.feature_names, row.tolist(), strict=True))), "application/json"

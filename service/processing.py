"""Task-level pre- and post-processing, shared by the gateway and the TorchServe handlers.

A `Processor` turns what clients send (V2 tensors, JSON instances, image files, text) into a
model *feed* (graph input name -> array with the batch first), and model outputs into the
answers each protocol gives. It knows nothing about HTTP, so both serving paths give
identical answers.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.codecs.wire import JSON_MEDIA_TYPE, Tensor, media_type, parse_json
from service.datatypes import numpy_dtype
from service.errors import InvalidInput, PayloadTooLarge
from service.feeds import Feed, merge
from service.input_limits import Limits
from service.manifest import (
    ImagePreprocessing,
    Manifest,
    SeriesPreprocessing,
    TabularPreprocessing,
    Task,
    TensorSpec,
    TextPreprocessing,
)


@dataclass(frozen=True, slots=True)
class TensorInputs:
    """Named tensors (Open Inference Protocol over REST or gRPC)."""

    tensors: Sequence[Tensor]


@dataclass(frozen=True, slots=True)
class InstanceInputs:
    """JSON instances, one row each (KServe V1, TorchServe JSON bodies)."""

    instances: Sequence[Any]


@dataclass(frozen=True, slots=True)
class PayloadInputs:
    """Raw uploads, one row each (TorchServe bodies and multipart files)."""

    payloads: Sequence[bytes]


ModelInputs = TensorInputs | InstanceInputs | PayloadInputs
"""What any protocol decodes a request into before the model's processor sees it."""


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """One request's way to its feed: `run` makes the feed, and `heavy` says whether that costs
    enough CPU to run on a worker thread rather than on the event loop. Work done while planning
    (reading image headers) is not repeated by `run`."""

    run: Callable[[], Feed]
    heavy: bool


class ModelProcessor(Protocol):
    """What a tensor model's way in needs of its processor: a task's `Processor`, or the
    generic tensor checks of a Triton model (`service.triton.processor`)."""

    limits: Limits

    def feed(self, inputs: ModelInputs) -> Feed: ...

    def plan(self, inputs: ModelInputs) -> FeedPlan: ...

    def inputs_from_body(self, body: bytes, content_type: str) -> tuple[ModelInputs, bool]: ...

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]: ...

    def instance_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[Any]: ...


class Processor(ABC):
    """Converts between client payloads and model feeds for one manifest."""

    def __init__(self, manifest: Manifest, limits: Limits) -> None:
        self.manifest = manifest
        self.limits = limits

    @property
    def input_specs(self) -> list[TensorSpec]:
        """The tensors V2 clients send (the model metadata's `inputs`)."""
        return list(self.manifest.inputs)

    def feed(self, inputs: ModelInputs) -> Feed:
        """Protocol-neutral inputs -> feed (validated against the manifest)."""
        if isinstance(inputs, TensorInputs):
            return self.feed_from_tensors(inputs.tensors)
        if isinstance(inputs, InstanceInputs):
            return self.feed_from_instances(inputs.instances)
        if not inputs.payloads:
            raise InvalidInput("request holds no payload")
        self._check_rows(len(inputs.payloads))
        merged, _rows = merge([self.feed_from_payload(payload) for payload in inputs.payloads])
        return merged

    def plan(self, inputs: ModelInputs) -> FeedPlan:
        """How `feed(inputs)` runs: here on the loop, for processors whose feeds are cheap."""
        return FeedPlan(partial(self.feed, inputs), heavy=False)

    @abstractmethod
    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        """V2 inputs -> feed."""

    @abstractmethod
    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        """JSON instances (KServe V1, TorchServe JSON) -> feed."""

    @abstractmethod
    def feed_from_payload(self, payload: bytes) -> Feed:
        """One raw upload (TorchServe body or file) -> feed of one row."""

    @abstractmethod
    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        """Outputs -> one TorchServe-style answer per row."""

    def instance_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """Outputs -> one KServe V1 prediction per row (the first output, as numbers)."""
        first = outputs[self.manifest.outputs[0].name]
        return [row.tolist() if row.ndim else row.item() for row in first]

    def instances_from_json(self, body: Any) -> tuple[list[Any], bool]:
        """A TorchServe-style JSON body -> (instances, whether the body was a batch of them)."""
        if isinstance(body, Mapping) and "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list):
                raise InvalidInput("'instances' must be a list")
            return instances, True
        if isinstance(body, Mapping) and set(body) <= {"data", "body"} and len(body) == 1:
            body = next(iter(body.values()))
        if self.is_batch(body):
            return list(body), True
        return [body], False

    def inputs_from_body(self, body: bytes, content_type: str) -> tuple[ModelInputs, bool]:
        """One TorchServe-style request body -> (inputs, whether to answer with a list).

        JSON (declared, or undeclared and starting like JSON) holds instances; anything else is
        one upload. The gateway's `/predictions` route and the TorchServe handler both call this.
        """
        if not body:
            raise InvalidInput("request body is empty")
        kind = media_type(content_type)
        if kind == JSON_MEDIA_TYPE or (not kind and body[:1] in (b"{", b"[")):
            instances, many = self.instances_from_json(
                parse_json(body, self.limits.max_json_strings)
            )
            return InstanceInputs(instances), many
        return PayloadInputs([body]), False

    def is_batch(self, body: Any) -> bool:
        """Whether a JSON body is a list of instances rather than one instance."""
        return isinstance(body, list) and bool(body) and isinstance(body[0], list | Mapping)

    def _check_rows(self, rows: int) -> None:
        if rows < 1:
            raise InvalidInput("request holds no rows")
        if rows > self.limits.max_rows:
            raise InvalidInput(f"request holds {rows} rows; the limit is {self.limits.max_rows}")

    def _only_tensor(self, tensors: Sequence[Tensor]) -> Tensor:
        if len(tensors) != 1:
            names = [spec.name for spec in self.input_specs]
            raise InvalidInput(f"expected exactly one input {names}, got {len(tensors)}")
        return tensors[0]


def _check_spec(tensor: Tensor, spec: TensorSpec) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {tensor.name!r} must be {spec.datatype}, got {tensor.datatype}")
    if len(tensor.shape) != len(spec.shape) or any(
        want not in (-1, have) for have, want in zip(tensor.shape, spec.shape, strict=True)
    ):
        raise InvalidInput(
            f"input {tensor.name!r} must have shape {spec.shape}, got {tensor.shape}"
        )


def _finite_tensor_feed(processor: Processor, tensors: Sequence[Tensor], spec: TensorSpec) -> Feed:
    """The one numeric input a tabular or series model takes, checked and finite."""
    tensor = processor._only_tensor(tensors)
    if tensor.name != spec.name:
        raise InvalidInput(f"unknown input {tensor.name!r}; expected {spec.name!r}")
    _check_spec(tensor, spec)
    processor._check_rows(tensor.shape[0])
    _check_finite(tensor.data, tensor.name)
    return {spec.name: tensor.data}


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.isfinite(array).all():
        raise InvalidInput(f"input {name!r} contains NaN or infinity")


# --- tabular -----------------------------------------------------------------------------------


class TabularProcessor(Processor):
    def __init__(self, manifest: Manifest, limits: Limits) -> None:
        super().__init__(manifest, limits)
        assert isinstance(manifest.preprocessing, TabularPreprocessing)
        self.features = manifest.preprocessing.feature_names
        self.spec = manifest.inputs[0]

    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        return _finite_tensor_feed(self, tensors, self.spec)

    def _row(self, instance: Any) -> list[float]:
        if isinstance(instance, Mapping):
            missing = [name for name in self.features if name not in instance]
            if missing:
                raise InvalidInput(f"missing features: {missing}")
            unknown = sorted(set(instance) - set(self.features))
            if unknown:
                raise InvalidInput(f"unknown features: {unknown}")
            instance = [instance[name] for name in self.features]
        if not isinstance(instance, list) or len(instance) != len(self.features):
            raise InvalidInput(
                f"each instance must be {len(self.features)} numbers or an object keyed by "
                f"{self.features}"
            )
        for value in instance:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput("features must be numbers")
        return instance

    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        self._check_rows(len(instances))
        array = np.asarray([self._row(instance) for instance in instances], dtype=np.float32)
        _check_finite(array, self.spec.name)
        return {self.spec.name: array}

    def feed_from_payload(self, payload: bytes) -> Feed:
        raise InvalidInput("tabular models take JSON features, not a file")

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        first = outputs[self.manifest.outputs[0].name]
        if self.manifest.task is Task.TABULAR_REGRESSION:
            return [float(row.reshape(-1)[0]) for row in first]
        return _top_k(first, self.manifest.labels, top_k)


def _top_k(probabilities: np.ndarray, labels: list[str] | None, k: int) -> list[dict[str, float]]:
    names = labels or [str(index) for index in range(probabilities.shape[1])]
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        {names[index]: float(row[index]) for index in ranking}
        for row, ranking in zip(probabilities, order, strict=True)
    ]


# --- images ------------------------------------------------------------------------------------


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF")


def looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC)


class ImageProcessor(Processor):
    """Encoded images (uploads, BYTES tensors, base64 instances) or pixel arrays -> a uint8
    NCHW feed at the model's size.

    An encoded image is opened once: its header (format, size) is read when the request is
    planned, which weighs it and refuses bombs unread, and the opened image is decoded when the
    plan runs, on the loop or on a worker thread."""

    def __init__(self, manifest: Manifest, limits: Limits) -> None:
        super().__init__(manifest, limits)
        assert isinstance(manifest.preprocessing, ImagePreprocessing)
        self.pre = manifest.preprocessing
        self.spec = manifest.inputs[0]
        self.mode = "L" if self.pre.channels == 1 else "RGB"

    def feed(self, inputs: ModelInputs) -> Feed:
        return self.plan(inputs).run()

    def plan(self, inputs: ModelInputs) -> FeedPlan:
        """Pixels are cheap. Encoded images are decoded on the loop when they are few, small
        and their headers declare few pixels (`IMAGE_INLINE_PIXELS`); else on a thread."""
        images = self._encoded(inputs)
        if images is None:
            return FeedPlan(partial(super().feed, inputs), heavy=False)
        if len(images.items) > IMAGE_INLINE_COUNT or images.size > IMAGE_INLINE_BYTES:
            return FeedPlan(partial(self._decode, images), heavy=True)
        opened = self._open(images)
        declared = sum(image.width * image.height for image in opened)
        return FeedPlan(partial(self._pixels, opened), heavy=declared > IMAGE_INLINE_PIXELS)

    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        tensor = self._only_tensor(tensors)
        if tensor.datatype == "BYTES":
            return self.feed(TensorInputs(tensors))
        if tensor.name != self.spec.name:
            raise InvalidInput(f"unknown input {tensor.name!r}; expected {self.spec.name!r}")
        _check_spec(tensor, self.spec)
        self._check_rows(tensor.shape[0])
        return {self.spec.name: tensor.data}

    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        if _encoded_instances(instances):
            return self.feed(InstanceInputs(instances))
        self._check_rows(len(instances))
        try:
            array = np.asarray(instances)
        except ValueError:
            raise InvalidInput("image instances must be equal-shaped pixel arrays") from None
        if array.dtype.kind not in "iu" or array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise InvalidInput("pixel arrays must hold integers 0..255")
        tensor = Tensor(self.spec.name, "UINT8", list(array.shape), array.astype(np.uint8))
        _check_spec(tensor, self.spec)
        return {self.spec.name: tensor.data}

    def feed_from_payload(self, payload: bytes) -> Feed:
        return self.feed(PayloadInputs([payload]))

    def _encoded(self, inputs: ModelInputs) -> _EncodedImages | None:
        """The request's encoded images in row order, counted against the row limit; None when
        it carries pixel arrays instead."""
        if isinstance(inputs, PayloadInputs):
            if not inputs.payloads:
                raise InvalidInput("request holds no payload")
            # An upload is the file itself, never base64 (as in TorchServe's image handlers).
            images = _EncodedImages(list(inputs.payloads), base64=False)
        elif isinstance(inputs, TensorInputs):
            tensor = self._only_tensor(inputs.tensors)
            if tensor.datatype != "BYTES":
                return None
            images = _EncodedImages(list(tensor.data.reshape(-1)), base64=True)
        elif _encoded_instances(inputs.instances):
            images = _EncodedImages([_b64_field(item) for item in inputs.instances], base64=True)
        else:
            return None
        self._check_rows(len(images.items))
        return images

    def _decode(self, images: _EncodedImages) -> Feed:
        return self._pixels(self._open(images))

    def _open(self, images: _EncodedImages) -> list[Image.Image]:
        """Each image's header read, in row order; the first that cannot be read, or declares
        more pixels than the limit, refuses the request before anything is decoded."""
        opened: list[Image.Image] = []
        try:
            for item in images.items:
                opened.append(self._open_one(_image_bytes(item) if images.base64 else item))
        except BaseException:
            for image in opened:
                image.close()
            raise
        return opened

    def _open_one(self, data: bytes) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise PayloadTooLarge(f"image rejected: {error}") from None
        except UnidentifiedImageError:
            raise InvalidInput("cannot decode image: not a known image format") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise InvalidInput(f"cannot decode image: {error}") from None
        width, height = image.size
        if width * height > self.limits.max_image_pixels:
            image.close()
            raise PayloadTooLarge(
                f"image of {width}x{height} pixels exceeds the limit of "
                f"{self.limits.max_image_pixels} pixels"
            )
        return image

    def _pixels(self, opened: Sequence[Image.Image]) -> Feed:
        try:
            return {self.spec.name: np.stack([self._decoded(image) for image in opened])}
        finally:
            for image in opened:
                image.close()

    def _decoded(self, image: Image.Image) -> np.ndarray:
        """An opened image -> uint8 array (C, H, W) at the model's size."""
        try:
            image.draft(self.mode, (self.pre.width, self.pre.height))
            converted = image.convert(self.mode)
            resized = converted.resize((self.pre.width, self.pre.height), Image.Resampling.BILINEAR)
        except Image.DecompressionBombError as error:
            raise PayloadTooLarge(f"image rejected: {error}") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise InvalidInput(f"cannot decode image: {error}") from None
        pixels = np.asarray(resized, dtype=np.uint8)
        if self.pre.invert:
            pixels = 255 - pixels
        if pixels.ndim == 2:
            return pixels[np.newaxis, :, :]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def is_batch(self, body: Any) -> bool:
        if not isinstance(body, list) or not body:
            return False
        if isinstance(body[0], str | Mapping):
            return True
        return np.ndim(body) == 4

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        return _top_k(outputs[self.manifest.outputs[0].name], self.manifest.labels, top_k)


IMAGE_INLINE_PIXELS = 16_384
"""Up to this many pixels in all, as the images' headers declare them, a request's encoded
images are decoded on the event loop. Measured here: a 28x28 PNG decodes in ~35-60 µs and a
32x32 RGB one in ~50-70 µs, but either costs ~170-220 µs of CPU through a worker thread (the
hop, not the decode); 128x128 decodes in ~150-215 µs. A small file that declares a large image
(a decompression bomb below the pixel limit) still goes to the thread."""
IMAGE_INLINE_COUNT = 16
"""At most this many images are opened on the loop (reading a header costs ~10-15 µs)."""
IMAGE_INLINE_BYTES = 256 * 1024
"""Encoded images (or their base64 text) larger than this in all go to the thread unread."""


@dataclass(frozen=True, slots=True)
class _EncodedImages:
    items: list[Any]
    """Raw files (bytes), or with `base64` raw files or base64 text (bytes or str)."""
    base64: bool

    @property
    def size(self) -> int:
        return sum(len(item) for item in self.items)


def _encoded_instances(instances: Sequence[Any]) -> bool:
    """JSON instances that are images as base64 text or `{"b64": ...}` (else pixel arrays)."""
    return all(isinstance(item, Mapping | str) for item in instances)


def _b64_field(item: Any) -> str:
    if isinstance(item, str):
        return item
    for key in ("b64", "data", "image"):
        if isinstance(item.get(key), str):
            return str(item[key])
    raise InvalidInput('image instances must be base64 strings or {"b64": "..."}')


def _image_bytes(item: Any) -> bytes:
    """An image as raw encoded bytes, from raw bytes or base64 text."""
    if isinstance(item, bytes) and looks_like_image(item):
        return item
    text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image data is neither an encoded image nor base64") from None


# --- text ----------------------------------------------------------------------------------

TEXT_INLINE_CHARS = 4096
"""Up to this many characters a batch of texts is tokenized on the event loop: measured with
the MiniLM tokenizer, a 40-word sentence takes ~30 µs, less than the hop to a worker thread."""


class TextProcessor(Processor):
    text_input = TensorSpec(name="text", datatype="BYTES", shape=[-1])

    def __init__(self, manifest: Manifest, limits: Limits, model_dir: Path) -> None:
        super().__init__(manifest, limits)
        assert isinstance(manifest.preprocessing, TextPreprocessing)
        from tokenizers import Tokenizer

        self.pre = manifest.preprocessing
        self.tokenizer = Tokenizer.from_file(str(model_dir / self.pre.tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.pre.max_length)
        self.names = [spec.name for spec in manifest.inputs]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [self.text_input]

    def tokenize(self, texts: Sequence[str]) -> Feed:
        self._check_rows(len(texts))
        for text in texts:
            if not text.strip():
                raise InvalidInput("text is empty")
            if len(text) > self.limits.max_text_chars:
                raise InvalidInput(
                    f"text of {len(text)} characters exceeds the limit of "
                    f"{self.limits.max_text_chars}"
                )
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.attention_mask)] = encoding.attention_mask
        return {"input_ids": ids, "attention_mask": mask}

    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        if len(tensors) == 1 and tensors[0].datatype == "BYTES":
            return self.tokenize([_utf8(item) for item in tensors[0].data.reshape(-1)])
        by_name = {tensor.name: tensor for tensor in tensors}
        if sorted(by_name) != sorted(self.names):
            raise InvalidInput(
                f"send one BYTES tensor of texts, or pre-tokenized inputs {self.names}"
            )
        for spec in self.manifest.inputs:
            _check_spec(by_name[spec.name], spec)
        shapes = {tuple(tensor.shape) for tensor in tensors}
        if len(shapes) != 1:
            raise InvalidInput("pre-tokenized inputs must share one shape")
        self._check_rows(tensors[0].shape[0])
        return {name: by_name[name].data for name in self.names}

    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        texts = []
        for item in instances:
            if isinstance(item, Mapping):
                item = item.get("text", item.get("data"))
            if not isinstance(item, str):
                raise InvalidInput('text instances must be strings or {"text": "..."}')
            texts.append(item)
        return self.tokenize(texts)

    def feed_from_payload(self, payload: bytes) -> Feed:
        return self.tokenize([_utf8(payload)])

    def plan(self, inputs: ModelInputs) -> FeedPlan:
        """Tokenizing is cheap for a sentence; long or many texts go off the loop."""
        if isinstance(inputs, PayloadInputs):
            size = sum(len(payload) for payload in inputs.payloads)
        elif isinstance(inputs, TensorInputs):
            size = sum(
                sum(len(item) for item in tensor.data.reshape(-1))
                for tensor in inputs.tensors
                if tensor.datatype == "BYTES"
            )
        else:
            size = sum(len(item) if isinstance(item, str) else 64 for item in inputs.instances)
        return FeedPlan(partial(self.feed, inputs), heavy=size > TEXT_INLINE_CHARS)

    def is_batch(self, body: Any) -> bool:
        return isinstance(body, list)

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        return self.instance_outputs(outputs)


def _utf8(item: Any) -> str:
    if isinstance(item, str):
        return item
    try:
        return bytes(item).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("text is not valid UTF-8") from None


# --- time series ---------------------------------------------------------------------------


class SeriesProcessor(Processor):
    """A forecaster: each row is the last `window` values of a series, oldest first.

    V2 clients send FP32 [B, window, 1]; JSON clients send `{"series": [...]}` (TorchServe
    style, answered `{"forecast": [...]}`) or V1 `instances` that are lists of values.
    """

    def __init__(self, manifest: Manifest, limits: Limits) -> None:
        super().__init__(manifest, limits)
        assert isinstance(manifest.preprocessing, SeriesPreprocessing)
        self.window = manifest.preprocessing.window
        self.spec = manifest.inputs[0]
        self.output = manifest.outputs[0].name

    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        return _finite_tensor_feed(self, tensors, self.spec)

    def _values(self, instance: Any) -> list[float]:
        if isinstance(instance, Mapping):
            if set(instance) != {"series"}:
                raise InvalidInput(
                    f'each instance must be {{"series": [...]}} or a list of {self.window} numbers'
                )
            instance = instance["series"]
        if not isinstance(instance, list):
            raise InvalidInput(f"a series must be a list of {self.window} numbers")
        if len(instance) != self.window:
            raise InvalidInput(
                f"a series must hold exactly {self.window} values (the model's window), "
                f"got {len(instance)}"
            )
        for value in instance:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"series values must be numbers, got {str(value)[:40]!r}")
        return instance

    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        self._check_rows(len(instances))
        rows = [self._values(instance) for instance in instances]
        with np.errstate(over="ignore"):  # a value past FP32's range becomes inf: refused below
            array = np.asarray(rows, dtype=np.float64).astype(np.float32)
        if not np.isfinite(array).all():
            raise InvalidInput("the series contains NaN or infinity (or a value beyond FP32)")
        return {self.spec.name: array.reshape(len(rows), self.window, 1)}

    def inputs_from_body(self, body: bytes, content_type: str) -> tuple[ModelInputs, bool]:
        """Series only come as JSON; a body sent without the JSON content type (curl -d) is
        read as JSON too."""
        if not body:
            raise InvalidInput("request body is empty")
        instances, many = self.instances_from_json(_series_json(body))
        return InstanceInputs(instances), many

    def feed_from_payload(self, payload: bytes) -> Feed:
        instances, _many = self.instances_from_json(_series_json(payload))
        if len(instances) != 1:
            raise InvalidInput("an uploaded file must hold one series")
        return self.feed_from_instances(instances)

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        return [{"forecast": [float(v) for v in row.reshape(-1)]} for row in outputs[self.output]]


def _series_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput('send the series as JSON: {"series": [v1, v2, ...]}') from None


def processor_for(manifest: Manifest, model_dir: Path, limits: Limits) -> Processor:
    if manifest.task is Task.IMAGE_CLASSIFICATION:
        return ImageProcessor(manifest, limits)
    if manifest.task is Task.TEXT_EMBEDDING:
        return TextProcessor(manifest, limits, model_dir)
    if manifest.task is Task.TIME_SERIES_FORECASTING:
        return SeriesProcessor(manifest, limits)
    return TabularProcessor(manifest, limits)


def warmup_feed(manifest: Manifest, rows: int, sequence: int = 8) -> Feed:
    """Zeros shaped like the graph inputs, for warming a backend up."""
    feed: Feed = {}
    for spec in manifest.inputs:
        shape = [rows] + [sequence if dim == -1 else dim for dim in spec.shape[1:]]
        fill = 1 if spec.name == "attention_mask" else 0
        feed[spec.name] = np.full(shape, fill, dtype=numpy_dtype(spec.datatype))
    return feed

"""The way in and out of a Triton-configured model: requests checked against the completed
configuration as Triton checks them (names, datatypes, shapes, the batch size), inputs
reshaped to what the model takes, outputs reshaped back to what the configuration declares.

Error messages start with Triton's own words for the failures programs written for Triton
match on, then add ours.

BYTES and ONNX Runtime: ONNX Runtime's Python API holds string tensors as `str` (a `bytes`
element would become its repr), so BYTES elements are decoded as UTF-8 on the way in and
encoded back on the way out. Elements that are not UTF-8 cannot reach an ONNX model: the
request is refused with 400 naming the input and element. NUL bytes are valid UTF-8 and pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from service.codecs.wire import JSON_MEDIA_TYPE, Tensor, media_type, parse_json
from service.datatypes import numpy_dtype
from service.errors import InvalidInput
from service.feeds import Feed
from service.input_limits import Limits
from service.processing import (
    FeedPlan,
    InstanceInputs,
    ModelInputs,
    PayloadInputs,
    TensorInputs,
)
from service.triton.view import InputView, OutputView, ServingConfig


class TritonProcessor:
    def __init__(self, serving: ServingConfig, limits: Limits) -> None:
        self.serving = serving
        self.limits = limits
        self.batching = serving.batching
        self._inputs = {view.name: view for view in serving.inputs}
        self._text = serving.runtime == "onnxruntime"
        """ONNX Runtime takes string tensors as `str`."""

    @property
    def name(self) -> str:
        return self.serving.name

    # -- in ----------------------------------------------------------------------------------

    def feed(self, inputs: ModelInputs) -> Feed:
        if isinstance(inputs, TensorInputs):
            return self.feed_from_tensors(inputs.tensors)
        if isinstance(inputs, InstanceInputs):
            return self.feed_from_instances(inputs.instances)
        return self.feed_from_payloads(inputs)

    def plan(self, inputs: ModelInputs) -> FeedPlan:
        """Tensors are checked and reshaped, never decoded: cheap, on the loop."""
        return FeedPlan(partial(self.feed, inputs), heavy=False)

    def feed_from_tensors(self, tensors: Sequence[Tensor]) -> Feed:
        given = {tensor.name: tensor for tensor in tensors}
        if len(given) != len(tensors):
            raise InvalidInput(f"an input is given twice for model '{self.name}'")
        for name in given:
            if name not in self._inputs:
                raise InvalidInput(
                    f"unexpected inference input '{name}' for model '{self.name}'; "
                    f"it takes {sorted(self._inputs)}"
                )
        required = [view.name for view in self.serving.inputs if not view.optional]
        missing = [name for name in required if name not in given]
        if missing:
            raise InvalidInput(
                f"expected {len(required)} inputs but got {len(required) - len(missing)} "
                f"inputs for model '{self.name}'; missing {missing}"
            )
        rows: set[int] = set()
        feed: Feed = {}
        for name, tensor in given.items():
            view = self._inputs[name]
            if tensor.datatype != view.datatype:
                raise InvalidInput(
                    f"inference input '{name}' data-type is '{tensor.datatype}', but model "
                    f"'{self.name}' expects '{view.datatype}'"
                )
            self._check_shape(view, tensor.shape)
            if self.batching:
                rows.add(tensor.shape[0])
            feed[name] = self._model_array(view, tensor.data, tensor.shape)
        if len(rows) > 1:
            raise InvalidInput(
                f"inputs of model '{self.name}' disagree on the batch size: {sorted(rows)}"
            )
        return feed

    def _check_shape(self, view: InputView, shape: Sequence[int]) -> None:
        dims = view.dims
        if self.batching:
            if not shape:
                raise InvalidInput(
                    f"unexpected shape for input '{view.name}' for model '{self.name}'. "
                    f"Expected {_shape([-1, *dims])}, got []"
                )
            batch = shape[0]
            if batch > self.serving.max_batch_size:
                raise InvalidInput(
                    f"inference request batch-size must be <= {self.serving.max_batch_size} "
                    f"for '{self.name}'; got {batch}"
                )
            if batch < 1:
                raise InvalidInput(f"input '{view.name}' holds no rows for model '{self.name}'")
            shape = shape[1:]
        if len(shape) != len(dims) or any(
            want not in (-1, have) for have, want in zip(shape, dims, strict=True)
        ):
            expected = [-1, *dims] if self.batching else list(dims)
            got = [batch, *shape] if self.batching else list(shape)
            raise InvalidInput(
                f"unexpected shape for input '{view.name}' for model '{self.name}'. "
                f"Expected {_shape(expected)}, got {_shape(got)}"
            )

    def _model_array(self, view: InputView, data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """The array as the model takes it: reshaped, BYTES as text for ONNX Runtime."""
        array = data.reshape(shape) if list(data.shape) != list(shape) else data
        if view.reshape is not None:
            target = (shape[0], *view.reshape) if self.batching else view.reshape
            array = array.reshape(target)
        if view.datatype == "BYTES" and self._text:
            array = _as_text(view.name, array)
        return array

    def feed_from_instances(self, instances: Sequence[Any]) -> Feed:
        """KServe V1 / TorchServe JSON rows, for a model with one input (or one required)."""
        view = self._single_input()
        rows = len(instances)
        if rows < 1:
            raise InvalidInput("request holds no rows")
        if rows > self.limits.max_rows:
            raise InvalidInput(f"request holds {rows} rows; the limit is {self.limits.max_rows}")
        if view.datatype == "BYTES":
            data = np.empty(rows, dtype=object)
            data[:] = [_bytes_of(item) for item in instances]
            array = data
        else:
            try:
                array = np.asarray(instances, dtype=numpy_dtype(view.datatype))
            except (TypeError, ValueError) as error:
                raise InvalidInput(
                    f"instances do not form a {view.datatype} tensor: {error}"
                ) from None
        if not self.batching:
            if rows != 1:
                raise InvalidInput(
                    f"model '{self.name}' does not batch (max_batch_size 0): send one instance"
                )
            array = array[0] if view.datatype != "BYTES" else array.reshape(view.dims)
        elif view.datatype == "BYTES":
            array = array.reshape((rows, *[1 for _ in view.dims]))
        shape = list(array.shape)
        tensor = Tensor(view.name, view.datatype, shape, array)
        return self.feed_from_tensors([tensor])

    def feed_from_payloads(self, inputs: PayloadInputs) -> Feed:
        """Raw uploads: each is one BYTES element of the model's one BYTES input."""
        view = self._single_input()
        if view.datatype != "BYTES":
            raise InvalidInput(
                f"model '{self.name}' takes a {view.datatype} tensor, not a raw body: send "
                "JSON (a row, a list of rows, or {input name: data})"
            )
        return self.feed_from_instances(list(inputs.payloads))

    def inputs_from_body(self, body: bytes, content_type: str) -> tuple[ModelInputs, bool]:
        """`/predictions` for a Triton model: a JSON object `{input name: data}` (data with
        the batch first), a JSON list of rows for a one-input model (answered with a list),
        or, for a one-BYTES-input model, any other body as one element."""
        if not body:
            raise InvalidInput("request body is empty")
        kind = media_type(content_type)
        if kind == JSON_MEDIA_TYPE or (not kind and body[:1] in (b"{", b"[")):
            value = parse_json(body, self.limits.max_json_strings)
            if isinstance(value, Mapping):
                return TensorInputs(self._tensors_of(value)), True
            if isinstance(value, list):
                return InstanceInputs(value), True
            return InstanceInputs([value]), False
        return PayloadInputs([body]), False

    def _tensors_of(self, body: Mapping[str, Any]) -> list[Tensor]:
        tensors = []
        for name, data in body.items():
            view = self._inputs.get(name)
            if view is None:
                raise InvalidInput(
                    f"unexpected inference input '{name}' for model '{self.name}'; "
                    f"it takes {sorted(self._inputs)}"
                )
            if view.datatype == "BYTES":
                items = np.asarray(data, dtype=object)
                array = np.vectorize(_bytes_of, otypes=[object])(items) if items.size else items
            else:
                try:
                    array = np.asarray(data, dtype=numpy_dtype(view.datatype))
                except (TypeError, ValueError) as error:
                    raise InvalidInput(
                        f"input {name!r} is not a {view.datatype} tensor: {error}"
                    ) from None
            tensors.append(Tensor(name, view.datatype, list(array.shape), array))
        return tensors

    def _single_input(self) -> InputView:
        required = [view for view in self.serving.inputs if not view.optional]
        if len(required) != 1:
            raise InvalidInput(
                f"model '{self.name}' takes {len(required)} inputs "
                f"{[view.name for view in required]}: send V2 tensors, or JSON "
                "{input name: data} to /predictions"
            )
        return required[0]

    # -- out ---------------------------------------------------------------------------------

    def outputs(self, outputs: Feed) -> Feed:
        """The model's outputs as the configuration declares them: `dims` (not `reshape`),
        BYTES as bytes."""
        declared: dict[str, OutputView] = {view.name: view for view in self.serving.outputs}
        answer: Feed = {}
        for name, array in outputs.items():
            view = declared.get(name)
            if view is not None:
                array = self._declared_shape(view, array)
            if array.dtype == object or array.dtype.kind == "U":
                array = _as_bytes(array)
            answer[name] = array
        return answer

    def _declared_shape(self, view: OutputView, array: np.ndarray) -> np.ndarray:
        """The model's output in the declared `dims` where it holds them in another shape
        (a `reshape`, a scalar declared as [1])."""
        rows = array.shape[:1] if self.batching else ()
        wanted = (*rows, *view.dims)
        if array.shape == wanted:
            return array
        if view.dims.count(-1) <= 1 and array.ndim >= len(rows):
            try:
                return array.reshape(wanted)
            except ValueError:
                return array
        return array

    def predictions(self, outputs: Mapping[str, np.ndarray], *, top_k: int) -> list[Any]:
        """`/predictions`: one JSON object per row, `{output name: values}`."""
        if not self.batching:
            return [{name: _json_values(array) for name, array in outputs.items()}]
        rows = next(iter(outputs.values())).shape[0]
        return [
            {name: _json_values(array[row]) for name, array in outputs.items()}
            for row in range(rows)
        ]

    def instance_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """KServe V1: the one output's row per instance, or `{output name: values}`."""
        answers = self.predictions(outputs, top_k=0)
        if len(outputs) == 1:
            (name,) = outputs
            return [answer[name] for answer in answers]
        return answers


def _shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _bytes_of(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise InvalidInput(f"a BYTES element must be a string, got {type(item).__name__}")


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    text = np.empty(flat.shape, dtype=object)
    for index, item in enumerate(flat):
        try:
            text[index] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise InvalidInput(
                f"input '{name}' element {index} is not UTF-8: ONNX Runtime string tensors "
                "hold text only"
            ) from None
    return text.reshape(array.shape)


def _as_bytes(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    data = np.empty(flat.shape, dtype=object)
    data[:] = [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in flat]
    return data.reshape(array.shape)


def _json_values(array: np.ndarray) -> Any:
    if array.dtype == object:
        flat = [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            for item in array.reshape(-1)
        ]
        return np.asarray(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()

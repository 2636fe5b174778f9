"""TorchServe's service envelope for archives served natively, and what it changes for clients.

TorchServe wraps every handler of a server in one envelope (`service_envelope` in
config.properties, `TS_SERVICE_ENVELOPE`; KServe sets it from the InferenceService's
`serviceEnvelope` label, and `PROTOCOL_VERSION` with it). The envelope classes themselves run
in the worker, from the installed `ts` package, exactly as in TorchServe (the load command
names them); what this module does is bring the requests to them the way TorchServe's front
end does:

- `kserve`: a KServe V1 `{"instances": [...]}` body reaches the handler as it came; the
  envelope hands the handler the instances and answers `{"predictions": [...]}`.
- `kservev2`: a V2 REST or gRPC request reaches the handler as the V2 JSON body
  (`{"id", "inputs": [{"name", "shape", "datatype", "data"}]}`); the envelope hands the handler
  the inputs and answers V2 JSON, whose outputs become the V2 or gRPC answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from service.codecs.wire import Tensor
from service.errors import BackendError, InvalidInput
from service.inference import Call, Decoder, InferenceResult, WireT
from service.native.archive_model import ArchiveModel
from service.native.frames import HandlerRequest, Parameter, next_request_id
from service.processing import InstanceInputs, TensorInputs

if TYPE_CHECKING:
    from service.input_limits import Limits
    from service.models.tensor import TensorModel
    from service.processing import Processor
    from service.settings import Settings

ENVELOPES = frozenset({"kserve", "kservev2", "json", "body"})
"""TorchServe 0.12's `ts/torch_handler/request_envelope/` modules."""
UNSET = frozenset({"", "<no value>"})
"""KServe fills a placeholder whose label is missing with Go's `<no value>`."""
BY_PROTOCOL = {"v1": "kserve", "grpc-v1": "kserve", "v2": "kservev2", "grpc-v2": "kservev2"}
"""KServe's own choice of envelope for each `protocolVersion` (SetTorchServeDefaults)."""

_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def service_envelope(settings: Settings, configured: str = "") -> str:
    """The envelope in force: the setting (`TS_SERVICE_ENVELOPE`), else config.properties'
    `service_envelope`, else the one KServe picks for `PROTOCOL_VERSION`, else none."""
    for candidate in (settings.torchserve_envelope, configured):
        if candidate is not None and candidate.strip() not in UNSET:
            name = candidate.strip()
            if name not in ENVELOPES:
                raise InvalidInput(
                    f"service envelope {name!r} is not one of TorchServe's: {sorted(ENVELOPES)}"
                )
            return name
    version = (settings.protocol_version or "").strip()
    return BY_PROTOCOL.get(version, "")


class _LimitsOnly:
    """What the V2 and gRPC decoders read of a processor: its limits (an archive without our
    `model.json` has no processor of its own)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits


class _Predictions:
    """What the V1 encoder reads of a model: `processor.instance_outputs(outputs)`, here the
    envelope's `predictions` as the handler made them."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.processor = self

    @staticmethod
    def instance_outputs(outputs: Mapping[str, np.ndarray]) -> list[Any]:
        predictions: list[Any] = outputs[PREDICTIONS].item()
        return predictions


PREDICTIONS = "predictions"


class EnvelopeArchiveModel(ArchiveModel):
    """An archive under the `kserve` or `kservev2` envelope: KServe V1 (`kserve`), or V2 REST
    and gRPC (`kservev2`), requests go to its handler as TorchServe's front end sends them,
    through the same batcher and workers as `/predictions`."""

    envelope: str = ""
    limits: Limits

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        with call.stage("decode"):
            decoded = await decode(cast("Processor", _LimitsOnly(self.limits)))
        inputs = decoded.inputs
        if self.envelope == "kserve" and isinstance(inputs, InstanceInputs):
            body: dict[str, Any] = {"instances": list(inputs.instances)}
        elif self.envelope == "kservev2" and isinstance(inputs, TensorInputs):
            request_id = getattr(decoded.wire, "id", None)
            body = {
                **({"id": request_id} if request_id else {}),
                "inputs": [_input_json(tensor) for tensor in inputs.tensors],
            }
        else:
            wanted = "KServe V1" if self.envelope == "kserve" else "V2 (REST or gRPC)"
            raise InvalidInput(
                f"model {self.name!r} is served with TorchServe's {self.envelope} envelope: "
                f"send {wanted}, or call /predictions/{self.name}"
            )
        request = HandlerRequest(
            next_request_id(),
            (Parameter("body", json.dumps(body).encode(), "application/json"),),
            (("content-type", "application/json"),),
        )
        call.rows = 1
        answer = await call.submit(
            self.batcher, self.inflight, request, call.deadline(decoded.timeout_ms)
        )
        if answer.status >= 400:
            raise BackendError(
                f"handler of {self.name!r} answered {answer.status}: {answer.body[:500]!r}"
            )
        if self.envelope == "kserve":
            outputs = _predictions(answer.body, self.name)
            # The V1 encoder reads `model.processor.instance_outputs(outputs)` only.
            return InferenceResult(
                cast("TensorModel", _Predictions(self.name, self.version)), outputs, decoded
            )
        # The V2 and gRPC encoders read only the model's name and version.
        return InferenceResult(cast("TensorModel", self), _outputs(answer.body, self.name), decoded)


def _predictions(body: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        predictions = json.loads(body)[PREDICTIONS]
    except (ValueError, KeyError, TypeError) as error:
        raise BackendError(f"handler of {name!r}: not a KServe V1 answer ({error})") from None
    holder = np.empty((), dtype=np.object_)
    holder[()] = predictions
    return {PREDICTIONS: holder}


def _input_json(tensor: Tensor) -> dict[str, Any]:
    data = tensor.data
    values: list[Any]
    if tensor.datatype == "BYTES":
        values = [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            for item in data.reshape(-1).tolist()
        ]
    else:
        values = data.reshape(-1).tolist()
    return {
        "name": tensor.name,
        "shape": list(tensor.shape),
        "datatype": tensor.datatype,
        "data": values,
    }


def _outputs(body: bytes, name: str) -> dict[str, np.ndarray]:
    """The envelope's V2 JSON answer as named arrays."""
    try:
        answer = json.loads(body)
        outputs = {}
        for output in answer["outputs"]:
            datatype = output["datatype"]
            shape = [int(size) for size in output["shape"]]
            if datatype == "BYTES":
                array = np.array([str(item).encode() for item in output["data"]], dtype=np.object_)
            else:
                array = np.asarray(output["data"], dtype=_NUMPY[datatype])
            outputs[str(output["name"])] = array.reshape(shape)
    except (ValueError, KeyError, TypeError) as error:
        raise BackendError(f"handler of {name!r}: not a KServe v2 answer ({error})") from None
    return outputs

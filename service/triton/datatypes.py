"""Triton's `DataType` names (`TYPE_FP32`) beside the Open Inference Protocol's (`FP32`) and the
runtimes' own. Derived from `service.datatypes.NUMPY_DTYPES`, so the gateway has one list of
the numeric types it serves; `TYPE_STRING` is `BYTES`. `TYPE_BF16` has no numpy type and is
not served."""

from __future__ import annotations

from typing import Any

from service.datatypes import NUMPY_DTYPES
from service.errors import ModelConfigError

STRING = "TYPE_STRING"

_V2_BY_CONFIG: dict[str, str] = {f"TYPE_{name}": name for name in NUMPY_DTYPES} | {STRING: "BYTES"}
_CONFIG_BY_V2 = {v2: config for config, v2 in _V2_BY_CONFIG.items()}

# onnxruntime names element types after ONNX's: numpy's names, except these two and string.
_ONNX_NAMES = {"float32": "float", "float64": "double"}
_CONFIG_BY_ONNX: dict[str, str] = {
    f"tensor({_ONNX_NAMES.get(dtype.name, dtype.name)})": f"TYPE_{name}"
    for name, dtype in NUMPY_DTYPES.items()
} | {"tensor(string)": STRING}


def served_types() -> list[str]:
    """Every config data type the gateway serves, in Triton's spelling."""
    return list(_V2_BY_CONFIG)


def v2_datatype(config_type: str) -> str:
    """`TYPE_FP32` -> `FP32`, `TYPE_STRING` -> `BYTES`."""
    try:
        return _V2_BY_CONFIG[config_type]
    except KeyError:
        raise ModelConfigError(f"data_type {config_type} is not supported") from None


def config_type(v2: str) -> str:
    """`FP32` -> `TYPE_FP32`, `BYTES` -> `TYPE_STRING`."""
    try:
        return _CONFIG_BY_V2[v2]
    except KeyError:
        raise ModelConfigError(f"datatype {v2} has no Triton data_type") from None


def from_onnxruntime(type_string: str) -> str | None:
    """onnxruntime's `NodeArg.type` (`tensor(float)`) as a config type; None if not served."""
    return _CONFIG_BY_ONNX.get(type_string)


def from_torch(dtype: Any) -> str | None:
    """A `torch.dtype` as a config type; None if not served (bfloat16, complex, ...)."""
    import torch

    for name, numpy_dtype in NUMPY_DTYPES.items():
        if getattr(torch, numpy_dtype.name, None) == dtype:
            return f"TYPE_{name}"
    return None

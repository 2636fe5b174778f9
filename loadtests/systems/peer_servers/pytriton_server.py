"""Serve model-store ONNX files through NVIDIA PyTriton (Triton's dynamic batcher + Python)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import DTYPES, OnnxModel, open_model


def infer_function(model: OnnxModel) -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = model.run(inputs)
        return outputs

    return infer  # type: ignore[no-any-return]


def tensors(specs: list[dict[str, Any]]) -> list[Any]:
    from pytriton.model_config import Tensor

    return [
        Tensor(name=spec["name"], dtype=DTYPES[spec["datatype"]], shape=tuple(spec["shape"][1:]))
        for spec in specs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    with Triton(config=config) as triton:
        for name in args.models.split(","):
            model = open_model(args.store, name, args.device)
            triton.bind(
                model_name=name,
                infer_func=infer_function(model),
                inputs=tensors(model.manifest["inputs"]),
                outputs=tensors(model.manifest["outputs"]),
                config=ModelConfig(
                    max_batch_size=model.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=0),
                ),
                strict=False,
            )
        triton.serve()


if __name__ == "__main__":
    main()

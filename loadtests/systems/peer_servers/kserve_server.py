"""Serve model-store ONNX files through KServe's `ModelServer` (V2 REST, one process, no batching).

Configured from the environment, because `kserve.model_server` parses `sys.argv` on import:
PEER_STORE, PEER_MODELS (comma-separated), PEER_HTTP_PORT, PEER_DEVICE.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from common import OnnxModel, open_model


def build_model(served: OnnxModel) -> Any:
    from kserve import InferOutput, InferRequest, InferResponse, Model

    class OnnxPredictor(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(served.name)
            self.ready = True

        def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None
        ) -> InferResponse:
            feed = {item.name: item.as_numpy() for item in payload.inputs}
            outputs = []
            for name, array in served.run(feed).items():
                output = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
                output.set_data_from_numpy(array, binary_data=False)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=outputs
            )

    return OnnxPredictor()


def main() -> None:
    from kserve import ModelServer

    store = Path(os.environ["PEER_STORE"])
    device = os.environ.get("PEER_DEVICE", "cpu")
    models = [
        build_model(open_model(store, name, device))
        for name in os.environ["PEER_MODELS"].split(",")
    ]
    server = ModelServer(
        http_port=int(os.environ["PEER_HTTP_PORT"]),
        enable_grpc=False,
        workers=1,
        enable_latency_logging=False,
    )
    # As a performance-minded user would: no log line per request.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start(models)


if __name__ == "__main__":
    main()

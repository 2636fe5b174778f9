"""Serve model-store ONNX files through Lightning's LitServe, with LitServe's own batching.

One `LitAPI` per model at `/v2/models/<name>/infer`, so the gateway's V2 JSON body (the same
bytes wrk posts to the gateway) drives it unchanged. LitServe decodes each request in its
inference worker, stacks up to `max_batch_size` of them (waiting at most `batch_timeout`), makes
one ONNX Runtime call and splits the outputs back per request.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from common import DTYPES, OnnxModel, latest_version, open_model

Feed = dict[str, np.ndarray]


def decode(body: dict[str, Any]) -> Feed:
    """V2 JSON inputs (flat `data`, `shape`, `datatype`) as arrays."""
    return {
        item["name"]: np.asarray(item["data"], dtype=DTYPES[item["datatype"]]).reshape(
            item["shape"]
        )
        for item in body["inputs"]
    }


def stack(feeds: list[Feed]) -> tuple[Feed, list[int]]:
    """One feed for the batch (rows of every request, in order) and each request's row count."""
    names = list(feeds[0])
    merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in names}
    return merged, [len(feed[names[0]]) for feed in feeds]


def split(outputs: Feed, rows: list[int]) -> list[Feed]:
    bounds = np.cumsum(rows)[:-1]
    parts = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(rows))]


def encode(model: str, outputs: Feed) -> dict[str, Any]:
    return {
        "model_name": model,
        "outputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "FP32" if array.dtype == np.float32 else str(array.dtype).upper(),
                "data": array.reshape(-1).tolist(),
            }
            for name, array in outputs.items()
        ],
    }


class OnnxApi(ls.LitAPI):  # type: ignore[misc]
    """One model. Module-level: LitServe pickles the API into its worker processes."""

    served: OnnxModel

    def __init__(self, store: Path, name: str, device: str, batch_timeout_s: float) -> None:
        manifest = json.loads((latest_version(store, name) / "model.json").read_text())
        super().__init__(
            max_batch_size=int(manifest.get("batching", {}).get("max_batch_size", 32)),
            batch_timeout=batch_timeout_s,
            api_path=f"/v2/models/{name}/infer",
        )
        self.store, self.name, self.onnx_device = store, name, device

    def setup(self, device: str) -> None:
        self.served = open_model(self.store, self.name, self.onnx_device)

    # No annotations on these two: LitServe reads them to type its FastAPI route, and none gives
    # the plain route (a Starlette request whose JSON body LitServe parses itself).
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return decode(request)

    def batch(self, inputs: list[Feed]) -> tuple[Feed, list[int]]:
        return stack(inputs)

    def predict(self, batch: tuple[Feed, list[int]]) -> list[Feed]:
        feed, rows = batch
        return split(self.served.run(feed), rows)

    def unbatch(self, output: list[Feed]) -> list[Feed]:
        return output

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return encode(self.name, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-timeout-ms", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    apis = [
        OnnxApi(args.store, name, args.device, args.batch_timeout_ms / 1000.0)
        for name in args.models.split(",")
    ]
    server = ls.LitServer(
        apis, accelerator="cuda" if args.device == "cuda" else "cpu", workers_per_device=1
    )
    # As a performance-minded user would: no access log line per request.
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()

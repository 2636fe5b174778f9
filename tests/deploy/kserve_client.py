"""Stock clients against one gateway, as a KServe user calls it: KServe V1 over HTTP, V2 REST
(tritonclient.http) and V2 gRPC (tritonclient.grpc). Prints one JSON object of the answers.

Run as a program so that it can run inside a container's network namespace
(`nsenter --net`), where the container listens on its pod ports:

    python -m tests.deploy.kserve_client '{"http": 8080, "grpc": 9000, "model": "m", ...}'
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http


def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready in {timeout_s} s")


def drive(plan: dict[str, Any]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{plan['http']}"
    wait_ready(url, plan.get("timeout_s", 180))
    model = plan["model"]
    answers: dict[str, Any] = {}
    if "instances" in plan:
        response = httpx.post(
            f"{url}/v1/models/{model}:predict", json={"instances": plan["instances"]}, timeout=60
        )
        answers["v1"] = {"status": response.status_code, "body": response.json()}
    if "inputs" in plan:
        arrays = {
            item["name"]: np.array(item["data"], dtype=item["dtype"]).reshape(item["shape"])
            for item in plan["inputs"]
        }
        datatypes = {item["name"]: item["datatype"] for item in plan["inputs"]}
        http = triton_http.InferenceServerClient(f"127.0.0.1:{plan['http']}")
        tensors = []
        for name, array in arrays.items():
            tensor = triton_http.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array, binary_data=False)
            tensors.append(tensor)
        result = http.infer(model, tensors)
        answers["v2"] = _named(result.get_response()["outputs"], result.as_numpy)
        answers["v2_metadata"] = http.get_model_metadata(model)["name"]
        grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{plan['grpc']}")
        try:
            assert grpc.is_server_ready()
            tensors_grpc = []
            for name, array in arrays.items():
                tensor_grpc = triton_grpc.InferInput(name, list(array.shape), datatypes[name])
                tensor_grpc.set_data_from_numpy(array)
                tensors_grpc.append(tensor_grpc)
            reply = grpc.infer(model, tensors_grpc)
            outputs = [{"name": output.name} for output in reply.get_response().outputs]
            answers["grpc"] = _named(outputs, reply.as_numpy)
        finally:
            grpc.close()
    return answers


def _named(outputs: list[dict[str, Any]], as_numpy: Any) -> dict[str, Any]:
    return {
        output["name"]: {
            "shape": list(as_numpy(output["name"]).shape),
            "data": as_numpy(output["name"]).reshape(-1).tolist(),
        }
        for output in outputs
    }


if __name__ == "__main__":
    print(json.dumps(drive(json.loads(sys.argv[1]))))

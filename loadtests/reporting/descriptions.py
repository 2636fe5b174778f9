"""What each benchmarked system is, in the words the report uses."""

from __future__ import annotations

SYSTEMS = {
    "floor-uvicorn": "the REST floor: uvicorn + httptools + uvloop and a bare ASGI app that "
    "reads the body and answers one fixed V2 JSON response (no model), same V2 JSON body",
    "floor-grpc-aio": "the gRPC floor: a `grpc.aio` server whose generated servicer answers "
    "one fixed ModelInferResponse (no model), same ModelInferRequest",
    "floor-grpc-sync": "the same servicer on the thread-pool `grpc.server`, 8 threads",
    "floor-grpclib": "the same messages and answer on grpclib, a pure-Python gRPC server "
    "on asyncio (HTTP/2 by h2)",
    "gateway-v2-json": "our gateway, embedded ONNX Runtime, Open Inference Protocol V2 JSON",
    "gateway-v2-binary": "the same gateway, V2 binary tensor extension (binary in and out)",
    "gateway-predictions": "the same gateway, TorchServe-style `/predictions/{model}` with the "
    "body a TorchServe user sends (PNG file, text, JSON features)",
    "gateway-2workers-v2-json": "the same gateway with `GATEWAY_WORKERS=2` (two serving "
    "processes on the same ports), V2 JSON",
    "gateway-torchserve-v2-json": "our gateway (V2 JSON) with its `torchserve` backend: each "
    "batch one pre-batched request to a second TorchServe (`torchserve-behind-gateway`, "
    "batch_size 1, as `BACKEND=torchserve make run` deploys it)",
    "gateway-native-mar": "our gateway's `torchserve-native` backend on the same `.mar` "
    "archives as `torchserve` (its handler in a worker process, the gateway's batcher), same "
    "body as `gateway-predictions`",
    "torchserve": "TorchServe 0.12 directly, the project's handler on the TorchScript export of "
    "the same model, same body as `gateway-predictions`, token auth on",
    "pytriton-v2-json": "Triton through NVIDIA PyTriton (dynamic batcher, Python function "
    "calling ONNX Runtime), V2 JSON",
    "pytriton-v2-binary": "the same PyTriton, V2 binary tensor extension",
    "gateway-v2-grpc": "the same gateway over gRPC (`inference.GRPCInferenceService/ModelInfer`, "
    "the V2 binary tensors as `raw_input_contents`), loaded by the gRPC generator",
    "pytriton-v2-grpc": "the same PyTriton through Triton's gRPC endpoint, the same "
    "ModelInferRequest",
    "kserve-v2-json": "KServe `ModelServer` with a `kserve.Model` calling ONNX Runtime, V2 JSON",
    "mlserver-v2-json": "Seldon MLServer with a custom runtime calling ONNX Runtime, adaptive "
    "batching, V2 JSON",
    "litserve-v2-json": "Lightning LitServe with one `LitAPI` per model calling ONNX Runtime, "
    "its own batching (`max_batch_size` from the manifest, `batch_timeout` 1 ms), the same V2 "
    "JSON body at the same path",
    "gateway-torchscript-v2-binary": "GPU only: the gateway's TorchScript backend on CUDA, fp16",
}

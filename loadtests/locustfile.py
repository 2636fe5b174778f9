"""Locust scenarios against the gateway (and TorchServe directly), selectable by tag.

    make loadtest                                  # headless, bounded, reports under loadtests/results/
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --tags v2json upload

Tags (one user class each): `v2json` (V2 JSON, tabular), `v2binary` (V2 binary extension,
image tensor), `upload` (PNG/JPEG files made from scikit-learn's digits to `/predictions`),
`text` (sentences of varied length, as text/plain and as a V2 BYTES tensor), `grpc`
(ModelInfer over the Open Inference Protocol's gRPC service at LOADTEST_GRPC_HOST, default the
`--host`'s name on port 8001; raw_input_contents, as tritonclient.grpc sends), `torchserve`
(TorchServe's own `/predictions`, needs TORCHSERVE_URL and, with token auth, TORCHSERVE_TOKEN).

The `StepLoadShape` below drives the users: steps of LOADTEST_STEPS users per selected scenario
(default 1,4,16,32), each held LOADTEST_STEP_SECONDS (default 10), reached over
LOADTEST_RAMP_SECONDS (default 2).
Models: LOADTEST_TABULAR_MODEL (iris), LOADTEST_IMAGE_MODEL (resnet18), LOADTEST_UPLOAD_MODEL
(digits), LOADTEST_TEXT_MODEL (minilm), LOADTEST_GRPC_MODEL (iris), LOADTEST_TORCHSERVE_MODEL
(digits).
Payloads are built from the server's model metadata on first use, not at import.
"""

from __future__ import annotations

import os
import random
import time
from functools import cache
from typing import Any, ClassVar

import orjson
from locust import LoadTestShape, User, constant, tag, task
from locust.contrib.fasthttp import FastHttpSession, FastHttpUser, ResponseContextManager

from loadtests.drive import payloads
from loadtests.drive.grpc_load.request import target_for
from loadtests.drive.shape import Steps
from service.manifest import TensorSpec

JSON = {"Content-Type": "application/json"}


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def post(
    client: FastHttpSession, url: str, body: bytes, headers: dict[str, str], name: str, key: str
) -> None:
    """POST and mark the answer failed unless it is a 200 whose body mentions `key`."""
    response: ResponseContextManager
    with client.post(
        url,
        data=body,  # type: ignore[arg-type]  # bytes are sent as they are
        headers=headers,
        name=name,
        catch_response=True,
    ) as response:
        if response.status_code != 200:
            problem = f"HTTP {response.status_code}: {(response.text or '')[:200]}"
            response.failure(problem)  # type: ignore[no-untyped-call]
        elif key and key.encode() not in (response.content or b""):
            response.failure(f"answer without {key!r}")  # type: ignore[no-untyped-call]
        else:
            response.success()  # type: ignore[no-untyped-call]


@cache
def _uploads() -> tuple[tuple[str, bytes], ...]:
    return tuple(payloads.upload_files(32))


@cache
def _sentences() -> tuple[str, ...]:
    return tuple(payloads.sentences(64))


class _GatewayUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)
    _metadata: ClassVar[dict[str, dict[str, Any]]] = {}

    def metadata(self, model: str) -> dict[str, Any]:
        """The model's V2 metadata, fetched once per process."""
        if model not in self._metadata:
            with self.client.get(
                f"/v2/models/{model}", name="/v2/models/[model] metadata", catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"metadata HTTP {response.status_code}")
                    raise RuntimeError(f"model {model!r} not available: {response.status_code}")
                _GatewayUser._metadata[model] = orjson.loads(response.content or b"{}")
        return self._metadata[model]

    def specs(self, model: str) -> list[TensorSpec]:
        return [TensorSpec.model_validate(item) for item in self.metadata(model)["inputs"]]


class V2JsonUser(_GatewayUser):
    """Tabular rows as V2 JSON."""

    model = _env("LOADTEST_TABULAR_MODEL", "iris")
    body = b""

    def on_start(self) -> None:
        self.body = payloads.v2_json(payloads.tensor_feed(self.specs(self.model)))

    @tag("v2json")
    @task
    def infer(self) -> None:
        post(
            self.client,
            f"/v2/models/{self.model}/infer",
            self.body,
            JSON,
            "v2 json /v2/models/[model]/infer",
            "outputs",
        )


class V2BinaryUser(_GatewayUser):
    """One image tensor through the V2 binary tensor extension, binary output."""

    model = _env("LOADTEST_IMAGE_MODEL", "resnet18")
    body = b""
    request_headers: dict[str, str]

    def on_start(self) -> None:
        meta = self.metadata(self.model)
        feed = payloads.tensor_feed(self.specs(self.model))
        outputs = [item["name"] for item in meta.get("outputs", [])]
        self.body, length = payloads.v2_binary(feed, outputs)
        self.request_headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(length),
        }

    @tag("v2binary")
    @task
    def infer(self) -> None:
        post(
            self.client,
            f"/v2/models/{self.model}/infer",
            self.body,
            self.request_headers,
            "v2 binary /v2/models/[model]/infer",
            "binary_data_size",
        )


class UploadUser(_GatewayUser):
    """Real PNG and JPEG files to the TorchServe-compatible route."""

    model = _env("LOADTEST_UPLOAD_MODEL", "digits")

    @tag("upload")
    @task
    def predict(self) -> None:
        content_type, body = random.choice(_uploads())
        post(
            self.client,
            f"/predictions/{self.model}",
            body,
            {"Content-Type": content_type},
            f"upload {content_type} /predictions/[model]",
            "",
        )


class TextUser(_GatewayUser):
    """Sentences of 3 to 80 words, as text/plain and as a V2 BYTES tensor."""

    model = _env("LOADTEST_TEXT_MODEL", "minilm")

    @tag("text")
    @task
    def predictions(self) -> None:
        text = random.choice(_sentences())
        post(
            self.client,
            f"/predictions/{self.model}",
            text.encode(),
            {"Content-Type": "text/plain; charset=utf-8"},
            "text /predictions/[model]",
            "",
        )

    @tag("text")
    @task
    def v2_text(self) -> None:
        text = random.choice(_sentences())
        body = orjson.dumps(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
        )
        post(
            self.client,
            f"/v2/models/{self.model}/infer",
            body,
            JSON,
            "text v2 BYTES /v2/models/[model]/infer",
            "outputs",
        )


@cache
def _grpc_for_gevent() -> None:
    """Make grpc cooperate with Locust's gevent loop; once, before the first channel (doing it
    at import would change grpc for every importer of this module)."""
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()  # type: ignore[no-untyped-call]


class GrpcUser(User):
    """ModelInfer through the generated stub (`tritonclient.grpc.service_pb2_grpc`), the same
    raw_input_contents request the bench sends; every call fires Locust's request event."""

    wait_time = constant(0)
    model = _env("LOADTEST_GRPC_MODEL", "iris")
    timeout_s = 30.0

    def on_start(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        _grpc_for_gevent()
        self.channel = grpc.insecure_channel(
            target_for(self.host, os.environ.get("LOADTEST_GRPC_HOST"))
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        meta = self._call(
            "grpc ModelMetadata [model]",
            lambda: self.stub.ModelMetadata(
                pb.ModelMetadataRequest(name=self.model), timeout=self.timeout_s
            ),
        )
        if meta is None:
            raise RuntimeError(f"model {self.model!r} not available over gRPC")
        specs = [
            TensorSpec(name=item.name, datatype=item.datatype, shape=list(item.shape))
            for item in meta.inputs
        ]
        feed = payloads.tensor_feed(specs)
        body = payloads.v2_grpc(self.model, feed, [item.name for item in meta.outputs])
        self.request = pb.ModelInferRequest.FromString(body)

    def on_stop(self) -> None:
        if channel := getattr(self, "channel", None):
            channel.close()

    def _call(self, name: str, call: Any) -> Any:
        """Run one call and report it to Locust as a `grpc` request; None when it failed."""
        import grpc

        started = time.perf_counter()
        answer: Any = None
        problem: Exception | None = None
        try:
            answer = call()
        except grpc.RpcError as error:
            problem = RuntimeError(f"gRPC {error.code().name}: {error.details()}")  # type: ignore[attr-defined]
        if (
            answer is not None
            and name.startswith("grpc ModelInfer ")
            and not (answer.outputs and len(answer.raw_output_contents) == len(answer.outputs))
        ):
            problem, answer = RuntimeError("answer without raw outputs"), None
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=answer.ByteSize() if answer is not None else 0,
            exception=problem,
            context={},
        )
        return answer

    @tag("grpc")
    @task
    def infer(self) -> None:
        self._call(
            "grpc ModelInfer [model]",
            lambda: self.stub.ModelInfer(self.request, timeout=self.timeout_s),
        )


class TorchServeUser(FastHttpUser):
    """TorchServe's own inference API, bypassing the gateway (absolute URLs)."""

    wait_time = constant(0)
    model = _env("LOADTEST_TORCHSERVE_MODEL", "digits")

    @tag("torchserve")
    @task
    def predict(self) -> None:
        base = os.environ.get("TORCHSERVE_URL", "").rstrip("/")
        if not base:
            raise RuntimeError("set TORCHSERVE_URL for the torchserve scenario")
        content_type, body = random.choice(_uploads())
        headers = {"Content-Type": content_type}
        if token := os.environ.get("TORCHSERVE_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        post(
            self.client,
            f"{base}/predictions/{self.model}",
            body,
            headers,
            "torchserve /predictions/[model]",
            "",
        )


SCENARIOS: tuple[type[User], ...] = (
    V2JsonUser,
    V2BinaryUser,
    UploadUser,
    TextUser,
    GrpcUser,
    TorchServeUser,
)


def _asked_tags(runner: Any) -> set[str] | None:
    options = getattr(getattr(runner, "environment", None), "parsed_options", None)
    tags = getattr(options, "tags", None)
    return set(tags) if tags else None


def _tagged(cls: type[User], tags: set[str] | None) -> bool:
    """The class has a task left once Locust's tag filter (`--tags`) is applied."""
    if tags is None:
        return bool(cls.tasks)
    return any(getattr(task, "locust_tag_set", set()) & tags for task in cls.tasks)


class StepLoadShape(LoadTestShape):
    """Hold each user count for a step, ramping between steps; stop after the last one."""

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        steps = Steps.parse(
            _env("LOADTEST_STEPS", "1,4,16,32"),
            _env("LOADTEST_STEP_SECONDS", "10"),
            _env("LOADTEST_RAMP_SECONDS", "2"),
        )
        # Only the scenarios whose tags were asked for (Locust filters the task lists only after
        # the first tick, so the tags are read here); TorchServe only when its URL is known.
        tags = _asked_tags(self.runner)
        active = [
            cls
            for cls in SCENARIOS
            if _tagged(cls, tags)
            and (cls is not TorchServeUser or os.environ.get("TORCHSERVE_URL"))
        ]
        now = steps.at(self.get_run_time(), len(active))  # type: ignore[no-untyped-call]
        return None if now is None else (*now, active)

"""All gateway settings in one place: environment (`GATEWAY_*`), `.env`, or `python -m service` flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.backends.spinning import Spinning
from service.input_limits import (
    MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_MEMBERS,
    MAX_BYTES_ELEMENTS,
    MAX_IMAGE_PIXELS,
    MAX_JSON_STRINGS,
    MAX_TEXT_CHARS,
    Limits,
)


def _names(value: Any) -> Any:
    """`a,b` or a JSON list (environment, `.env` and flags alike)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


Names = Annotated[list[str], NoDecode, BeforeValidator(_names)]
"""A list setting written `a,b` or as a JSON list."""

BackendName = Literal["onnxruntime", "torchscript", "pt2", "torchserve", "torchserve-native"]


class Settings(BaseSettings):
    """Gateway settings. Precedence: flags, then `GATEWAY_*` environment variables, then `.env`."""

    # No `cli_parse_args` here: `Settings()` never reads sys.argv (tests and embedders construct
    # it in-process); only `python -m service` passes its arguments (service/__main__.py).
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        # The docstring under each field is its description, hence its `--help` text.
        use_attribute_docstrings=True,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_show_env_vars=True,
    )

    host: str = "127.0.0.1"
    """Bind address. Loopback by default; the container sets 0.0.0.0."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port for the HTTP protocols, the docs and /metrics."""
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """Port of the Open Inference Protocol gRPC service (Triton's convention), bound to `host`."""
    grpc_enabled: bool = True
    """Serve gRPC beside HTTP."""
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest gRPC message received or sent; larger ones get RESOURCE_EXHAUSTED."""
    grpc_handshake_timeout_s: float = Field(default=10.0, gt=0)
    """A gRPC connection must send its HTTP/2 preface and settings within this long, or it is
    closed (gRPC's own default is 120 s)."""
    grpc_max_connection_idle_s: float = Field(default=300.0, gt=0)
    """A gRPC connection without a call for this long is sent GOAWAY and closed (clients
    reconnect transparently)."""
    grpc_keepalive_s: float = Field(default=60.0, gt=0)
    """The server pings each gRPC connection this often and closes it when the ping is not
    answered within 20 s: peers that vanished without closing free their connections."""
    grpc_max_request_fields: int = Field(default=4096, ge=16)
    """Most protobuf fields one ModelInferRequest may carry, counted over all its submessages
    before protobuf parses it (`service.grpc.request_scan`; the elements of a BYTES tensor's
    `bytes_contents` are bounded by its shape and `max_bytes_elements` instead). Past it the
    request is refused with INVALID_ARGUMENT: a message of millions of tiny fields costs an
    object each to parse."""
    grpc_max_concurrent_calls: int = Field(default=1024, ge=1)
    """Most gRPC calls one process handles at once (a stream counts until it ends; health
    checks are exempt). The next call is answered UNAVAILABLE at once, before its message is
    parsed, with `grpc-retry-pushback-ms` in its trailing metadata; refusals are counted in
    `gateway_grpc_calls_refused_total` and logged."""
    grpc_max_pending_calls: int = Field(default=8192, ge=1)
    """Calls gRPC's core may hold before the event loop has picked them up (a burst arriving
    faster than the loop takes them). Past it gRPC itself cancels new calls (CANCELLED, the
    one refusal the gateway cannot see or count); gRPC's default starts cancelling at random
    from 1,000 waiting calls."""
    grpc_retry_pushback_ms: int = Field(default=100, ge=0)
    """The retry hint (`grpc-retry-pushback-ms` trailing metadata) of a call refused by
    `grpc_max_concurrent_calls`."""
    grpc_stream_max_in_flight: int = Field(default=128, ge=1)
    """Most requests of one ModelStreamInfer stream held at once (read and not yet answered,
    or answered and not yet taken by the client). At the bound the stream is not read until
    the client takes an answer, and gRPC's flow control holds the client's further sends."""
    model_store: Path = Path("model_store")
    """The model store: our `<model>/<version>/model.json` trees, Triton model folders
    (`<model>/[config.pbtxt]`, `<model>/<n>/model.onnx|.pt|.pt2`) and bare model files, mixed;
    or one model file."""
    model_control_mode: Literal["none", "explicit", "poll"] = "none"
    """Triton's model control modes. `none`: load every model at start. `explicit`: load only
    `load_model` at start; the repository API loads and unloads. `poll`: load every model at
    start, then watch the store every `repository_poll_secs`: load added models and versions,
    unload removed ones, reload changed ones (a failed reload keeps the serving version). The
    repository API works in every mode."""
    repository_poll_secs: float = Field(default=15.0, gt=0)
    """`poll` mode: seconds between two looks at the model store."""
    load_model: Names | None = None
    """`explicit` mode: the models to load at start (`a,b`; `*` for every model)."""
    model_name: str | None = None
    """The name a bare model file is served under, when `model_store` is one file or a folder
    holding model files (KServe's storage initializer leaves `/mnt/models/model.onnx`; serve
    it under the InferenceService's name). Default: the file's stem."""
    models: Names | None = None
    """Serve only these model names (default: every model found); `a,b` or a JSON list."""
    backend: BackendName | None = None
    """Backend for every model; None uses `onnxruntime`."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device for the torch backends; for ONNX Runtime the providers decide."""
    providers: Names = ["CPUExecutionProvider"]
    """ONNX Runtime execution providers in order of preference, `A,B` or a JSON list; missing
    ones are skipped."""
    intra_op_threads: int = Field(default=0, ge=0)
    """ONNX Runtime / torch intra-op threads per model instance (0: runtime default)."""
    intra_op_spinning: bool = False
    """Let ONNX Runtime's intra-op threads busy-wait briefly for the next parallel section
    (default for every model; `intra_op_spinning_models` overrides it per model). Off by
    default: measured side by side on 2 cores shared with other work, off gave 1.8x (resnet18),
    3.8x (minilm) and 1.8x (digits) the c=1 throughput, 0.97-1.6x at c=32, and 1.4-2.2x less
    CPU per request everywhere; iris is neutral (its batches run inline). On idle, dedicated
    cores, spinning gave 1.4-1.7x at c=1 for digits, minilm and resnet18 (earlier record)."""
    intra_op_spinning_after_run: bool = True
    """With spinning on, keep ONNX Runtime's intra-op threads busy-waiting after a run returns
    (ONNX Runtime's default). Off: they spin only between the parallel sections of a run and
    stop when the last concurrent run returns (`session.force_spinning_stop`), a middle point.
    Measured side by side on 2 shared cores (`loadtests.cpu_ab`, REST), spinning within runs
    against no spinning: c=1 resnet18 1.15x req/s at 0.93x CPU, minilm 1.13x at 0.98x, digits
    0.95x; c=32 resnet18 0.90-0.94x at 1.07-1.11x CPU, minilm and digits even. Against
    spinning after runs too: c=1 resnet18 0.82x, minilm 0.96x; c=32 resnet18 1.18x at 0.79x
    CPU. So: `intra_op_spinning_models` on for a heavy model served mostly one request at a
    time, with this off."""
    intra_op_spinning_models: dict[str, bool] = {}
    """Per-model `intra_op_spinning`, `{"resnet18":true}`: spin for the heavy models when
    the cores are theirs alone, never for tiny ones (nothing parallel to wait for)."""
    inline_batch_max_ms: float = Field(default=0.5, ge=0)
    """Run a batch on the event loop, without the hop to the compute thread, when the last 4
    batches of its shape each took less than this in the runtime (0: always use the thread).
    The loop is blocked only by shapes measured fast; one slow batch sends its shape back."""
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    """ONNX Runtime graph optimization level."""
    fp16: bool = False
    """Run torch backends under fp16 autocast on CUDA."""
    instances: int = Field(default=1, ge=1)
    """Concurrent batches per model version (model instances)."""
    workers: int = Field(default=1, ge=1)
    """Serving processes sharing the HTTP and gRPC ports (SO_REUSEPORT), each with its own copy
    of every model, under one supervisor that restarts crashed ones, sums their /metrics and
    applies repository API calls on all of them. 1: a single process, no supervisor. Use it
    when one event loop is the limit (small models, many cores); OpenMetrics exemplars are
    only exported with 1 worker (docs/deploy.md)."""
    worker_heartbeat_s: float = Field(default=1.0, gt=0)
    """With `workers` > 1: how often each worker tells the supervisor its event loop runs."""
    worker_hang_timeout_s: float = Field(default=10.0, gt=0)
    """With `workers` > 1: a ready worker without a heartbeat for this long (stopped, or its
    event loop blocked) is killed (SIGKILL) and replaced; meanwhile the other workers answer
    readiness 503 with the reason, since a share of the port's connections would hang."""
    max_batch_size: int | None = Field(default=None, ge=1)
    """Override the manifest's suggested max batch size for every model."""
    max_queue_size: int = Field(default=256, ge=1)
    """Rows allowed to wait per model version; beyond it requests get 503 at once."""
    max_sequences: int = Field(default=1024, ge=1)
    """Live sequences per sequence model version (Triton's `sequence_batching`); a start
    beyond it gets 503 / UNAVAILABLE. A model's `oldest.max_candidate_sequences` lowers it,
    and `direct` allows at most its slots (instances x max_batch_size)."""
    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    """Wait up to this long for a fuller batch while fewer than max_batch_size rows are queued."""
    default_timeout_ms: float | None = Field(default=None, gt=0)
    """Server default per-request deadline; requests may ask for a shorter one."""
    inference_token: SecretStr | None = None
    """Bearer token required on inference routes (None: open)."""
    management_token: SecretStr | None = None
    """Bearer token for the repository API; the API is disabled while unset."""
    protect_health_and_metrics: bool = False
    """Require the inference token on health and /metrics too."""
    shared_memory: bool = False
    """Let clients register system shared memory regions (Triton's `system_shared_memory`
    extension, `/v2/systemsharedmemory`) and pass tensors through them. Off by default, as
    Triton's `--allow-client-shm`: a client that may register can map any POSIX shm object
    the server's user can open, so enable it only for co-located, trusted clients. Needs
    `workers` 1 (regions are registered per process)."""
    shared_memory_max_regions: int = Field(default=64, ge=1)
    """Most system shared memory regions registered at once; beyond, registering is refused."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request body; larger ones get 413 without being read, and their connection is
    closed after the answer."""
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    """A request's line and headers must arrive within this long of the connection opening (or
    of the request's first byte after a keep-alive wait); the deadline does not move as bytes
    trickle in. Past it the connection is closed (408 when part of a request had arrived)."""
    http_body_timeout_s: float = Field(default=60.0, gt=0)
    """A request's body must arrive within this long of its headers (counted from the end of
    the read that completed them; a request that arrives whole in one read has no timer); the
    deadline does not move as bytes trickle in. Past it the connection is closed, with 408
    when the response has not started; the request is recorded as a client disconnect (499)."""
    http_keep_alive_s: int = Field(default=30, ge=1)
    """How long an HTTP connection may wait idle between requests before it is closed."""
    http_max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Most bytes of request line and headers, counted before parsing; beyond: 431 and the
    connection closed."""
    http_max_headers: int = Field(default=100, ge=1)
    """Most request headers; beyond: 431 and the connection closed."""
    max_image_pixels: int = Field(default=MAX_IMAGE_PIXELS, ge=1)
    """Largest decoded image (width*height); bigger images are rejected before decoding."""
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    """Longest text accepted for embedding models."""
    max_bytes_elements: int = Field(default=MAX_BYTES_ELEMENTS, ge=1)
    """Most elements one BYTES tensor may declare (V2 REST JSON or binary, gRPC raw or typed
    contents); checked from the shape before any element is decoded: HTTP 400, gRPC
    INVALID_ARGUMENT."""
    max_json_strings: int = Field(default=MAX_JSON_STRINGS, ge=1)
    """Most strings (object keys included) one JSON request body may hold (V2 REST, KServe V1,
    `/predictions`), counted from its quotes before it is parsed: HTTP 400."""
    top_k: int = Field(default=5, ge=1)
    """Labels returned by /predictions for classifiers."""
    drain_seconds: float = Field(default=20.0, ge=0)
    """Grace period on SIGTERM for queued and in-flight requests."""
    cors_origins: Names = []
    """Allowed CORS origins; CORS stays off while empty."""
    log_level: str = "info"
    """Log level of the gateway's JSON logs (debug, info, warning, error)."""
    log_requests: bool = False
    """One JSON log line per request (off by default: costly at high rates)."""
    tracing: bool = False
    """Export OpenTelemetry traces (a span per request and per batch) over OTLP/HTTP. Off: no
    tracer, no exporter thread, the OpenTelemetry SDK not even imported."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces (None: the standard
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318)."""
    trace_sample_ratio: float | None = Field(default=None, ge=0, le=1)
    """Share of new traces sampled (callers' sampled traces are always continued); None: the
    standard OTEL_TRACES_SAMPLER variables, else every trace."""
    torchserve_url: str = "http://127.0.0.1:8080"
    """TorchServe inference API for the `torchserve` backend."""
    torchserve_token: SecretStr | None = None
    """TorchServe inference key; read from torchserve_key_file when unset."""
    torchserve_key_file: Path | None = None
    """TorchServe's key_file.json."""
    torchserve_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait for one TorchServe answer; beyond it the request gets 504."""
    torchserve_mode: Literal["batched", "forward"] = "batched"
    """`batched`: one pre-batched request per gateway batch (TorchServe batchSize 1);
    `forward`: one TorchServe request per row, batched again by TorchServe's batcher."""
    torchserve_connections: int = Field(default=64, ge=1)
    """Connection pool size towards TorchServe, per model version."""
    torchserve_model_store: Path | None = None
    """`torchserve-native`: the folder holding the `.mar` archives (None: the config file's
    model_store, else model_store)."""
    torchserve_config: Path | None = None
    """`torchserve-native`: a TorchServe config.properties; its model_store, load_models and
    models= (batchSize, maxBatchDelay, minWorkers, responseTimeout) apply."""
    torchserve_envelope: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "torchserve_envelope", "GATEWAY_TORCHSERVE_ENVELOPE", "TS_SERVICE_ENVELOPE"
        ),
    )
    """`torchserve-native`: TorchServe's service envelope (`kserve`, `kservev2`, `json`,
    `body`), also read from TorchServe's own `TS_SERVICE_ENVELOPE`, which KServe sets from the
    `serviceEnvelope` label. Every handler is wrapped in it, and it changes what clients send:
    `kserve` takes KServe V1 `{"instances": [...]}` to the handler, `kservev2` takes V2 REST and
    gRPC requests there. None (or KServe's `<no value>`): config.properties' `service_envelope`,
    else the one KServe picks for `protocol_version`."""
    protocol_version: Literal["v1", "v2", "grpc-v1", "grpc-v2"] | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "protocol_version", "GATEWAY_PROTOCOL_VERSION", "PROTOCOL_VERSION"
        ),
    )
    """`torchserve-native`: the InferenceService's `protocolVersion`, as KServe passes it to
    TorchServe (`PROTOCOL_VERSION`): with no envelope set, v2 and grpc-v2 mean `kservev2`, the
    others `kserve`. Every protocol is served whatever it says."""
    torchserve_gpus: int = Field(default=0, ge=0)
    """`torchserve-native`: GPUs to give the workers round-robin (TorchServe's number_of_gpu);
    0 runs every worker on the CPU."""
    torchserve_batch_delay: bool = False
    """`torchserve-native`: wait up to each archive's maxBatchDelay for a fuller batch. Off:
    the gateway's max_queue_delay_ms applies (no fixed window by default)."""
    torchserve_worker_threads: int | None = Field(default=1, ge=1)
    """`torchserve-native`: OMP_NUM_THREADS of each worker process (None: inherit)."""
    torchserve_start_timeout_s: float = Field(default=60.0, gt=0)
    """`torchserve-native`: longest a handler worker may take to start and load its handler
    (import and `initialize`), unless the archive's model config or config.properties
    `models=` sets TorchServe's `startupTimeout`. Past it the worker is killed and the model
    is not ready, with the handler's stack at that moment (where it hung) as the reason."""
    torchserve_worker_max_rss_mb: int = Field(default=8192, ge=0)
    """`torchserve-native`: most resident memory (MB, from /proc) of one handler worker,
    checked after each batch. A worker past it answers that batch, takes no other, and is
    replaced (the next batches wait in the queue), with a log line saying why and
    `gateway_handler_worker_recycles_total`. 0: never recycle."""
    archive_max_bytes: int = Field(default=MAX_ARCHIVE_BYTES, ge=1)
    """`torchserve-native`: most bytes one `.mar` may unpack to, checked from the zip's
    directory before writing and counted again while writing; a larger archive leaves its model
    not ready, with the reason."""
    archive_max_members: int = Field(default=MAX_ARCHIVE_MEMBERS, ge=1)
    """`torchserve-native`: most files one `.mar` may hold (each is an inode in the scratch
    folder); more leaves the model not ready, with the reason."""
    backend_probe_interval_s: float = Field(default=0.5, ge=0)
    """How often remote backends are health-checked to flip model readiness (0: never)."""

    @model_validator(mode="after")
    def _shared_memory_in_one_process(self) -> Settings:
        if self.shared_memory and self.workers > 1:
            raise ValueError("shared_memory needs workers 1: regions are registered per process")
        return self

    @property
    def input_limits(self) -> Limits:
        """The input limits every protocol's decoding applies."""
        return Limits(
            max_image_pixels=self.max_image_pixels,
            max_text_chars=self.max_text_chars,
            max_bytes_elements=self.max_bytes_elements,
            max_json_strings=self.max_json_strings,
        )

    def spinning(self, model: str) -> Spinning:
        """How `model`'s ONNX Runtime threads wait: its `intra_op_spinning_models` entry, else
        `intra_op_spinning`, and `intra_op_spinning_after_run`."""
        return Spinning(
            within_runs=self.intra_op_spinning_models.get(model, self.intra_op_spinning),
            after_runs=self.intra_op_spinning_after_run,
        )

    @property
    def serves_archives(self) -> bool:
        """The store holds TorchServe archives, served by their own handlers."""
        return self.backend == "torchserve-native"

"""The typed view of a completed configuration that the serving side reads: one frozen
dataclass per concept, Triton's defaults spelled out, V2 datatype names.

Built by `serving_view` from a configuration that `check_servable`, `check_tensors` and
`normalize` have passed; reading it never touches protobuf again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tritonclient.grpc.model_config_pb2 import (
    DataType,
    ModelConfig,
    ModelInstanceGroup,
    ModelQueuePolicy,
    ModelSequenceBatching,
    ModelWarmup,
)

from service.triton import datatypes
from service.triton.layout import Runtime, served_platform
from service.triton.validation import (
    ONNX_ACCELERATORS,
    ONNX_CPU_ACCELERATORS,
    THREAD_PARAMETERS,
)

GraphOptimization = Literal["disable", "basic", "extended", "all"]
"""The `graph_optimization` setting's names."""

# Triton's ONNX Runtime backend: optimization.graph.level -1 basic, 1 extended, 2 none, else all.
_GRAPH_LEVELS: dict[int, GraphOptimization] = {-1: "basic", 1: "extended", 2: "disable"}


@dataclass(frozen=True, slots=True)
class InputView:
    name: str
    datatype: str
    """Open Inference Protocol name: FP32, BYTES, ..."""
    dims: tuple[int, ...]
    """As clients send it, without the batch dimension when the model batches; -1: any size."""
    reshape: tuple[int, ...] | None = None
    """The shape the model takes instead of `dims` (batch dimension excluded); None: none."""
    optional: bool = False

    def model_shape(self, batching: bool) -> tuple[int, ...]:
        """The shape the model itself takes; -1 for the batch and dynamic dimensions."""
        shape = self.dims if self.reshape is None else self.reshape
        return (-1, *shape) if batching else shape


@dataclass(frozen=True, slots=True)
class OutputView:
    name: str
    datatype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    """The shape the model returns instead of `dims`; None: none."""
    labels: tuple[str, ...] = ()
    """From `label_filename`; empty without one."""

    def model_shape(self, batching: bool) -> tuple[int, ...]:
        shape = self.dims if self.reshape is None else self.reshape
        return (-1, *shape) if batching else shape


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """`dynamic_batching.default_queue_policy`; Triton's zeros mean "no limit"."""

    max_queue_size: int = 0
    """Requests allowed to wait; 0: unbounded (the gateway's own bound then applies)."""
    default_timeout_microseconds: int = 0
    """Longest wait in the queue; 0: none."""
    allow_timeout_override: bool = False
    """A request's own `timeout` parameter may shorten the default."""
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    """REJECT: a timed-out request fails; DELAY: it stays queued behind the others."""


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 0
    preferred_batch_size: tuple[int, ...] = ()
    preserve_ordering: bool = False
    priority_levels: int = 0
    """0: no priorities; else requests carry `priority` 1..priority_levels (1 is highest)."""
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)


@dataclass(frozen=True, slots=True)
class InstanceGroup:
    name: str
    kind: Literal["CPU", "GPU"]
    count: int
    """Instances per device: `count` on the CPU, `count` on each of `gpus`."""
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """`parameters` and `optimization` that map to the runtime."""

    intra_op_threads: int = 0
    """0: the runtime's default."""
    inter_op_threads: int = 0
    graph_optimization: GraphOptimization = "all"
    """ONNX Runtime only, from `optimization.graph.level`."""
    gpu_providers: tuple[str, ...] = ()
    """ONNX Runtime providers asked for GPU instances, before CUDA (`gpu_execution_accelerator`)."""
    cpu_providers: tuple[str, ...] = ()
    """ONNX Runtime providers asked before the CPU one (`cpu_execution_accelerator`)."""

    def providers(self, kind: Literal["CPU", "GPU"]) -> tuple[str, ...]:
        """ONNX Runtime providers in order for instances of `kind` (Triton's ONNX Runtime
        backend: GPU instances run CUDA, after TensorRT when asked; CPU is the last resort)."""
        if kind == "CPU":
            return (*self.cpu_providers, "CPUExecutionProvider")
        gpu = self.gpu_providers
        if "CUDAExecutionProvider" not in gpu:
            gpu = (*gpu, "CUDAExecutionProvider")
        return (*gpu, *self.cpu_providers, "CPUExecutionProvider")


@dataclass(frozen=True, slots=True)
class WarmupInput:
    name: str
    datatype: str
    dims: tuple[int, ...]
    source: Literal["zero_data", "random_data", "input_data_file"]
    data_file: Path | None = None
    """For `input_data_file`: the file under the model's `warmup/` folder."""


@dataclass(frozen=True, slots=True)
class Warmup:
    name: str
    batch_size: int
    count: int
    """Runs of this sample; Triton treats 0 as 1."""
    inputs: tuple[WarmupInput, ...]


ControlKind = Literal["START", "END", "READY", "CORRID"]

DEFAULT_SEQUENCE_IDLE_MICROSECONDS = 1_000_000
"""Triton's `max_sequence_idle_microseconds` when the configuration gives 0 (one second)."""


@dataclass(frozen=True, slots=True)
class ControlInput:
    """A `sequence_batching.control_input`: a tensor the server fills in for each step."""

    name: str
    kind: ControlKind
    datatype: str
    """Open Inference Protocol name of the tensor's type."""
    false_true: tuple[float, float] = (0, 1)
    """The values meaning false and true (START, END, READY); unused for CORRID."""


@dataclass(frozen=True, slots=True)
class SequenceState:
    """A `sequence_batching.state`: implicit state the server carries from a step's output
    to the next step's input."""

    input_name: str
    output_name: str
    datatype: str
    dims: tuple[int, ...]
    initial_dims: tuple[int, ...]
    """The shape of the state a sequence starts with (zeros), batch dimension excluded."""


@dataclass(frozen=True, slots=True)
class SequenceBatching:
    strategy: Literal["direct", "oldest"]
    max_sequence_idle_microseconds: int
    controls: tuple[ControlInput, ...] = ()
    states: tuple[SequenceState, ...] = ()
    max_candidate_sequences: int = 0
    """`oldest`: the most sequences batched from at once; 0: the gateway's bound."""
    max_queue_delay_microseconds: int = 0

    @property
    def hidden_inputs(self) -> tuple[str, ...]:
        """Model inputs the server fills in: control tensors and input states."""
        return (
            *(control.name for control in self.controls),
            *(state.input_name for state in self.states),
        )

    @property
    def state_outputs(self) -> tuple[str, ...]:
        return tuple(state.output_name for state in self.states)


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Everything the serving side needs from one model's completed configuration."""

    name: str
    runtime: Runtime
    platform: str
    backend: str
    model_filename: str
    max_batch_size: int
    """0: no implicit batch dimension, requests are run one by one as sent."""
    inputs: tuple[InputView, ...]
    outputs: tuple[OutputView, ...]
    dynamic_batching: DynamicBatching | None
    """None: the configuration asks for no dynamic batching (Triton runs requests alone)."""
    instance_groups: tuple[InstanceGroup, ...]
    runtime_options: RuntimeOptions
    warmup: tuple[Warmup, ...] = ()
    sequence_batching: SequenceBatching | None = None
    """None: a stateless model; else each request belongs to a sequence."""

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


def serving_view(
    config: ModelConfig, model_dir: Path, labels: Mapping[str, list[str]] | None = None
) -> ServingConfig:
    """The typed view of a checked, completed and normalized configuration. `labels` maps
    output names to their labels (`read_labels`)."""
    labels = labels or {}
    platform = served_platform(config)
    return ServingConfig(
        name=config.name,
        runtime=platform.runtime,
        platform=config.platform,
        backend=config.backend,
        model_filename=config.default_model_filename,
        max_batch_size=config.max_batch_size,
        inputs=tuple(
            InputView(
                name=tensor.name,
                datatype=datatypes.v2_datatype(_type_name(tensor.data_type)),
                dims=tuple(tensor.dims),
                reshape=tuple(tensor.reshape.shape) if tensor.HasField("reshape") else None,
                optional=tensor.optional,
            )
            for tensor in config.input
        ),
        outputs=tuple(
            OutputView(
                name=tensor.name,
                datatype=datatypes.v2_datatype(_type_name(tensor.data_type)),
                dims=tuple(tensor.dims),
                reshape=tuple(tensor.reshape.shape) if tensor.HasField("reshape") else None,
                labels=tuple(labels.get(tensor.name, ())),
            )
            for tensor in config.output
        ),
        dynamic_batching=_dynamic_batching(config),
        instance_groups=tuple(_instance_group(group) for group in config.instance_group),
        runtime_options=_runtime_options(config),
        warmup=tuple(_warmup(sample, model_dir) for sample in config.model_warmup),
        sequence_batching=sequence_view(config),
    )


_CONTROL_KINDS: dict[int, ControlKind] = {
    ModelSequenceBatching.Control.CONTROL_SEQUENCE_START: "START",
    ModelSequenceBatching.Control.CONTROL_SEQUENCE_END: "END",
    ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY: "READY",
    ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID: "CORRID",
}


def sequence_view(config: ModelConfig) -> SequenceBatching | None:
    """The typed `sequence_batching` of a configuration `check_servable` has passed."""
    if not config.HasField("sequence_batching"):
        return None
    batching = config.sequence_batching
    controls = []
    for control_input in batching.control_input:
        (control,) = control_input.control
        kind = _CONTROL_KINDS[control.kind]
        if kind == "CORRID":
            datatype = _type_name(control.data_type)
            values: tuple[float, float] = (0, 1)
        elif control.int32_false_true:
            datatype, values = "TYPE_INT32", _pair(control.int32_false_true)
        elif control.fp32_false_true:
            datatype, values = "TYPE_FP32", _pair(control.fp32_false_true)
        else:
            datatype, values = "TYPE_BOOL", _pair(control.bool_false_true)
        controls.append(
            ControlInput(control_input.name, kind, datatypes.v2_datatype(datatype), values)
        )
    states = tuple(
        SequenceState(
            input_name=state.input_name,
            output_name=state.output_name,
            datatype=datatypes.v2_datatype(_type_name(state.data_type)),
            dims=tuple(state.dims),
            initial_dims=tuple(state.initial_state[0].dims)
            if state.initial_state
            else tuple(state.dims),
        )
        for state in batching.state
    )
    oldest = batching.WhichOneof("strategy_choice") == "oldest"
    delay = (
        batching.oldest.max_queue_delay_microseconds
        if oldest
        else batching.direct.max_queue_delay_microseconds
    )
    return SequenceBatching(
        strategy="oldest" if oldest else "direct",
        max_sequence_idle_microseconds=batching.max_sequence_idle_microseconds
        or DEFAULT_SEQUENCE_IDLE_MICROSECONDS,
        controls=tuple(controls),
        states=states,
        max_candidate_sequences=batching.oldest.max_candidate_sequences if oldest else 0,
        max_queue_delay_microseconds=delay,
    )


def _pair(values: Sequence[float] | Sequence[int] | Sequence[bool]) -> tuple[float, float]:
    return (float(values[0]), float(values[1]))


def _type_name(value: int) -> str:
    return str(DataType.Name(value))


def _dynamic_batching(config: ModelConfig) -> DynamicBatching | None:
    if not config.HasField("dynamic_batching"):
        return None
    batching = config.dynamic_batching
    policy = batching.default_queue_policy
    return DynamicBatching(
        max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
        preferred_batch_size=tuple(batching.preferred_batch_size),
        preserve_ordering=batching.preserve_ordering,
        priority_levels=batching.priority_levels,
        default_priority_level=batching.default_priority_level,
        default_queue_policy=QueuePolicy(
            max_queue_size=policy.max_queue_size,
            default_timeout_microseconds=policy.default_timeout_microseconds,
            allow_timeout_override=policy.allow_timeout_override,
            timeout_action="DELAY" if policy.timeout_action == ModelQueuePolicy.DELAY else "REJECT",
        ),
    )


def _instance_group(group: ModelInstanceGroup) -> InstanceGroup:
    on_gpu = group.kind == ModelInstanceGroup.KIND_GPU
    return InstanceGroup(
        name=group.name,
        kind="GPU" if on_gpu else "CPU",
        count=group.count,
        gpus=tuple(group.gpus) if on_gpu else (),
    )


def _runtime_options(config: ModelConfig) -> RuntimeOptions:
    intra_key, inter_key = THREAD_PARAMETERS.get(config.backend, ("", ""))

    def threads(key: str) -> int:
        parameter = config.parameters.get(key)
        return int(parameter.string_value) if parameter is not None else 0

    accelerators = config.optimization.execution_accelerators
    return RuntimeOptions(
        intra_op_threads=threads(intra_key),
        inter_op_threads=threads(inter_key),
        graph_optimization=_GRAPH_LEVELS.get(config.optimization.graph.level, "all"),
        gpu_providers=tuple(
            ONNX_ACCELERATORS[a.name] for a in accelerators.gpu_execution_accelerator
        ),
        cpu_providers=tuple(
            ONNX_CPU_ACCELERATORS[a.name] for a in accelerators.cpu_execution_accelerator
        ),
    )


def _warmup(sample: ModelWarmup, model_dir: Path) -> Warmup:
    inputs = []
    for name, given in sample.inputs.items():
        source = given.WhichOneof("input_data_type") or "zero_data"
        inputs.append(
            WarmupInput(
                name=name,
                datatype=datatypes.v2_datatype(_type_name(given.data_type)),
                dims=tuple(given.dims),
                source=source,  # type: ignore[arg-type]
                data_file=model_dir / "warmup" / given.input_data_file
                if source == "input_data_file"
                else None,
            )
        )
    return Warmup(
        name=sample.name, batch_size=sample.batch_size, count=sample.count, inputs=tuple(inputs)
    )

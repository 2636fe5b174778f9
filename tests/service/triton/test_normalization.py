"""Triton's defaults written into a completed configuration."""

from __future__ import annotations

import pytest
from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

from service.errors import ModelConfigError
from service.triton.normalization import normalize
from service.triton.pbtxt import parse_config

CPU = ModelInstanceGroup.KIND_CPU
GPU = ModelInstanceGroup.KIND_GPU


def groups(text: str, gpus: tuple[int, ...] = ()) -> list[tuple[str, int, int, list[int]]]:
    config = parse_config(text)
    normalize(config, gpus)
    return [(g.name, g.kind, g.count, list(g.gpus)) for g in config.instance_group]


@pytest.mark.parametrize(("backend", "count"), [("onnxruntime", 2), ("pytorch", 1)])
def test_default_group_on_the_cpu(backend: str, count: int) -> None:
    assert groups(f'name: "m" backend: "{backend}"') == [("m", CPU, count, [])]


def test_default_group_on_every_gpu() -> None:
    assert groups('name: "m" backend: "onnxruntime"', gpus=(0, 1)) == [("m", GPU, 1, [0, 1])]


def test_given_groups_are_named_and_kept() -> None:
    text = (
        'name: "m" backend: "onnxruntime"\n'
        "instance_group [ { count: 2, kind: KIND_CPU }, { kind: KIND_GPU, gpus: [ 1 ] } ]"
    )
    assert groups(text, gpus=(0, 1)) == [("m_0", CPU, 2, []), ("m_1", GPU, 1, [1])]


def test_auto_group_falls_back_to_the_cpu_when_its_gpu_is_absent() -> None:
    text = 'name: "m" backend: "pytorch"\ninstance_group [ { count: 3, gpus: [ 4 ] } ]'
    assert groups(text, gpus=(0,))[0][1:3] == (CPU, 3)


def test_gpu_group_without_gpus() -> None:
    with pytest.raises(ModelConfigError, match="instance_group 'm_0': KIND_GPU, but no GPU"):
        groups('name: "m"\ninstance_group [ { kind: KIND_GPU } ]')
    with pytest.raises(ModelConfigError, match=r"gpus \[3\] are not available"):
        groups('name: "m"\ninstance_group [ { kind: KIND_GPU, gpus: [ 0, 3 ] } ]', gpus=(0,))


def test_version_policy_preferred_batch_and_pinned_memory() -> None:
    config = parse_config('name: "m"\nmax_batch_size: 8\ndynamic_batching { }')
    normalize(config)
    assert config.version_policy.latest.num_versions == 1
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.optimization.input_pinned_memory.enable
    assert config.optimization.output_pinned_memory.enable
    given = parse_config(
        'name: "m"\nmax_batch_size: 8\ndynamic_batching { preferred_batch_size: [ 2, 4 ] }\n'
        "version_policy { all { } }\noptimization { input_pinned_memory { enable: false } }"
    )
    normalize(given)
    assert given.version_policy.HasField("all")
    assert list(given.dynamic_batching.preferred_batch_size) == [2, 4]
    assert not given.optimization.input_pinned_memory.enable

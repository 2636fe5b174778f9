"""A Triton-layout repository resolved model by model: what serves, what is refused and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelConfigError
from service.triton.pbtxt import parse_config
from service.triton.resolve import ResolvedModel, resolve_model
from tests.service.triton.models import (
    every_type_model,
    model_folder,
    pt2_model,
    torchscript_model,
    two_heads_model,
)

TYPES = """
max_batch_size: 4
input [
  { name: "i8", data_type: TYPE_INT8, dims: [ 2 ] },
  { name: "i32", data_type: TYPE_INT32, dims: [ 2 ] },
  { name: "i64", data_type: TYPE_INT64, dims: [ 2 ] },
  { name: "f16", data_type: TYPE_FP16, dims: [ 2 ] },
  { name: "flag", data_type: TYPE_BOOL, dims: [ 2 ] },
  { name: "text", data_type: TYPE_STRING, dims: [ 2 ] }
]
"""

ENSEMBLE = """
platform: "ensemble"
max_batch_size: 4
input [ { name: "features", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "scores", data_type: TYPE_FP32, dims: [ 3 ] } ]
ensemble_scheduling { step [ { model_name: "scorer", model_version: -1,
  input_map { key: "features" value: "features" }
  output_map { key: "scores" value: "scores" } } ] }
"""

POLICIES = {
    "default": "",
    "latest2": "version_policy { latest { num_versions: 2 } }",
    "all": "version_policy { all { } }",
    "specific": "version_policy { specific { versions: [ 1 ] } }",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    every_type_model(model_folder(store, "types", TYPES) / "1" / "model.onnx")
    scorer = model_folder(store, "scorer", "instance_group [ { count: 2, kind: KIND_CPU } ]")
    two_heads_model(scorer / "1" / "model.onnx")
    whole = model_folder(store, "whole", "max_batch_size: 0")
    two_heads_model(whole / "1" / "model.onnx", batch=1)
    for name, policy in POLICIES.items():
        folder = model_folder(store, f"versions_{name}", policy)
        for version in ("1", "2"):
            two_heads_model(folder / version / "model.onnx")
    model_folder(store, "broken", 'name: "broken"\nmax_batch_size: 4\ninput [ { name: "x" ]\n')
    model_folder(store, "chain", ENSEMBLE)
    script = model_folder(
        store,
        "script",
        'platform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]',
    )
    torchscript_model(script / "1" / "model.pt")
    pt2_model(model_folder(store, "exported") / "1" / "model.pt2")
    plan = model_folder(store, "plan") / "1"
    plan.mkdir()
    (plan / "model.plan").write_bytes(b"")
    return store


def resolve(store: Path, name: str) -> ResolvedModel:
    return resolve_model(store / name)


@pytest.mark.parametrize(
    ("name", "served"),
    [("default", ["2"]), ("latest2", ["1", "2"]), ("all", ["1", "2"]), ("specific", ["1"])],
)
def test_two_versions_under_each_policy(store: Path, name: str, served: list[str]) -> None:
    model = resolve(store, f"versions_{name}")
    assert [v.version for v in model.versions] == served
    assert [v.model_file for v in model.versions] == [
        store / f"versions_{name}" / version / "model.onnx" for version in served
    ]


def test_types_given_in_the_config_are_checked_and_kept(store: Path) -> None:
    model = resolve(store, "types")
    assert [t.datatype for t in model.serving.inputs] == [
        "INT8",
        "INT32",
        "INT64",
        "FP16",
        "BOOL",
        "BYTES",
    ]
    assert [t.name for t in model.serving.outputs] == [
        f"{t.name}_out" for t in model.serving.inputs
    ]


def test_instance_group_of_two(store: Path) -> None:
    (group,) = resolve(store, "scorer").serving.instance_groups
    assert (group.kind, group.count) == ("CPU", 2)


def test_max_batch_size_0(store: Path) -> None:
    model = resolve(store, "whole")
    assert model.serving.max_batch_size == 0
    assert [t.dims for t in model.serving.inputs] == [(1, 4)]


def test_torchscript_with_config_and_pt2_without(store: Path) -> None:
    script = resolve(store, "script").serving
    assert (script.runtime, script.max_batch_size, script.inputs[0].dims) == (
        "torchscript",
        8,
        (4,),
    )
    exported = resolve(store, "exported").serving
    assert (exported.runtime, exported.backend, exported.platform) == (
        "pt2",
        "pytorch",
        "torch_aoti",
    )
    assert [t.name for t in exported.inputs] == ["x", "ids"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("broken", "config.pbtxt line 3 column"),
        ("chain", "model 'chain': ensemble_scheduling: ensembles are not served"),
        ("plan", "model 'plan': version 1 holds no model file we serve"),
    ],
)
def test_refused_with_reason(store: Path, name: str, words: str) -> None:
    with pytest.raises(ModelConfigError) as caught:
        resolve(store, name)
    assert words in caught.value.message


def test_the_others_still_resolve(store: Path) -> None:
    """One refused model does not stop the rest: each folder resolves on its own."""
    outcomes: dict[str, str] = {}
    for folder in sorted(store.iterdir()):
        try:
            resolve_model(folder)
            outcomes[folder.name] = "ready"
        except ModelConfigError as error:
            outcomes[folder.name] = error.message
    refused = {name for name, outcome in outcomes.items() if outcome != "ready"}
    assert refused == {"broken", "chain", "plan"}


def test_name_must_match_the_folder(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "scorer", 'name: "other"')
    two_heads_model(folder / "1" / "model.onnx")
    with pytest.raises(ModelConfigError, match=r"name: 'other' in .* differs"):
        resolve_model(folder)


def test_a_served_version_without_its_file(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "scorer", "version_policy { all { } }")
    two_heads_model(folder / "1" / "model.onnx")
    (folder / "2").mkdir()
    with pytest.raises(ModelConfigError, match=r"version 2: model\.onnx not found"):
        resolve_model(folder)


def test_renders_read_back(store: Path) -> None:
    model = resolve(store, "scorer")
    assert parse_config(model.pbtxt()) == model.config
    body = model.config_json()
    assert body["name"] == "scorer"
    assert body["max_batch_size"] == 4
    assert body["input"][0]["dims"] == [4]
    assert body["instance_group"][0]["count"] == 2

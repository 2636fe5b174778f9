"""OpenAPI operationIds: readable, unique, and the same in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import Response
from starlette.requests import Request

from service.app import create_app
from service.routes.table import RouteSpec, operation_id, router_for
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# Prints every (path, method, operationId) of a freshly created app's schema as JSON.
DUMP_OPERATION_IDS = """
import json, sys
from service.app import create_app
from service.settings import Settings
schema = create_app(Settings(model_store=sys.argv[1], _env_file=None)).openapi()
print(json.dumps(sorted(
    [path, method, operation["operationId"]]
    for path, methods in schema["paths"].items()
    for method, operation in methods.items()
)))
"""


def operation_ids(schema: dict[str, Any]) -> list[list[str]]:
    return sorted(
        [path, method, operation["operationId"]]
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    )


def operation_ids_in_subprocess(store: Path, hash_seed: str) -> list[list[str]]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", DUMP_OPERATION_IDS, str(store)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[list[str]] = json.loads(done.stdout)
    return result


def test_operation_ids_are_unique_and_equal_across_processes(tmp_path: Path) -> None:
    here = operation_ids(create_app(Settings(model_store=tmp_path, _env_file=None)).openapi())  # type: ignore[call-arg]
    ids = [operation for _path, _method, operation in here]
    assert len(ids) == len(set(ids)), ids
    # Different hash seeds: anything derived from hash() would differ between the two.
    assert operation_ids_in_subprocess(tmp_path, "1") == here
    assert operation_ids_in_subprocess(tmp_path, "2") == here


def test_operation_ids_are_named_after_method_and_path(tmp_path: Path) -> None:
    schema = create_app(Settings(model_store=tmp_path, _env_file=None)).openapi()  # type: ignore[call-arg]
    paths = schema["paths"]
    assert paths["/v2/models/{model_name}/infer"]["post"]["operationId"] == (
        "post_v2_models_model_name_infer"
    )
    assert paths["/v2/models/{model_name}/versions/{version}"]["get"]["operationId"] == (
        "get_v2_models_model_name_versions_version"
    )
    assert paths["/v1/models/{model_name}:predict"]["post"]["operationId"] == (
        "post_v1_models_model_name_predict"
    )


async def _ok(_request: Request) -> Response:
    return Response()


def test_each_method_of_a_route_gets_its_own_operation_id() -> None:
    router = router_for([RouteSpec("/things/{thing}", _ok, ("GET", "POST"), "Things", ("t",))])
    assert sorted((route.path, route.operation_id) for route in router.routes) == [  # type: ignore[attr-defined]
        ("/things/{thing}", "get_things_thing"),
        ("/things/{thing}", "post_things_thing"),
    ]
    assert operation_id("GET", "/things/{thing}") == "get_things_thing"


def test_colliding_operation_ids_are_refused() -> None:
    specs = [
        RouteSpec("/a/b", _ok, ("GET",), "one", ("t",)),
        RouteSpec("/a_b", _ok, ("GET",), "two", ("t",)),
    ]
    with pytest.raises(ValueError, match="get_a_b"):
        router_for(specs)

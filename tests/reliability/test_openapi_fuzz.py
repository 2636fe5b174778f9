"""schemathesis against /openapi.json of a real gateway: no server errors, no schema violations.

Runs schemathesis' own CLI (bounded examples per operation, deterministic generation) against a
gateway process on loopback, then checks the server is still healthy.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import gateway
from tests.tiny_models import full_store

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES_PER_OPERATION = 30


def test_openapi_fuzzing_finds_no_server_errors_or_schema_violations(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    with gateway(store, tmp_path, env={"GATEWAY_MANAGEMENT_TOKEN": "fuzz-manage"}) as server:
        st = Path(sys.executable).with_name("st")
        result = subprocess.run(
            [
                str(st),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--generation-deterministic",
                "--mode",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
            cwd=tmp_path,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        assert re.search(r"\d+ generated", output), output[-3000:]
        print(output[-1500:])
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert server.process.poll() is None

"""A real TorchServe for the integration tests, started once per test session.

`shared_torchserve` is called by session fixtures in tests/handlers and tests/service; the first
call starts TorchServe (free ports, token auth on, a temporary working directory) with archives
of the tiny TorchScript models, later calls get the same server, and pytest stops it at exit.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from deploy.torchserve.archive import build_archives
from deploy.torchserve.launcher import TorchServe, launch
from service.feeds import Feed
from service.input_limits import Limits
from service.manifest import Manifest
from service.processing import Processor, processor_for
from tests.handlers import torch_models

BATCH_SIZE = 8
BATCH_DELAY_MS = 20


@dataclass
class TorchServeStack:
    """The store (TorchScript + ONNX twins), its archives, and the server serving them."""

    store: Path
    server: TorchServe

    def reference(self, name: str) -> Reference:
        return Reference(self.store / name / "1")


class Reference:
    """In-process answers for one model: the gateway's processor + ONNX Runtime."""

    def __init__(self, directory: Path) -> None:
        self.processor: Processor = processor_for(Manifest.read(directory), directory, Limits())
        self.session = ort.InferenceSession(str(directory / "model.onnx"))

    def outputs(self, feed: Mapping[str, np.ndarray]) -> Feed:
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feed)), strict=True))

    def predictions(self, feed: Mapping[str, np.ndarray], top_k: int = 5) -> list[Any]:
        return self.processor.predictions(self.outputs(feed), top_k=top_k)


_SHARED = pytest.StashKey[TorchServeStack | BaseException]()


def require_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (see deploy/install-system.sh)")


def shared_torchserve(
    config: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> TorchServeStack:
    require_java()
    found = config.stash.get(_SHARED, None)
    if isinstance(found, BaseException):
        raise found
    if found is not None:
        return found
    root = tmp_path_factory.mktemp("torchserve")
    store = torch_models.full_store(root / "store")
    build_archives(store, store)
    try:
        server = launch(
            store,
            root / "work",
            list(torch_models.TASK_MODELS),
            batch_size=BATCH_SIZE,
            max_batch_delay_ms=BATCH_DELAY_MS,
        )
    except BaseException as error:
        config.stash[_SHARED] = error
        raise
    config.add_cleanup(server.stop)
    stack = TorchServeStack(store, server)
    config.stash[_SHARED] = stack
    return stack


def assert_answers_close(actual: Any, expected: Any, atol: float = 1e-4) -> None:
    """TorchServe-style answers (numbers, lists, label->score dicts) equal within atol."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert set(actual) == set(expected)
        for key in expected:
            assert_answers_close(actual[key], expected[key], atol)
    elif isinstance(expected, list):
        assert isinstance(actual, list)
        assert len(actual) == len(expected)
        for one, other in zip(actual, expected, strict=True):
            assert_answers_close(one, other, atol)
    elif isinstance(expected, str):
        assert actual == expected
    else:
        assert abs(actual - expected) <= atol, (actual, expected)

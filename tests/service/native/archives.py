"""Archives written for the native-runtime tests, built by the real `torch-model-archiver`:
one on TorchServe's stock `image_classifier` handler (no handler code of ours), and one with a
custom handler that sets per-request statuses, crashes or stalls on marked inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CUSTOM_HANDLER = """
import json
import os
import time


def handle(data, context):
    if data is None:  # TorchServe initialises a function handler with handle(None, context)
        return None
    answers = []
    for index, row in enumerate(data):
        body = row.get("body") if "body" in row else row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        if body.get("crash"):
            os._exit(3)
        if body.get("sleep"):
            time.sleep(float(body["sleep"]))
        if "value" not in body:
            context.set_response_status(422, "value missing", idx=index)
            answers.append({"error": "value missing"})
            continue
        answers.append({"double": body["value"] * 2, "batch": len(data)})
    return answers
"""

CUSTOM_CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 4\nmaxBatchDelay: 5\nresponseTimeout: 3\n"
CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox"]


def _archive(out: Path, *arguments: str) -> Path:
    command = [sys.executable, "-m", "model_archiver.model_packaging", *arguments]
    command += ["--export-path", str(out), "--force"]
    subprocess.run(command, check=True, capture_output=True)
    return out


def custom_archive(out: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    handler = work / "custom_handler.py"
    handler.write_text(CUSTOM_HANDLER)
    config = work / "model-config.yaml"
    config.write_text(CUSTOM_CONFIG)
    _archive(
        out,
        "--model-name", "custom",
        "--version", "1.0",
        "--handler", str(handler),
        "--config-file", str(config),
    )  # fmt: skip
    return out / "custom.mar"


def stock_archive(out: Path, work: Path) -> Path:
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.weight = torch.nn.Parameter(torch.randn(len(CLASSES), 3, generator=generator))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=(2, 3)) @ self.weight.T

    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.pt"
    torch.jit.script(Classifier()).save(str(model))  # type: ignore[no-untyped-call]
    names = work / "index_to_name.json"
    names.write_text(json.dumps({str(i): name for i, name in enumerate(CLASSES)}))
    _archive(
        out,
        "--model-name", "stock",
        "--version", "1.0",
        "--serialized-file", str(model),
        "--handler", "image_classifier",
        "--extra-files", str(names),
    )  # fmt: skip
    return out / "stock.mar"

"""`python -m service`: start the gateway. Flags override `GATEWAY_*` settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from service.logs import configure
from service.server import run
from service.settings import Settings


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--model-store", type=Path, help="model store directory")
    parser.add_argument("--models", help="comma-separated model names to serve (default: all)")
    parser.add_argument("--backend", choices=["onnxruntime", "torchscript", "pt2", "torchserve"])
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--providers", help="comma-separated ONNX Runtime execution providers")
    parser.add_argument("--instances", type=int, help="concurrent batches per model")
    parser.add_argument("--max-batch-size", type=int)
    parser.add_argument("--max-queue-size", type=int)
    parser.add_argument("--max-queue-delay-ms", type=float)
    parser.add_argument("--intra-op-threads", type=int)
    parser.add_argument("--log-level")
    args = vars(parser.parse_args(argv))
    for key in ("models", "providers"):
        if args.get(key):
            args[key] = [item.strip() for item in args[key].split(",") if item.strip()]
    return {key: value for key, value in args.items() if value is not None}


def main(argv: list[str] | None = None) -> None:
    settings = Settings(**parse_args(argv))
    configure(settings.log_level)
    run(settings)


if __name__ == "__main__":
    main()

"""`BACKEND=torchserve make run`: TorchServe with the archives, and the gateway in front of it.

    python -m deploy.torchserve.stack --model-store model_store [--host H] [--port P] [--mode batched]

Serves every model that has both `<store>/<name>.mar` (`make archives`) and a version directory.
TorchServe listens on loopback (`--torchserve-port`, +1 management, +2 metrics) with token auth
on; the gateway reads its key from TorchServe's key_file.json. In `batched` mode (default) the
gateway forms the batches and TorchServe runs with batchSize 1; in `forward` mode every row is
its own TorchServe request and the archives' batch settings apply. Ctrl-C (or SIGTERM) drains
the gateway, then stops TorchServe.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from deploy.torchserve.archive import latest_versions
from deploy.torchserve.launcher import Ports, start_torchserve


def servable_models(model_store: Path) -> list[str]:
    """Models with both an archive and a version directory in the store."""
    return [
        name for name in latest_versions(model_store) if (model_store / f"{name}.mar").is_file()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.torchserve.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--host", default="127.0.0.1", help="gateway bind address")
    parser.add_argument("--port", type=int, default=8000, help="gateway port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gateway gRPC port")
    parser.add_argument("--mode", choices=["batched", "forward"], default="batched")
    parser.add_argument("--torchserve-port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="TorchServe workers per model")
    parser.add_argument("--work-dir", type=Path, help="TorchServe's working directory (logs)")
    args = parser.parse_args(argv)

    models = servable_models(args.model_store)
    if not models:
        print(f"no <name>.mar next to a model in {args.model_store}; run `make archives`")
        return 2
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="torchserve-"))
    port = args.torchserve_port
    with start_torchserve(
        args.model_store,
        work_dir,
        models,
        batch_size=1 if args.mode == "batched" else None,
        workers=args.workers,
        ports=Ports(port, port + 1, port + 2),
    ) as torchserve:
        print(
            f"TorchServe: {torchserve.inference_url} (metrics {torchserve.metrics_url}), "
            f"key file {torchserve.key_file}, logs {work_dir / 'logs'}",
            flush=True,
        )
        environment = {
            **os.environ,
            "GATEWAY_BACKEND": "torchserve",
            "GATEWAY_TORCHSERVE_URL": torchserve.inference_url,
            "GATEWAY_TORCHSERVE_KEY_FILE": str(torchserve.key_file),
            "GATEWAY_TORCHSERVE_MODE": args.mode,
        }
        command = [
            sys.executable,
            "-m",
            "service",
            "--model-store",
            str(args.model_store),
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--grpc-port",
            str(args.grpc_port),
            "--models",
            ",".join(models),
        ]
        # Its own session: a terminal's Ctrl-C reaches only this process, which then sends the
        # gateway exactly one SIGTERM (a second signal would cut its drain short).
        gateway = subprocess.Popen(command, env=environment, start_new_session=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        try:
            while not stop.wait(0.5) and gateway.poll() is None:
                pass
        finally:
            if gateway.poll() is None:
                gateway.send_signal(signal.SIGTERM)  # drains, then exits
                gateway.wait()
    return gateway.returncode


if __name__ == "__main__":
    sys.exit(main())

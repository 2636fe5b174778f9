"""The body of one worker process: TorchServe's own `TorchModelServiceWorker`, set up as
TorchServe's front end sets it up (the extracted archive as working directory and first on
the import path, its own temp dir, the intra-op thread count), logging to a file.

It runs in a child of a fork server that imported torch and TorchServe once, so a worker is
ready in the time its handler takes to load, not the seconds `import torch` takes. This module
imports neither at import time: the fork server preloads them.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path

PRELOAD = ("torch", "ts.model_service_worker", "ts.torch_handler.base_handler")
"""What the fork server imports once for every worker it forks."""
STACK_SIGNAL = signal.SIGUSR1
"""Makes a worker write its main thread's Python stack to its log."""


class _DropMetrics(logging.Filter):
    """TorchServe workers print a `[METRICS]` line per call for the Java front end to parse."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "[METRICS]" not in record.getMessage()


def run_worker(
    socket_name: str, metrics_config: str, model_dir: str, scratch: str, log_file: str,
    threads: int | None,
) -> None:  # fmt: skip
    os.chdir(model_dir)
    sys.path.insert(0, model_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [model_dir, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.environ["TEMP"] = os.environ["TMPDIR"] = scratch
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR
    sink = Path(log_file).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115 (the process's)
    sys.stdout = sys.stderr = sink
    # The gateway asks for the stack of a worker that overran its start (service.native.
    # handler_pool): the reason then says where the handler hung.
    faulthandler.register(STACK_SIGNAL, file=sink, all_threads=False)
    handler = logging.StreamHandler(sink)
    handler.addFilter(_DropMetrics())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    from ts.model_service_worker import TorchModelServiceWorker

    worker = TorchModelServiceWorker("unix", socket_name, None, None, metrics_config)
    try:
        worker.run_server()  # returns only by exiting (the front end's socket closed)
    except Exception:
        logging.exception("the worker failed")
        raise
    finally:
        Path(socket_name).unlink(missing_ok=True)

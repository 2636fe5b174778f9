"""TorchScript and AOTInductor (.pt2) backends. torch is imported only when one is used."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from service.backends.base import BatchTiming, LocalBackend
from service.backends.torch_module import TorchModule
from service.errors import BackendError
from service.feeds import Feed
from service.manifest import Signature

log = logging.getLogger(__name__)


class TorchBackend(LocalBackend):
    """Shared tensor plumbing; subclasses load the module."""

    def __init__(
        self,
        signature: Signature,
        model_path: Path,
        *,
        instances: int = 1,
        device: str = "cpu",
        fp16: bool = False,
        threads: int = 0,
    ) -> None:
        super().__init__(signature, instances)
        self.model_path = model_path
        self.device_name = device
        self.fp16 = fp16
        self.threads = threads
        self.module: Any = None
        self._runner: TorchModule | None = None

    @property
    def description(self) -> str:
        return f"{self.name}[{self.device_name}{',fp16' if self.fp16 else ''}]"

    def load_sync(self) -> None:
        import torch

        if self.device_name == "cuda" and not torch.cuda.is_available():
            log.warning("%s: CUDA requested but not available; using the CPU", self.signature.name)
            self.device_name = "cpu"
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self.module = self._load_module(torch.device(self.device_name))
        except Exception as error:
            raise BackendError(f"cannot load {self.model_path.name}: {error}") from error
        log.info("%s v%s: %s", self.signature.name, self.signature.version, self.description)

    def _load_module(self, device: Any) -> Any:
        raise NotImplementedError

    def run(self, feed: Feed) -> Feed:
        return self._outputs(self._forward(self._inputs(feed)))

    def run_timed(self, feed: Feed, timing: BatchTiming) -> Feed:
        """Conversions to and from torch tensors (device copies included) are input and output."""
        started = time.perf_counter()
        args = self._inputs(feed)
        computing = time.perf_counter()
        timing.input_s += computing - started
        try:
            results = self._forward(args)
        finally:
            converting = time.perf_counter()
            timing.backend_s = converting - computing
        outputs = self._outputs(results)
        timing.output_s += time.perf_counter() - converting
        return outputs

    def _inputs(self, feed: Feed) -> list[Any]:
        return self._module().inputs(feed)

    def _forward(self, args: list[Any]) -> list[Any]:
        return self._module().forward(args)

    def _outputs(self, results: list[Any]) -> Feed:
        return self._module().outputs(results)

    def _module(self) -> TorchModule:
        if self._runner is None:
            import torch

            self._runner = TorchModule(
                self.module, self.signature, torch.device(self.device_name), fp16=self.fp16
            )
        return self._runner


class TorchScriptBackend(TorchBackend):
    name = "torchscript"

    def _load_module(self, device: Any) -> Any:
        import torch

        module = torch.jit.load(str(self.model_path), map_location=device)  # type: ignore[no-untyped-call]
        module.eval()
        return module


class Pt2Backend(TorchBackend):
    name = "pt2"

    def _load_module(self, device: Any) -> Any:
        import torch

        from service.triton.signatures import pt2_contents

        _program, compiled = pt2_contents(self.model_path)
        if compiled:  # an AOTInductor package (what our training writes)
            return torch._inductor.aoti_load_package(str(self.model_path))
        # A torch.export program (what users save with torch.export.save).
        module = torch.export.load(str(self.model_path)).module()
        return module.to(device)

"""ONNX Runtime backend: providers with fallback, thread settings, I/O binding on CUDA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from service.backends.base import LocalBackend
from service.backends.spinning import ONNX_RUNTIME_DEFAULT, Spinning
from service.errors import BackendError
from service.feeds import Feed
from service.manifest import Signature

log = logging.getLogger(__name__)

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def choose_providers(requested: list[str], available: list[str]) -> list[str]:
    """Requested providers that this build has, in order; CPU is always the last resort."""
    chosen = [provider for provider in requested if provider in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend(LocalBackend):
    name = "onnxruntime"

    def __init__(
        self,
        signature: Signature,
        model_path: Path,
        *,
        instances: int = 1,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        graph_optimization: str = "all",
        spinning: Spinning = ONNX_RUNTIME_DEFAULT,
    ) -> None:
        super().__init__(signature, instances)
        self.model_path = model_path
        self.requested = providers or ["CPUExecutionProvider"]
        self.intra_op_threads = intra_op_threads
        self.graph_optimization = graph_optimization
        self.spinning = spinning
        self.session: Any = None
        self.providers: list[str] = []
        self._use_binding = False
        self._output_names = [spec.name for spec in signature.outputs]

    @property
    def description(self) -> str:
        return f"onnxruntime[{','.join(self.providers)}]"

    def load_sync(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        # How idle intra-op threads wait: busy-waiting is faster per batch but costs CPU that
        # other processes may want (`Spinning`, chosen per model by `Settings.spinning`).
        for key, value in self.spinning.session_config().items():
            options.add_session_config_entry(key, value)
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[self.graph_optimization]
        )
        providers = choose_providers(self.requested, ort.get_available_providers())
        skipped = [p for p in self.requested if p not in providers]
        if skipped:
            log.warning(
                "%s: providers not available in this build, skipped: %s",
                self.signature.name,
                skipped,
            )
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=providers
            )
        except Exception as error:  # ORT raises its own exception types
            raise BackendError(f"cannot load {self.model_path.name}: {error}") from error
        self.providers = list(self.session.get_providers())
        self._use_binding = self.providers[0] in (
            "CUDAExecutionProvider",
            "TensorrtExecutionProvider",
        )
        log.info(
            "%s v%s: onnxruntime using %s",
            self.signature.name,
            self.signature.version,
            self.providers,
        )

    def run(self, feed: Feed) -> Feed:
        if self._use_binding:
            return self._run_bound(feed)
        try:
            results = self.session.run(self._output_names, feed)
        except Exception as error:
            raise BackendError(f"onnxruntime failed: {error}") from error
        return dict(zip(self._output_names, results, strict=True))

    def _run_bound(self, feed: Feed) -> Feed:
        """On a GPU: copy inputs to the device once, let ORT allocate outputs there, copy back."""
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        for name in self._output_names:
            binding.bind_output(name, "cuda")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as error:
            raise BackendError(f"onnxruntime failed: {error}") from error
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

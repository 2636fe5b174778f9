"""The TorchServe handler for every model of the store, driven by the model's manifest.

TorchServe gives `handle` a batch of requests; each one is decoded on its own (a bad one gets
its own 4xx and the others go on), the good ones are merged into one feed, computed by the
TorchScript module in one call, and split back: N requests in, N responses out. Pre- and
post-processing are the gateway's (`service.processing`), so answers match the gateway's.

Options come from the `handler:` section of the archive's `model-config.yaml`:
`top_k`, `max_image_pixels`, `max_text_chars`, `max_rows`, `threads` (0: leave torch's default).
This module defines exactly one class: TorchServe instantiates the only class it finds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from handlers.decoding import (
    JSON_CONTENT_TYPE,
    Decoded,
    decode_request,
    encode_answer,
    error_body,
)
from service.backends.torch_module import TorchModule
from service.errors import BackendError, InvalidInput, ServingError
from service.feeds import Feed, merge, split
from service.input_limits import Limits
from service.manifest import Manifest
from service.processing import Processor, processor_for

log = logging.getLogger(__name__)

BATCH_HEADER = "x-ts-batch-size"
"""Response header: how many requests TorchServe put in the batch this answer came from."""

Outcome = Feed | ServingError


class ManifestHandler(BaseHandler):  # type: ignore[misc]  # TorchServe ships no type hints
    def __init__(self) -> None:
        super().__init__()
        self.processor: Processor | None = None
        self.top_k = 5
        self.runner: TorchModule | None = None

    def initialize(self, context: Any) -> None:
        """Read the manifest, pick the device (`gpu_id` when CUDA is present), load the module."""
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        manifest = Manifest.read(model_dir)
        options = handler_options(getattr(context, "model_yaml_config", None))
        defaults = Limits()
        limits = Limits(
            max_image_pixels=int(options.get("max_image_pixels", defaults.max_image_pixels)),
            max_text_chars=int(options.get("max_text_chars", defaults.max_text_chars)),
            max_rows=int(options.get("max_rows", defaults.max_rows)),
        )
        self.top_k = int(options.get("top_k", 5))
        threads = int(options.get("threads", 0))
        if threads > 0:
            torch.set_num_threads(threads)
        self.processor = processor_for(manifest, model_dir, limits)
        self.device = choose_device(properties.get("gpu_id"))
        if manifest.artifacts.torchscript is None:
            raise InvalidInput(f"{manifest.name} has no TorchScript artifact")
        self.model_pt_path = str(model_dir / manifest.artifacts.torchscript)
        self.model = torch.jit.load(self.model_pt_path, map_location=self.device)  # type: ignore[no-untyped-call]
        self.model.eval()
        self.runner = TorchModule(self.model, manifest, self.device)
        self.manifest = context.manifest
        self.initialized = True
        log.info("%s v%d on %s", manifest.name, manifest.version, self.device)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        started = time.perf_counter()
        self.context = context
        decoded = self.preprocess(data)
        outcomes = self._compute(decoded)
        answers = self.postprocess(list(zip(decoded, outcomes, strict=True)))
        metrics = getattr(context, "metrics", None)
        if metrics is not None:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            metrics.add_time("HandlerTime", elapsed_ms, None, "ms")
        return answers

    def preprocess(self, data: list[dict[str, Any]]) -> list[Decoded | ServingError]:
        """Each request -> its feed, or the error it earns."""
        assert self.processor is not None
        decoded: list[Decoded | ServingError] = []
        for index, parameters in enumerate(data):
            try:
                content_types = self._content_types(index, parameters)
                decoded.append(decode_request(self.processor, parameters, content_types))
            except ServingError as error:
                decoded.append(error)
        return decoded

    def inference(self, data: Feed, *args: Any, **kwargs: Any) -> Feed:
        """One merged feed -> outputs (name -> array, batch first), as the gateway's torch
        backends compute it."""
        assert self.runner is not None
        return self.runner(data)

    def postprocess(self, data: list[tuple[Decoded | ServingError, Outcome]]) -> list[bytes]:
        """(request, outputs or error) pairs -> response bodies, with per-request status."""
        assert self.processor is not None
        answers: list[bytes] = []
        for index, (request, outcome) in enumerate(data):
            self.context.set_response_header(index, BATCH_HEADER, str(len(data)))
            if isinstance(request, Decoded) and not isinstance(outcome, ServingError):
                try:
                    body, content_type = encode_answer(
                        self.processor, outcome, request.answer, top_k=self.top_k
                    )
                except ServingError as encoding_error:
                    outcome = encoding_error
                else:
                    self.context.set_response_content_type(index, content_type)
                    answers.append(body)
                    continue
            error = outcome if isinstance(outcome, ServingError) else BackendError("no outputs")
            self.context.set_response_status(error.status_code, reason_phrase(error), idx=index)
            self.context.set_response_content_type(index, JSON_CONTENT_TYPE)
            answers.append(error_body(error))
        return answers

    def _compute(self, decoded: Sequence[Decoded | ServingError]) -> list[Outcome]:
        """Run every decoded request in one batch; if the batch fails, each alone."""
        outcomes: list[Outcome] = [
            item if isinstance(item, ServingError) else {} for item in decoded
        ]
        good = [(index, item) for index, item in enumerate(decoded) if isinstance(item, Decoded)]
        if not good:
            return outcomes
        try:
            batch, rows = merge([item.feed for _, item in good])
            parts = split(self.inference(batch), rows)
        except (MemoryError, torch.cuda.OutOfMemoryError):
            raise  # TorchServe answers 507 for the whole batch
        except Exception as error:
            if len(good) == 1:
                outcomes[good[0][0]] = as_serving_error(error)
                return outcomes
            log.warning("batch of %d failed (%s); computing each request alone", len(good), error)
            for index, item in good:
                try:
                    outcomes[index] = self.inference(item.feed)
                except (MemoryError, torch.cuda.OutOfMemoryError):
                    raise
                except Exception as single_error:
                    outcomes[index] = as_serving_error(single_error)
            return outcomes
        for (index, _), part in zip(good, parts, strict=True):
            outcomes[index] = part
        return outcomes

    def _content_types(self, index: int, parameters: Mapping[str, Any]) -> dict[str, str]:
        """Parameter name -> its content type, from TorchServe's per-request headers."""
        headers = self.context.get_all_request_header(index)
        types: dict[str, str] = {}
        for name in parameters:
            entry = headers.get(name)
            if isinstance(entry, Mapping):
                types[name] = str(entry.get("content-type") or "")
        return types


def handler_options(model_yaml_config: Any) -> dict[str, Any]:
    """The `handler:` section of model-config.yaml (empty when absent)."""
    if not isinstance(model_yaml_config, Mapping):
        return {}
    section = model_yaml_config.get("handler")
    return dict(section) if isinstance(section, Mapping) else {}


def choose_device(gpu_id: Any) -> torch.device:
    """TorchServe's GPU for this worker when CUDA is present, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def as_serving_error(error: Exception) -> ServingError:
    if isinstance(error, ServingError):
        return error
    return BackendError(f"inference failed: {type(error).__name__}: {error}")


def reason_phrase(error: ServingError, limit: int = 200) -> str:
    """The message as a valid HTTP reason phrase: printable ASCII, one line, bounded."""
    phrase = "".join(char if " " <= char <= "~" else "?" for char in error.message)
    return phrase[:limit]

"""The HTTP error boundary: the one place an error becomes an HTTP answer, for the fast path
and FastAPI's stack alike. The answer's form follows the route family: `{"error": ...}` for
the Open Inference Protocol, KServe V1 and the operations routes; TorchServe's
`{"code", "type", "message"}` for TorchServe's APIs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from fastapi.responses import Response

from service.codecs import torchserve
from service.errors import ServingError
from service.routes.common import json_response

log = logging.getLogger(__name__)


class ErrorForm(Enum):
    OPEN_INFERENCE = "error"
    TORCHSERVE = "torchserve"


TORCHSERVE_MANAGEMENT = ("/models",)
"""TorchServe's management API (served with the archives)."""
TORCHSERVE_PREDICTIONS = ("/predictions",)


@dataclass(frozen=True, slots=True)
class ErrorBoundary:
    torchserve_paths: tuple[str, ...] = ()
    """Path prefixes whose errors take TorchServe's form."""

    def form(self, path: str) -> ErrorForm:
        for prefix in self.torchserve_paths:
            if path == prefix or path.startswith(prefix + "/"):
                return ErrorForm.TORCHSERVE
        return ErrorForm.OPEN_INFERENCE

    def answer(self, path: str, error: ServingError) -> Response:
        return self.response(path, error.status_code, error.message, error.headers)

    def unexpected(self, path: str) -> Response:
        """An exception no layer expected: logged with its traceback, answered 500."""
        log.exception("unhandled error")
        return self.response(path, 500, "internal server error")

    def response(
        self, path: str, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        if self.form(path) is ErrorForm.TORCHSERVE:
            body = torchserve.error_body(status, message, torchserve.ERROR_TYPES.get(status))
            return Response(body, status, media_type="application/json", headers=headers)
        return json_response({"error": message}, status, headers)


def boundary_for(serves_archives: bool) -> ErrorBoundary:
    """TorchServe's management API speaks its own error form; so does `/predictions` when
    archives' own handlers answer it (otherwise it keeps the gateway's `{"error"}`)."""
    if serves_archives:
        return ErrorBoundary(TORCHSERVE_MANAGEMENT + TORCHSERVE_PREDICTIONS)
    return ErrorBoundary(TORCHSERVE_MANAGEMENT)

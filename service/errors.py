"""One error hierarchy for the whole request path; each error carries its HTTP status and
the name of its gRPC status code.

HTTP code turns every `ServingError` into `{"error": message}` with `status_code`; gRPC code
aborts with `grpc.StatusCode[grpc_status]` and the message (`service.grpc.errors`).
"""

from __future__ import annotations


class ServingError(Exception):
    """Base error: a message safe to show to clients and an HTTP status."""

    status_code = 500
    grpc_status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ServingError):
    """The request is malformed or does not fit the model."""

    status_code = 400
    grpc_status = "INVALID_ARGUMENT"


class Unauthorized(ServingError):
    status_code = 401
    grpc_status = "UNAUTHENTICATED"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServingError):
    status_code = 403
    grpc_status = "PERMISSION_DENIED"


class NotFound(ServingError):
    status_code = 404
    grpc_status = "NOT_FOUND"


class PayloadTooLarge(ServingError):
    status_code = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(ServingError):
    status_code = 415
    grpc_status = "INVALID_ARGUMENT"


class Unavailable(ServingError):
    """Not ready, shutting down, overloaded or backend down: retry later."""

    status_code = 503
    grpc_status = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelNotReady(Unavailable):
    pass


class QueueFull(Unavailable):
    pass


class ShuttingDown(Unavailable):
    pass


class BackendUnavailable(Unavailable):
    pass


class DeadlineExceeded(ServingError):
    status_code = 504
    grpc_status = "DEADLINE_EXCEEDED"


class BackendError(ServingError):
    """The backend failed while computing a batch."""

    status_code = 500
    grpc_status = "INTERNAL"


class ClientDisconnected(ServingError):
    """The client went away while its request waited; nothing will read the answer."""

    status_code = 499
    grpc_status = "CANCELLED"


class ModelConfigError(InvalidInput):
    """A model's configuration (`config.pbtxt`, or what its file records) cannot be served as
    written. The message names the file, the field or the tensor; the loader reports that model
    not ready with it, and the other models serve."""


class AlreadyExists(InvalidInput):
    """The name is taken (a shared memory region registered twice)."""

    grpc_status = "ALREADY_EXISTS"


class NotSupported(ServingError):
    """A protocol feature this server does not offer (CUDA shared memory), or one its
    settings turn off. HTTP 400, not 501: the request is the client's to change, and no route
    answers a 5xx for what the client asked."""

    status_code = 400
    grpc_status = "UNIMPLEMENTED"

"""TorchServe's error form: `{"code", "type", "message"}`, written as its front end writes it.
Used for the gateway's own errors on TorchServe's routes, and for a handler batch that failed
as a whole."""

from __future__ import annotations

import json

ERROR_TYPES = {
    400: "BadRequestException",
    401: "InvalidKeyException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "RequestEntityTooLargeException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}
"""HTTP status -> the exception name TorchServe's front end puts under `type`."""


def error_body(code: int, message: str, kind: str | None = None) -> bytes:
    """TorchServe's error JSON: its three keys, pretty-printed with two-space indents as its
    front end writes them. Without `kind`: TorchServe's generic server or request error (a
    handler batch that failed as a whole)."""
    kind = kind or ("InternalServerException" if code >= 500 else "BadRequestException")
    text = json.dumps(message, ensure_ascii=False)
    return f'{{\n  "code": {code},\n  "type": "{kind}",\n  "message": {text}\n}}'.encode()

"""A pure-ASGI guard that answers 413 for bodies over the limit without reading them whole, and
closes the connection after that answer; a client gone mid-body becomes `ClientDisconnected`.
Once a request is answered, its body's size goes to `note` (`service.memory.AllocatorTrim`)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ClientDisconnected, PayloadTooLarge

CLOSE = (b"connection", b"close")


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        note: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.note = note

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "Content-Length is not a number")
                    return
                if declared > self.max_body_bytes:
                    await _reject(send, 413, self._message())
                    return
                break
        received = 0
        limit = self.max_body_bytes
        body_complete = False
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, body_complete, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge(f"request body exceeds {limit} bytes")
                body_complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not body_complete:
                # Gone mid-body: a client disconnect (499) like any other, not starlette's
                # ClientDisconnect escaping as a 500. After the body, a disconnect is news
                # that a route may be waiting for (service.routes.common.disconnected).
                raise ClientDisconnected("client disconnected while sending the body")
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                if too_large:
                    # The rest of the body is never read: end the connection after this answer
                    # instead of letting the server read (and discard) a body without end.
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await _reject(send, 413, self._message())
        finally:
            self.note(received)

    def _message(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes"


class _TooLarge(PayloadTooLarge):
    """Raised from `receive`; routes answer it as any ServingError, or this middleware does."""


async def _reject(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                CLOSE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

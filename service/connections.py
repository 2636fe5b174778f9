"""uvicorn's httptools protocol with the bounds it lacks before a request reaches the app.

uvicorn bounds only the wait *between* requests (`timeout_keep_alive`, armed after a response):
a connection that never sends a request, sends its headers a byte at a time, or trickles its
body, is held for ever (with an app task waiting for the body), and httptools accepts headers
of any size and number (it joins a header's pieces by bytes concatenation, so one 200 MB header
took 39 s on the event loop). This protocol adds:

- a header deadline: a request's line and headers must be complete within `header_timeout_s`
  of the connection opening, or of the first slice of a request that left them incomplete (a
  request whose headers arrive in one slice arms no timer: no cost per request); the deadline
  is absolute, so trickling bytes does not extend it. Past it the connection is closed (with a
  408 answer when part of a request arrived). Between requests, uvicorn's keep-alive timeout
  closes idle connections;
- a body deadline: a request whose body is still incomplete at the end of the slice that
  completed its headers must complete it within `body_timeout_s` (again absolute; a request
  that arrives whole in one slice arms no timer). Past it the connection is closed, with a 408
  answer when the app has not started its response; the app's `receive` then gives
  `http.disconnect` (recorded as a client disconnect, 499);
- at most `max_header_bytes` of request line and headers, counted before the parser sees them,
  and at most `max_headers` headers: beyond either, 431 and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class _HeadersRefused(Exception):
    """Raised from a parser callback to stop parsing; uvicorn turns it into a 400, which
    `send_400_response` below answers as 431."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._awaiting_headers = True
        # From a request's first byte to its message's end (its headers, then its body).
        self._in_request = False
        self._header_bytes = 0
        self._refusal: str | None = None
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(
        cls,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        max_header_bytes: int,
        max_headers: int,
    ) -> type[BoundedHttpToolsProtocol]:
        """A subclass carrying these limits (uvicorn builds protocols from a class)."""
        return type(  # type: ignore[return-value]
            cls.__name__,
            (cls,),
            {
                "header_timeout_s": header_timeout_s,
                "body_timeout_s": body_timeout_s,
                "max_header_bytes": max_header_bytes,
                "max_headers": max_headers,
            },
        )

    # -- the header deadline ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self._disarm_body_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.header_timeout_s, self._header_deadline_passed
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if not self._awaiting_headers or self.transport.is_closing():
            return
        # No 408 while the previous request's answer may still be on the wire (pipelining).
        answering = self.cycle is not None and not self.cycle.response_complete
        if (self._in_request or self._header_bytes) and not answering:
            message = f"request headers not received within {self.header_timeout_s:g} s"
            self._answer_and_close(408, "Request Timeout", message)
        else:
            self.transport.close()

    # -- the body deadline -----------------------------------------------------------------

    def _arm_body_deadline(self) -> None:
        if self._body_deadline is None:
            self._body_deadline = self.loop.call_later(
                self.body_timeout_s, self._body_deadline_passed
            )

    def _disarm_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_deadline_passed(self) -> None:
        self._body_deadline = None
        if not self._in_request or self._awaiting_headers or self.transport.is_closing():
            return
        cycle = self.cycle
        # Its app already answering, or (pipelined) queued behind a request whose answer may
        # be on the wire: close without a 408.
        answering = cycle is None or cycle.response_started or bool(self.pipeline)
        if cycle is not None:
            # What `connection_lost` does, at once: the app's `receive` gives
            # `http.disconnect`, and its `send` writes nothing after the 408.
            cycle.disconnected = True
            cycle.message_event.set()
        if answering:
            self.transport.close()
        else:
            message = f"request body not received within {self.body_timeout_s:g} s"
            self._answer_and_close(408, "Request Timeout", message)

    # -- the header bounds -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_headers:
            # More of a body (its deadline is armed), perhaps followed by the next request.
            super().data_received(data)
        elif len(data) <= self.max_header_bytes - self._header_bytes:
            # The common case (a whole request, or its start, in one slice): no copy. Body
            # bytes in the slice count towards the headers' room until the message completes:
            # at most one slice, so the bound holds within a factor of two.
            self._header_bytes += len(data)
            super().data_received(data)
        else:
            self._feed_bounded(data)
        # A request still incomplete after this slice: from now on it has a deadline, for its
        # headers, then (from the slice that completes them) for its body. A request that
        # arrives whole in one slice never arms a timer: `_in_request` is false again.
        if self._in_request:
            if self.transport.is_closing():
                return
            if self._awaiting_headers:
                self._arm_header_deadline()
            else:
                self._arm_body_deadline()
        elif (
            self._awaiting_headers
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        ):
            # Bytes that began no request (llhttp skips CRLFs between requests) stopped
            # uvicorn's keep-alive timer, and no pending answer will restart it: the next
            # request's headers have their deadline from now.
            self._arm_header_deadline()

    def _feed_bounded(self, data: bytes) -> None:
        """Feed the parser at most the room left for this request's line and headers; once
        the headers are complete the rest (the body) passes untouched."""
        while data:
            if not self._awaiting_headers:
                super().data_received(data)
                return
            room = self.max_header_bytes - self._header_bytes
            if room <= 0:
                self._refusal = f"request line and headers exceed {self.max_header_bytes} bytes"
                self.send_400_response(self._refusal)
                return
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self.transport.is_closing():
                return

    def on_message_begin(self) -> None:
        self._in_request = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        if self._header_deadline is not None:
            self._disarm_header_deadline()
        if len(self.headers) > self.max_headers:
            # Counted here, not per header: the byte bound already caps what was parsed.
            self._refusal = f"more than {self.max_headers} request headers"
            raise _HeadersRefused(self._refusal)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._in_request = False
        self._header_bytes = 0
        if self._body_deadline is not None:
            self._disarm_body_deadline()

    def handle_websocket_upgrade(self) -> None:
        # The connection is the WebSocket protocol's from here: no HTTP deadline applies.
        self._in_request = self._awaiting_headers = False
        self._disarm_header_deadline()
        self._disarm_body_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._answer_and_close(431, "Request Header Fields Too Large", self._refusal)

    def _answer_and_close(self, status: int, phrase: str, message: str) -> None:
        body = orjson.dumps({"error": message})
        head = [f"HTTP/1.1 {status} {phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

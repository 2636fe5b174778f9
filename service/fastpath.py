"""Serves the inference routes ahead of FastAPI's middleware, routing and dependency injection.

Measured in-process on the tiny tabular model, FastAPI's stack around an endpoint cost more
CPU than the endpoint itself; at the request rates a small model reaches that is most of the
server. The same `RouteSpec`s are registered with FastAPI too, so OpenAPI documents them and
anything this path does not match (other methods, odd paths) falls through to FastAPI.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.convertors import Convertor
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServingError
from service.routes.errors import ErrorBoundary
from service.routes.table import Endpoint, RouteSpec


class FirstValueHeaders(Headers):
    """The request's headers, looked up in a dict built once.

    starlette's `get` scans the header list and raises and catches a `KeyError` for every
    header that is absent; the inference routes ask for four that usually are (authorization,
    the timeout, the content encoding, the binary header's length). The first of repeated
    names wins, as in starlette's `__getitem__`.
    """

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__(raw=raw)
        self._first = dict(reversed(raw))

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._first.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


class HotRequest(Request):
    """starlette's `Request` with the two reads every inference request makes, its headers and
    its whole body, done directly (in-process the two cost ~5 µs of a ~80 µs iris request
    through starlette's generic forms)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self._headers = FirstValueHeaders(scope["headers"])

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            if self._stream_consumed:
                raise RuntimeError("Stream consumed")
            chunks: list[bytes] = []
            while True:
                message = await self._receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                elif message["type"] == "http.disconnect":
                    self._is_disconnected = True
                    raise ClientDisconnect()
            self._stream_consumed = True
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body


class FastPath:
    def __init__(self, app: ASGIApp, routes: Sequence[RouteSpec], errors: ErrorBoundary) -> None:
        self.app = app
        self.errors = errors
        self.routes: list[
            tuple[frozenset[str], object, dict[str, Convertor[object]], Endpoint]
        ] = []
        for spec in routes:
            regex, _format, convertors = compile_path(spec.path)
            self.routes.append((frozenset(spec.methods), regex, convertors, spec.endpoint))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for methods, regex, convertors, endpoint in self.routes:
                match = regex.match(path)  # type: ignore[attr-defined]
                if match is None or method not in methods:
                    continue
                scope["path_params"] = {
                    name: convertors[name].convert(value)
                    for name, value in match.groupdict().items()
                }
                await self._serve(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request = HotRequest(scope, receive, send)
        try:
            response = await endpoint(request)
        except ServingError as error:
            response = self.errors.answer(scope["path"], error)
        except Exception:
            response = self.errors.unexpected(scope["path"])
        await response(scope, receive, send)

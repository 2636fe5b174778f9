"""TorchServe backend: the gateway batches, TorchServe (with `handlers.manifest_handler`) computes.

Feeds travel as safetensors tensor payloads (`service.backends.tensor_payload`) to
`/predictions/<name>/<version>`, so the archive's version must match the manifest's. Two modes:

- `batched` (default): each gateway batch is one TorchServe request; give those models
  TorchServe `batchSize: 1` so TorchServe adds no batching delay of its own.
- `forward`: each row is its own TorchServe request, batched again by TorchServe's batcher.

Errors: connection refused/reset and TorchServe 503/507 -> 503 at once; no answer within
`torchserve_timeout_s` -> 504; the handler's 4xx -> 400 (413 stays 413) with its message.
The bearer token comes from the settings or TorchServe's `key_file.json`, which is read again
whenever TorchServe rejects the key (a restarted TorchServe writes new keys).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import numpy as np

from service.backends.base import Backend
from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from service.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    PayloadTooLarge,
    ServingError,
)
from service.feeds import Feed, rows_of
from service.manifest import Manifest
from service.settings import Settings

log = logging.getLogger(__name__)

_KEY_REJECTED = "InvalidKeyException"
_PROBE_TIMEOUT_S = 1.0
_CONNECT_TIMEOUT_S = 2.0


class TorchServeBackend(Backend):
    name = "torchserve"

    def __init__(self, manifest: Manifest, settings: Settings) -> None:
        super().__init__(manifest)
        self.base_url = settings.torchserve_url.rstrip("/")
        self.url = f"{self.base_url}/predictions/{manifest.name}/{manifest.version}"
        self.mode = settings.torchserve_mode
        self.timeout_s = settings.torchserve_timeout_s
        self.connections = settings.torchserve_connections
        self.fixed_token = (
            settings.torchserve_token.get_secret_value() if settings.torchserve_token else None
        )
        self.key_file = settings.torchserve_key_file
        self.propagate_traces = settings.tracing
        self.token: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._output_names = [spec.name for spec in manifest.outputs]

    @property
    def description(self) -> str:
        return f"torchserve[{self.mode}] {self.url}"

    async def load(self) -> None:
        """Open the connection pool and check that TorchServe answers `/ping`."""
        self.token = self._read_token()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=_CONNECT_TIMEOUT_S),
            # TorchServe copies every header to its Python worker field by field: send few.
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        if not await self.healthy():
            raise BackendUnavailable(f"backend unavailable: TorchServe at {self.base_url} is down")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def healthy(self) -> bool:
        """Whether TorchServe's `/ping` says Healthy (with the current key)."""
        if self._session is None:
            return False
        for attempt in range(2):
            try:
                async with self._session.get(
                    f"{self.base_url}/ping",
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S),
                ) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                return False
            if status == 200:
                return _json_field(body, "status") == "Healthy"
            if attempt == 0 and _key_rejected(status, body) and self._refresh_token():
                continue
            return False
        return False

    async def infer(self, feed: Feed) -> Feed:
        rows = rows_of(feed)
        if self.mode == "forward" and rows > 1:
            parts = await asyncio.gather(
                *(
                    self._post({name: array[row : row + 1] for name, array in feed.items()}, 1)
                    for row in range(rows)
                )
            )
            return {
                name: np.concatenate([part[name] for part in parts]) for name in self._output_names
            }
        return await self._post(feed, rows)

    async def _post(self, feed: Feed, rows: int) -> Feed:
        body = encode_feed(feed)
        key_refreshed = reconnected = False
        while True:
            try:
                status, content_type, payload = await self._send(body)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                # A pooled keep-alive connection may have been closed under us: one fresh try
                # (inference is a pure function). A TorchServe that is down refuses it at once.
                if reconnected:
                    raise self._unreachable(error) from None
                reconnected = True
                continue
            if status == 200:
                return self._outputs(content_type, payload, rows)
            if not key_refreshed and _key_rejected(status, payload) and self._refresh_token():
                key_refreshed = True
                continue
            raise self._error(status, payload)

    async def _send(self, body: bytes) -> tuple[int, str, bytes]:
        """One POST; raises DeadlineExceeded, BackendUnavailable, or the two errors `_post`
        retries once."""
        if self._session is None:
            raise BackendUnavailable("backend unavailable: TorchServe backend is closed")
        headers = {**self._headers(), "Content-Type": CONTENT_TYPE}
        if self.propagate_traces:
            from service.tracing import outgoing_headers

            headers.update(outgoing_headers())  # the batch's span: TorchServe's work joins it
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                return (
                    response.status,
                    response.headers.get("Content-Type", ""),
                    await response.read(),
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            raise self._unreachable(error) from None  # refused, or no connection in time
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            raise
        except TimeoutError:
            raise DeadlineExceeded(
                f"TorchServe did not answer within {self.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"backend unavailable: cannot reach TorchServe at {self.base_url} "
            f"({type(error).__name__})"
        )

    def _outputs(self, content_type: str, payload: bytes, rows: int) -> Feed:
        return tensor_answer(content_type, payload, rows, self._output_names, "TorchServe")

    def _error(self, status: int, payload: bytes) -> ServingError:
        if _key_rejected(status, payload) or status in (401, 403):
            return BackendUnavailable(
                "backend unavailable: TorchServe rejected the inference key "
                "(check torchserve_token / torchserve_key_file)"
            )
        if status == 404:
            message = _json_field(payload, "message") or payload[:500].decode("utf-8", "replace")
            return BackendUnavailable(
                f"backend unavailable: TorchServe does not serve {self.signature.name} "
                f"version {self.signature.version}: {message}"
            )
        return answer_error(status, payload, "TorchServe")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _read_token(self) -> str | None:
        if self.fixed_token is not None:
            return self.fixed_token
        if self.key_file is None:
            return None
        try:
            keys: dict[str, Any] = json.loads(self.key_file.read_text())
            return str(keys["inference"]["key"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("cannot read the TorchServe key from %s: %s", self.key_file, error)
            return None

    def _refresh_token(self) -> bool:
        """Re-read the key file; True when it holds a different key than the one rejected."""
        token = self._read_token()
        if token is None or token == self.token:
            return False
        self.token = token
        log.info("%s: TorchServe inference key re-read from %s", self.signature.name, self.key_file)
        return True


def _key_rejected(status: int, payload: bytes) -> bool:
    """TorchServe 0.12 answers a missing or wrong key with 400 InvalidKeyException."""
    return status in (400, 401) and _json_field(payload, "type") == _KEY_REJECTED


def _json_field(payload: bytes, key: str) -> str | None:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict) and isinstance(value.get(key), str):
        return str(value[key])
    return None


def tensor_answer(
    content_type: str, payload: bytes, rows: int, output_names: list[str], source: str
) -> Feed:
    """A handler's safetensors answer -> the outputs the manifest names, `rows` rows each."""
    if content_type.split(";", 1)[0].strip().lower() != CONTENT_TYPE:
        raise BackendError(
            f"{source} answered {content_type or 'no content type'}, "
            f"not {CONTENT_TYPE}: is the archive built by deploy.torchserve.archive?"
        )
    try:
        outputs = decode_feed(payload)
    except InvalidInput as error:
        raise BackendError(f"{source} answer: {error.message}") from None
    missing = [name for name in output_names if name not in outputs]
    if missing:
        raise BackendError(f"{source} answer lacks outputs {missing}")
    for name in output_names:
        if outputs[name].shape[:1] != (rows,):
            raise BackendError(
                f"{source} output {name!r} has shape {outputs[name].shape} for {rows} rows"
            )
    return {name: outputs[name] for name in output_names}


def answer_error(status: int, payload: bytes, source: str) -> ServingError:
    """A handler's error answer (TorchServe's `{"code", "type", "message"}`) -> our error."""
    message = _json_field(payload, "message") or payload[:500].decode("utf-8", "replace")
    if status == 413:
        return PayloadTooLarge(message)
    if 400 <= status < 500:
        return InvalidInput(message)
    if status in (503, 507) or (status == 500 and "Worker died" in message):
        # TorchServe answers 500 "Worker died." for a request that met a worker it is
        # restarting: retry later, as for the native runtime's dead worker (503).
        return BackendUnavailable(f"backend unavailable: {source}: {message}")
    if status == 504:
        return DeadlineExceeded(f"{source}: {message}")
    return BackendError(f"{source} answered {status}: {message}")

"""Headless Chromium (the Debian package) driven over the DevTools protocol, for page tests.

Only what the tests need: open a page, record every request it makes, wait for a condition
inside the page, evaluate JavaScript, take a screenshot. The protocol runs over the
`websockets` client the gateway already depends on, so no browser-automation package (and no
browser download) is needed. Chromium resolves no host name except 127.0.0.1 and localhost,
so a page that tried to reach another host would fail visibly, and the attempt is recorded.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class DevToolsError(RuntimeError):
    pass


class Page:
    """One tab, attached over a flat DevTools session."""

    def __init__(self, socket: ClientConnection, session: str, ids: Iterator[int]) -> None:
        self.socket = socket
        self.session = session
        self.ids = ids
        self.requests: list[str] = []
        """Every URL the page asked for (documents, scripts, styles, fetches, images)."""
        self.blocked: dict[str, str] = {}
        """URL -> why the browser did not send it (e.g. `csp`: the page's policy forbids it)."""
        self.failed: list[str] = []
        self._urls: dict[str, str] = {}
        self.console_errors: list[str] = []
        self._events: list[dict[str, Any]] = []

    def send(self, method: str, timeout_s: float = 60, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        message = {"id": ident, "method": method, "params": params, "sessionId": self.session}
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=timeout_s))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            self._event(reply)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
            self._urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            url = self._urls.get(params.get("requestId", ""), "?")
            if params.get("blockedReason"):
                self.blocked[url] = params["blockedReason"]
            else:
                self.failed.append(f"{url}: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            self.console_errors.append(" ".join(texts)[:500])
        self._events.append(message)

    def wait_event(self, method: str, timeout_s: float = 60) -> dict[str, Any]:
        for index, seen in enumerate(self._events):
            if seen.get("method") == method:
                del self._events[index]
                return seen
        while True:
            message = json.loads(self.socket.recv(timeout=timeout_s))
            self._event(message)
            if message.get("method") == method and message.get("sessionId") == self.session:
                self._events.remove(message)
                return message

    def open(self, url: str, width: int = 1280, height: int = 1400) -> None:
        """Navigate and wait for the load event."""
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self._events.clear()
        navigated = self.send("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise DevToolsError(f"navigating to {url}: {navigated['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout_s: float = 60) -> Any:
        """The value of a JavaScript expression; a promise is awaited inside the page."""
        result = self.send(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"page script failed: {text}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout_ms: int = 30_000) -> Any:
        """Wait inside the page until the JavaScript `condition` is truthy; return its value
        (True for an object, such as an element)."""
        script = f"""new Promise((resolve, reject) => {{
            const deadline = Date.now() + {timeout_ms};
            const check = () => {{
                let value;
                try {{ value = ({condition}); }} catch (error) {{ value = null; }}
                if (value) resolve(typeof value === "object" ? true : value);
                else if (Date.now() > deadline) reject(new Error("timed out waiting for: " +
                    {json.dumps(condition)}));
                else requestAnimationFrame(check);
            }};
            check();
        }})"""
        return self.evaluate(script, timeout_s=timeout_ms / 1000 + 10)

    def screenshot(self, path: Path) -> Path:
        shot = self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Chromium:
    """A headless Chromium process with a fresh profile, and its DevTools connection."""

    def __init__(self, executable: str, profile: Path, timeout_s: float = 60) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "LANG": "C.UTF-8"},
        )
        self.log: list[str] = []
        endpoint: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_log, args=(endpoint,), daemon=True)
        self._reader.start()
        try:
            url = endpoint.get(timeout=timeout_s)
        except queue.Empty:
            url = None
        if url is None:
            self.close()
            raise DevToolsError("Chromium printed no DevTools address:\n" + "\n".join(self.log))
        self.url = url
        self.socket: ClientConnection | None = None
        self.ids = itertools.count(1)

    def _read_log(self, endpoint: queue.Queue[str | None]) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if line.startswith("DevTools listening on "):
                endpoint.put(line.removeprefix("DevTools listening on "))
        endpoint.put(None)

    def _browser_call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.socket is not None, "not connected"
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]

    def new_page(self) -> Page:
        target = self._browser_call("Target.createTarget", url="about:blank")
        attached = self._browser_call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        assert self.socket is not None
        return Page(self.socket, attached["sessionId"], self.ids)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)  # it stops at the end of Chromium's output
        if self.process.stderr is not None and not self._reader.is_alive():
            self.process.stderr.close()


@contextmanager
def chromium(profile: Path) -> Iterator[Chromium]:
    executable = chromium_path()
    if executable is None:
        raise DevToolsError("no chromium on PATH (deploy/install-system.sh installs it)")
    browser = Chromium(executable, profile)
    try:
        with connect(browser.url, max_size=None, open_timeout=60) as socket:
            browser.socket = socket
            yield browser
    finally:
        browser.close()

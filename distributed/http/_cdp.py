"""A minimal Chrome DevTools Protocol driver for headless Chromium.

Used by the browser tests and the docs' screenshot script only: it starts
``chromium --headless`` with its own profile directory, talks to it over
the DevTools websocket (Tornado's client: no playwright or selenium), opens
pages, evaluates expressions, records console errors, exceptions, dialogs
and every requested URL, and takes screenshots.

Not part of the dashboard's serving path.  Runs on the caller's event loop.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from tornado.websocket import websocket_connect

__all__ = ["find_chromium", "Browser", "FLAGS"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio"]


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary, or None.

    >>> find_chromium() is None or os.path.exists(find_chromium())
    True
    """
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium and one page in it.

    >>> async def main():                                       # doctest: +SKIP
    ...     async with Browser() as b:
    ...         await b.goto("http://127.0.0.1:8787/status")
    ...         print(await b.evaluate("document.title"))
    """

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 800):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("no chromium binary found (apt-get install chromium)")
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self.profile = tempfile.mkdtemp(prefix="dask-chromium-")
        self.ws = None
        self.session: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.console_errors: list[str] = []
        self.exceptions: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self._loaded = asyncio.Event()

    async def __aenter__(self) -> Browser:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(port_file):
                lines = open(port_file).read().split()
                if len(lines) >= 2:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s "
                                   f"(exit code {self.proc.poll()})")
            await asyncio.sleep(0.05)
        self.ws = await websocket_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_message_size=64 << 20)
        self._reader = asyncio.ensure_future(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                   browser=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        # An alert() would block the page: note it and dismiss it.
        await self.send("Page.setLifecycleEventsEnabled", {"enabled": True})

    async def _read(self) -> None:
        while True:
            msg = await self.ws.read_message()
            if msg is None:
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the DevTools connection closed"))
                return
            data = json.loads(msg)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.failed.append(params.get("errorText", ""))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            asyncio.ensure_future(self.send("Page.handleJavaScriptDialog", {"accept": True}))
        elif method == "Page.loadEventFired":
            self._loaded.set()

    async def send(self, method: str, params: dict | None = None, browser: bool = False,
                   timeout: float = 30) -> dict:
        """One DevTools command; its result."""
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.write_message(json.dumps(msg))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"chromium did not answer {method} within {timeout} s") from None

    async def goto(self, url: str, timeout: float = 30) -> None:
        """Open ``url`` and wait for its load event."""
        self._loaded.clear()
        await self.send("Page.navigate", {"url": url})
        try:
            await asyncio.wait_for(self._loaded.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{url} did not load within {timeout} s") from None

    async def evaluate(self, expression: str):
        """The JSON value of ``expression`` in the page."""
        out = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True})
        if "exceptionDetails" in out:
            raise RuntimeError(f"evaluating {expression!r} failed: {out['exceptionDetails']}")
        return out.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 15, what: str | None = None):
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or expression} not true within {timeout} s")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: str) -> None:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    async def close(self) -> None:
        """Close the browser (its whole process group) and remove its profile."""
        if self.ws is not None:
            try:
                await self.send("Browser.close", browser=True, timeout=5)
            except Exception:
                pass
            self.ws.close()
            self.ws = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self.proc is not None:
            deadline = time.monotonic() + 5
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # Chromium's helpers (zygote, renderers) share its session: end the
            # group we started, by its id, then reap the browser.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while self.proc.poll() is None and time.monotonic() < deadline + 5:
                await asyncio.sleep(0.05)
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

No websocket client or driver binary needed: Chromium reads NUL-terminated JSON commands on
fd 3 and writes replies and events on fd 4.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    override = os.environ.get("DLLMFLOW_CHROMIUM")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


def _high_fd(fd: int, lowest: int = 10) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return high


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self._log_path = profile.parent / "chromium.log"
        self._log = self._log_path.open("wb")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Lift the child's ends above 4 so the redirections below cannot clobber each other.
        to_chrome_r, from_chrome_w = (_high_fd(fd) for fd in (to_chrome_r, from_chrome_w))
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", "--mute-audio",
            f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        # bash (dash only takes one-digit fds) moves the pipe ends to the fds Chromium expects.
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "bash", "-c", script, binary, *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-chars:]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("timed out waiting for Chromium")
            if self.proc.poll() is not None:
                raise BrowserError(
                    f"Chromium exited with {self.proc.returncode}: {self.log_tail()}"
                )
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        try:
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            self.proc.wait(timeout=5)
            raise BrowserError(
                f"Chromium exited ({self.proc.returncode}): {self.log_tail()}"
            ) from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError:
                last = None  # the page is navigating
            if last:
                return last
            time.sleep(interval)
        raise BrowserError(f"timed out waiting for {expression!r} (last value {last!r})")

    def mark_page(self) -> None:
        """Tag the current document, so wait_for_new_page can tell when it was replaced."""
        self.evaluate("window.__dllmflowOld = true")

    def wait_for_new_page(self, timeout: float = 20.0) -> None:
        self.wait_for(
            "!window.__dllmflowOld && document.readyState === 'complete'"
            " && !location.search.includes('token=')",
            timeout,
        )

    def goto(self, url: str) -> None:
        self.mark_page()
        self.send("Page.navigate", {"url": url})
        self.wait_for_new_page()

    def login(self, base_url: str, token: str, next_path: str) -> None:
        """Open `next_path` through the /login form, as an operator does (the API accepts no
        token in the URL)."""
        self.goto(f"{base_url}{next_path}")  # redirected to /login?next=...
        self.mark_page()
        self.evaluate(
            "(() => { const f = document.querySelector('form[action=\"/login\"]');"
            f" f.elements.token.value = {json.dumps(token)}; f.submit(); }})()"
        )
        self.wait_for_new_page()

    def screenshot(self, path: Path, max_height: int | None = None) -> Path:
        """The whole page (or its top `max_height` CSS pixels) as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        height = size["height"] if max_height is None else min(size["height"], max_height)
        clip = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
        params = {"format": "png", "clip": clip, "captureBeyondViewport": True}
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close", session=False, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

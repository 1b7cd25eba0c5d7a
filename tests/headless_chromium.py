"""A small client for headless Chromium over the DevTools protocol, for the site test.

    with StaticServer(html_dir) as server, Chromium.launch(profile_dir) as browser:
        browser.open(server.url("book/intro.html"))
        browser.evaluate("document.title")
        browser.screenshot(path)

Chromium is Debian's ``chromium`` (``.ci/run`` installs it), started headless with a fresh
profile and no background networking; the pages come from a local HTTP server on the
loopback interface that records every request it could not answer (a missing image, script,
font or page). Only ``websocket-client`` is needed besides the standard library.
"""
from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) executable on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class StaticServer:
    """Serves a folder on 127.0.0.1 (a free port) in a thread; ``missing`` lists paths answered 404."""

    def __init__(self, root: Path):
        self.root, self.missing = Path(root), []
        missing = self.missing

        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_error(self, code, message=None, explain=None):
                if code == 404:
                    missing.append(self.path)
                super().send_error(code, message, explain)

            def log_message(self, *args):      # keep the test output clean
                pass

        handler = functools.partial(Handler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.lstrip('/')}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class Chromium:
    """One headless Chromium process and one page (tab), driven over the DevTools protocol."""

    def __init__(self, process: subprocess.Popen, ws: websocket.WebSocket):
        self.process, self.ws, self._id = process, ws, 0

    @classmethod
    def launch(cls, profile_dir: Path, executable: str | None = None, *, width: int = 1280,
               height: int = 900, timeout: float = 60) -> "Chromium":
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no Chromium found: install Debian's `chromium` (apt-get install chromium)")
        profile_dir = Path(profile_dir)
        profile_dir.mkdir(parents=True, exist_ok=True)
        args = [executable, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile_dir}",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                "--mute-audio", f"--window-size={width},{height}", "about:blank"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = cls._devtools_port(profile_dir, process, timeout)
            deadline = time.monotonic() + timeout
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if not pages:
                raise RuntimeError("Chromium opened no page")
            ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                             suppress_origin=True)
        except BaseException:
            process.kill()
            process.wait()
            raise
        browser = cls(process, ws)
        browser.send("Page.enable")
        browser.send("Runtime.enable")
        return browser

    @staticmethod
    def _devtools_port(profile_dir: Path, process: subprocess.Popen, timeout: float) -> int:
        """Chromium writes the port it chose to <profile>/DevToolsActivePort once it listens."""
        marker = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Chromium exited at start with code {process.returncode}")
            if marker.is_file():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].strip().isdigit():
                    return int(first[0])
            time.sleep(0.05)
        raise TimeoutError(f"Chromium did not open its DevTools port within {timeout} s")

    # --- protocol ----------------------------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, *, wait_event: str | None = None) -> dict:
        """Send a command and return its result; with ``wait_event``, also wait for that event."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        result, seen_event = None, wait_event is None
        while result is None or not seen_event:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message.get("result", {})
            elif wait_event and message.get("method") == wait_event:
                seen_event = True
        return result

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        result = self.send("Page.navigate", {"url": url}, wait_event="Page.loadEventFired")
        if result.get("errorText"):
            raise RuntimeError(f"{url}: {result['errorText']}")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 8000), "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

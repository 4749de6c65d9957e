"""Headless Chromium for the tests of the HTML pages (audit.html, report.html): the DOM after the
page's scripts ran, its console messages, and screenshots in test-artifacts/."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

ARTIFACTS = REPO / "test-artifacts"


def chromium() -> str:
    """Debian's chromium; skips the calling test where it is absent."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where it can)")
    return path


def _run(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    r = subprocess.run([chromium(), *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def load(page: Path, profile: Path, then: str = "") -> tuple[str, list[str]]:
    """(the DOM after the scripts ran, the page's console messages: logs, errors, failed loads).
    ``then``: a script run after the page's own (a copy of the page beside it gets it)."""
    if then:
        copy = page.with_name(f".{page.stem}-test.html")
        copy.write_text(page.read_text().replace("</body>", f"<script>{then}</script></body>"))
        try:
            return load(copy, profile)
        finally:
            copy.unlink()
    r = _run(page, profile, "--enable-logging=stderr", "--v=0", "--dump-dom")
    return r.stdout, [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def screenshot(page: Path, name: str, profile: Path, size: str = "1200,1600") -> Path:
    """Save a screenshot of the page as test-artifacts/NAME."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    _run(page, profile, f"--screenshot={shot}", f"--window-size={size}")
    assert shot.stat().st_size > 10_000
    return shot


def outside_resources(text: str) -> list[str]:
    """What a page would load from elsewhere (scripts, styles, images, fonts, links to other hosts)."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?//[^"'\s>]*|@import[^;]*|url\((?!["']?data:)[^)]*\)|<link\b[^>]*>""",
                      text, re.I)


class DevTools:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    the browser reads commands on fd 3 and writes replies and events on fd 4, each message a JSON
    object ended by a NUL byte; no websocket needed). One page; its console errors, failed loads
    and uncaught exceptions are collected in ``errors``.

        with DevTools(chromium()) as page:
            page.navigate(url); page.evaluate("..."); page.wait_for("..."); page.screenshot()
    """

    def __init__(self, binary: str, size: tuple[int, int] = (1200, 900), timeout: float = 60):
        import os
        import tempfile

        self.timeout, self.errors, self._id, self._buf, self._events = timeout, [], 0, b"", []
        self._profile = tempfile.TemporaryDirectory(prefix="siftmix-chromium-")
        import fcntl

        def high(fd: int) -> int:  # the child's ends away from 3 and 4 before they move there
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return new

        cmd_r, self._cmd_w = os.pipe()  # we write commands; chromium reads fd 3
        self._ev_r, ev_w = os.pipe()  # chromium writes fd 4; we read
        cmd_r, ev_w = high(cmd_r), high(ev_w)

        def child():  # dup2 leaves 3 and 4 inheritable; every other fd is close-on-exec (PEP 446)
            os.dup2(cmd_r, 3)
            os.dup2(ev_w, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", "--remote-debugging-pipe", f"--window-size={size[0]},{size[1]}",
                 f"--user-data-dir={self._profile.name}", "about:blank"]
        self.proc = subprocess.Popen([binary, *flags], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=child)
        for fd in {cmd_r, ev_w}:
            os.close(fd)
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next((t for t in targets if t["type"] == "page"), None)
            target = page["targetId"] if page else self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable", session=True)
        except BaseException:
            self.close()
            raise

    # ---- the protocol
    def _read(self) -> dict:
        import os
        import select

        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._ev_r], [], [], self.timeout)
            chunk = os.read(self._ev_r, 1 << 20) if ready else b""
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe or did not answer in time")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def _note(self, ev: dict) -> None:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
        self._events.append(ev)

    def send(self, method: str, session: bool = False, **params) -> dict:
        import os

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def _wait_event(self, method: str) -> dict:
        import time

        deadline = time.time() + self.timeout
        while time.time() < deadline:
            for ev in self._events:
                if ev.get("method") == method:
                    self._events.remove(ev)
                    return ev
            self._note(self._read())
        raise TimeoutError(f"no {method} in {self.timeout} s")

    # ---- what the tests do
    def navigate(self, url: str) -> None:
        self._events.clear()
        r = self.send("Page.navigate", session=True, url=url)
        if r.get("errorText"):
            raise RuntimeError(f"navigate {url}: {r['errorText']}")
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, poll: float = 0.05):
        """Poll an expression until it is truthy; returns its value."""
        import time

        deadline = time.time() + self.timeout
        while time.time() < deadline:
            v = self.evaluate(expression)
            if v:
                return v
            time.sleep(poll)
        raise TimeoutError(f"{expression} stayed falsy for {self.timeout} s")

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self) -> None:
        import os

        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._ev_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Headless Chromium for the tests of the HTML pages (audit.html, report.html): the DOM after the
page's scripts ran, its console messages, and screenshots in test-artifacts/."""

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

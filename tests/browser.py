"""Headless Chromium for tests, with the standard library only (no Python browser package is installed).

``render(url, ...)`` runs Debian's ``/usr/bin/chromium`` once per page with ``--dump-dom`` (and optionally
``--screenshot``) under a *virtual time budget*: Chromium's clock only advances while no network fetch is
pending, so a single-page app has fetched its data and rendered by the time the budget is spent, and the DOM
and the screenshot are taken after that. ``render_until`` repeats it with a larger budget (bounded in number and
in wall time) until a predicate on the rendered page holds. Every process runs in its own session and is
killed as a group on timeout; each run gets a fresh, empty profile directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

CHROMIUM = Path("/usr/bin/chromium")
# Needed here: root (no sandbox), no GPU, and no background traffic towards the closed network.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def available() -> str | None:
    """None if Chromium can be used; otherwise why not (a skip reason)."""
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    return None


@dataclass
class Page:
    url: str
    dom: str
    command: list[str]
    seconds: float
    budget_ms: int
    screenshot: Path | None = None
    stderr: str = ""
    attempts: int = 1
    text: str = field(init=False)

    def __post_init__(self) -> None:
        self.text = visible_text(self.dom)

    def rows(self) -> list[list[str]]:
        return table_rows(self.dom)

    def describe(self, limit: int = 1500) -> str:
        errors = [ln for ln in self.stderr.splitlines() if ln.strip() and "dbus" not in ln.lower()]
        return (f"{self.url} (budget {self.budget_ms} ms, {self.seconds:.1f} s) rendered: {self.text[:limit]!r}"
                + (f"\nchromium stderr: {' | '.join(errors[-5:])[-600:]}" if errors else ""))


def render(url: str, *, profile_dir: Path, screenshot: Path | None = None, budget_ms: int = 10_000,
           window: tuple[int, int] = (1400, 1000), timeout: float = 60) -> Page:
    """Load ``url`` once; return its DOM after the virtual time budget (and write ``screenshot`` if given)."""
    profile_dir.mkdir(parents=True, exist_ok=False)  # fresh: never reuse a profile
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={window[0]},{window[1]}",
               f"--virtual-time-budget={budget_ms}"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        command.append(f"--screenshot={screenshot}")
    command += ["--dump-dom", url]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper, the browser and its helpers: all ours, one group
        out, err = proc.communicate()
        raise AssertionError(f"chromium did not finish {url} in {timeout:.0f}s: {err.decode(errors='replace')[-600:]}") from None
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode} on {url}: {err.decode(errors='replace')[-600:]}")
    return Page(url=url, dom=out.decode(errors="replace"), command=command, seconds=seconds, budget_ms=budget_ms,
                screenshot=screenshot if screenshot is not None and screenshot.exists() else None,
                stderr=err.decode(errors="replace"))


def render_until(url: str, ready: Callable[[Page], bool], *, work_dir: Path, name: str, screenshot: bool = True,
                 budgets_ms: tuple[int, ...] = (5_000, 15_000, 30_000), deadline_s: float = 60) -> Page:
    """``render`` until ``ready(page)``: a few attempts with growing budgets, within ``deadline_s`` of wall time.
    Returns the last page either way; the caller asserts (with ``page.describe()`` as the message)."""
    stop = time.monotonic() + deadline_s
    page = None
    for attempt, budget in enumerate(budgets_ms, 1):
        left = stop - time.monotonic()
        if left <= 1:
            break
        page = render(url, profile_dir=work_dir / f"profile-{name}-{attempt}",
                      screenshot=work_dir / f"{name}.png" if screenshot else None, budget_ms=budget, timeout=left)
        page.attempts = attempt
        if ready(page):
            return page
    assert page is not None, f"no time left to render {url}"
    return page


def fetch(url: str, accept: str = "application/json", timeout: float = 5) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode(errors="replace")


class _Text(HTMLParser):
    SKIP = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return re.sub(r"\s+", " ", " ".join(parser.parts)).strip()


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(re.sub(r"\s+", " ", "".join(self._cell)).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(dom: str) -> list[list[str]]:
    """The cell texts of every rendered HTML table row (``<tr>`` of ``<td>``/``<th>``), in document order."""
    parser = _Rows()
    parser.feed(dom)
    return [r for r in parser.rows if r]

"""Per-version canary samples from the nginx proxy's access log (docker-host target).

Every request the proxy serves is one line in ``slipway.targets.nginx.LOG_FORMAT``::

    $msec $status $upstream_addr $upstream_response_time $request_time "$request"

``$msec`` is when the line was written (the request's end), as Unix seconds cut to whole milliseconds; a line
counts for the window ``[start, end)`` by that time. A line logged in the very millisecond ``start`` falls in
counts too (its request may have ended just after ``start``), so no request that ended inside the window is
missed, at the price of at most one millisecond's worth before it. ``$upstream_addr`` names the container that
answered; each release's container has its own port, so the port says which version served the request.

Rules, per line:

- Attribution: the *last* address of ``$upstream_addr``. Several addresses (``"a, b"``) mean nginx retried on
  another server; Slipway's weighted routes set ``proxy_next_upstream off`` so that should not happen, and if it
  does, the last server is the one whose answer the client got. Ports of no given version are ignored (another
  environment's container, or one removed before the window).
- ``$upstream_addr`` of ``-``: nginx answered by itself without asking any upstream (a malformed request it
  rejected with 400, say). No version served it, so it is left out of both sides rather than charged to one.
- Error: status >= 500 (the container's own 5xx, or the 502/504 nginx sends when the container refused the
  connection or timed out: no upstream answer), or 499 (the client closed the connection before nginx had
  finished, typically because it gave up waiting for a slow container).
- Latency: ``$upstream_response_time`` of the attributed server, in ms; ``$request_time`` when that is ``-``.
- Malformed lines (a line still being written, a hand edit, another format) are skipped.

The log may be large and only grows: it is read backwards from its end in blocks, and reading stops at the
first line written more than ``SLACK_S`` before ``start`` (lines are appended in time order; the slack absorbs
several workers appending during a reload). A rotated-away file is not read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from slipway.verify.canary import SideSample

SLACK_S = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BLOCK = 1 << 16
_TOKEN = r"[^\s,]+"
_LIST = rf"{_TOKEN}(?:(?:, | : ){_TOKEN})*"  # nginx joins retries with ", " and internal redirects with " : "
_LINE = re.compile(
    rf'(?P<msec>\d+(?:\.\d+)?) (?P<status>\d{{3}}) (?P<addr>{_LIST}) (?P<urt>{_LIST}) (?P<rt>\d+(?:\.\d+)?) "[^"]*"(?: .*)?'
)
_SPLIT = re.compile(r", | : ")
_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:(\d+)")


def sample_from_access_log(
    path: Path, ports_by_version: Mapping[str, int | Collection[int]], start: datetime, end: datetime, *, block_size: int = BLOCK,
) -> dict[str, SideSample]:
    """One SideSample per version from the requests the proxy served in ``[start, end)``.

    ``ports_by_version``: release id → the 127.0.0.1 port(s) its container(s) listened on. A missing log file is
    no traffic (every side empty, which the judge reports as INCONCLUSIVE)."""
    version_of = _port_index(ports_by_version)
    lo_ms, hi_us = _window(start, end)
    stop_ms = lo_ms - round(SLACK_S * 1000)
    counts = {version: [0, 0, []] for version in ports_by_version}
    for line in _lines_backwards(Path(path), block_size):
        parsed = _parse(line)
        if parsed is None:
            continue
        at_ms, status, port, latency_ms = parsed
        if at_ms < stop_ms:
            break
        if not (lo_ms <= at_ms and at_ms * 1000 < hi_us) or port not in version_of:
            continue
        side = counts[version_of[port]]
        side[0] += 1
        side[1] += 1 if status >= 500 or status == 499 else 0
        side[2].append(latency_ms)
    return {version: SideSample(requests=n, errors=e, latencies_ms=lat[::-1]) for version, (n, e, lat) in counts.items()}


def _parse(line: bytes) -> tuple[int, int, int | None, float] | None:
    """(Unix time in ms, status, port of the server that answered or None, latency ms), or None if malformed."""
    found = _LINE.fullmatch(line.decode("utf-8", errors="replace").rstrip("\r"))
    if not found:
        return None
    addr = _SPLIT.split(found["addr"])[-1]
    port_match = _LOOPBACK_PORT.fullmatch(addr)
    upstream_s = _SPLIT.split(found["urt"])[-1]
    try:
        seconds = float(upstream_s)
    except ValueError:
        seconds = float(found["rt"])
    whole, _, fraction = found["msec"].partition(".")
    at_ms = int(whole) * 1000 + int((fraction + "000")[:3])  # integers: no float rounding at the window's edges
    return at_ms, int(found["status"]), int(port_match[1]) if port_match else None, seconds * 1000


def _port_index(ports_by_version: Mapping[str, int | Collection[int]]) -> dict[int, str]:
    index: dict[int, str] = {}
    for version, ports in ports_by_version.items():
        for port in (ports,) if isinstance(ports, int) else ports:
            if index.setdefault(port, version) != version:
                raise ValueError(f"port {port} is given for both {index[port]} and {version}: requests could not be attributed")
    return index


def _window(start: datetime, end: datetime) -> tuple[int, int]:
    """(start cut to its millisecond, end in microseconds), both since the epoch, exactly."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware (UTC) datetimes")
    if start >= end:
        raise ValueError(f"sample window is empty: start {start.isoformat()} is not before end {end.isoformat()}")
    return (start - _EPOCH) // timedelta(milliseconds=1), (end - _EPOCH) // timedelta(microseconds=1)


def _lines_backwards(path: Path, block_size: int) -> Iterator[bytes]:
    """The file's lines, newest first, reading ``block_size`` bytes at a time from the end."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        position = fh.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(block_size, position)
            position -= step
            fh.seek(position)
            lines = (fh.read(step) + tail).split(b"\n")
            tail = lines.pop(0)  # may continue in the previous block
            yield from (line for line in reversed(lines) if line)
        if tail:
            yield tail

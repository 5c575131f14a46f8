"""Bounded synthetic traffic: invoke a Lambda alias at a fixed rate so a canary has something to judge.

Where no real traffic flows (a dev environment, a quiet night), a canary window would otherwise end with
zero requests on both sides and the verdict would be INCONCLUSIVE. ``drive_lambda`` sends the given events,
round-robin, to ``function:qualifier`` at ``rate_per_s`` for ``duration_s`` and stops by itself: it never sends
more than ``max_requests`` and never starts a request after the time is up. Lambda's own alias routing decides
which version answers each request; the reply's ``ExecutedVersion`` is counted per version.

Requests are sent one after another. When an invoke takes longer than ``1 / rate_per_s`` the driver falls
behind its schedule and simply sends fewer requests (it never bursts to catch up). Clock and sleep are
parameters, so tests run the schedule on a fake clock while the invokes themselves are real.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from slipway.errors import VerificationFailed

_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<unit>[sm])\s*$")
_PER_UNIT_S = {"s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class TrafficResult:
    """What was sent. ``errors`` counts replies with a FunctionError (the handler failed), per version too."""

    sent: int
    errors: int
    by_version: dict[str, int]
    duration_s: float
    errors_by_version: dict[str, int] = field(default_factory=dict)


def parse_rate(text: str) -> float:
    """``"20/s"`` → 20.0 requests per second, ``"30/m"`` → 0.5."""
    match = _RATE.match(str(text))
    if not match or float(match.group("n")) <= 0:
        raise ValueError(f"traffic rate {text!r} is not N/s or N/m with N > 0 (for example '20/s' or '30/m')")
    return float(match.group("n")) / _PER_UNIT_S[match.group("unit")]


def drive_lambda(
    lam: Any,
    function: str,
    qualifier: str,
    events: list[dict],
    *,
    rate_per_s: float,
    duration_s: float,
    max_requests: int = 10_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TrafficResult:
    """Invoke ``function:qualifier`` with ``events`` round-robin; request i is due at ``i / rate_per_s``."""
    _validate(function, qualifier, events, rate_per_s, duration_s, max_requests)
    payloads = [json.dumps(event).encode() for event in events]  # a non-JSON event fails here, before any invoke
    limit = min(max_requests, math.ceil(rate_per_s * duration_s))
    by_version: dict[str, int] = {}
    errors_by_version: dict[str, int] = {}
    started = clock()
    sent = 0
    while sent < limit:
        due = started + sent / rate_per_s
        now = clock()
        if now - started >= duration_s:
            break
        if due > now:
            sleep(due - now)
        version, failed = _invoke(lam, function, qualifier, payloads[sent % len(payloads)])
        sent += 1
        by_version[version] = by_version.get(version, 0) + 1
        if failed:
            errors_by_version[version] = errors_by_version.get(version, 0) + 1
    return TrafficResult(sent=sent, errors=sum(errors_by_version.values()), by_version=by_version,
                         duration_s=clock() - started, errors_by_version=errors_by_version)


def _invoke(lam: Any, function: str, qualifier: str, payload: bytes) -> tuple[str, bool]:
    """(executed version, handler failed?). An invoke the service refuses is not traffic: it stops the run."""
    try:
        reply = lam.invoke(FunctionName=function, Qualifier=qualifier, Payload=payload)
        reply["Payload"].read()  # drain the stream so the connection goes back to the pool
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        raise VerificationFailed(
            "Synthetic traffic could not invoke the function", target=f"{function}:{qualifier}",
            hint=f"{code}; check the function and alias exist and the caller may invoke them",
            ref="traffic-invoke-failed",
        ) from exc
    return str(reply.get("ExecutedVersion", qualifier)), "FunctionError" in reply


def _validate(function: str, qualifier: str, events: list[dict], rate_per_s: float, duration_s: float,
              max_requests: int) -> None:
    if not function or not qualifier:
        raise ValueError("synthetic traffic needs a function name and a qualifier (alias or version)")
    if not events:
        raise ValueError("synthetic traffic needs at least one event to send")
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"traffic rate must be > 0 requests per second, got {rate_per_s}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"traffic duration must be > 0 seconds, got {duration_s}")
    if max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")

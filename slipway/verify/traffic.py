"""Bounded synthetic traffic: invoke a Lambda alias at a fixed rate so a canary has something to judge.

Where no real traffic flows (a dev environment, a quiet night), a canary window would otherwise end with
zero requests on both sides and the verdict would be INCONCLUSIVE. ``drive_lambda`` sends the given events,
round-robin, to ``function:qualifier`` at ``rate_per_s`` for ``duration_s`` and stops by itself: it never sends
more than ``max_requests`` and never starts a request after the time is up. Lambda's own alias routing decides
which version answers each request; the reply's ``ExecutedVersion`` is counted per version.

Requests are sent one after another. When an invoke takes longer than ``1 / rate_per_s`` the driver falls
behind its schedule and simply sends fewer requests (it never bursts to catch up). Clock and sleep are
parameters, so tests run the schedule on a fake clock while the invokes themselves are real.

``drive_http`` does the same for an HTTP endpoint (a docker-host environment's stable port): same schedule,
same bounds, request dicts like the spec's HttpRequest. The proxy decides which version answers; nothing in
the reply says which, so the counts are per endpoint and the per-version split is read from the proxy's
access log (``slipway.verify.nginx_metrics``).
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from slipway.core.errors import VerificationFailed
from slipway.verify.http_checks import REQUEST_KEYS, _encode_body, _send  # one way to send a request: the smoke checks'



@dataclass(frozen=True)
class TrafficResult:
    """What was sent. ``errors`` counts replies with a FunctionError (the handler failed), per version too;
    for HTTP, replies with status >= 500 and requests that got no HTTP reply at all."""

    sent: int
    errors: int
    by_version: dict[str, int]
    duration_s: float
    errors_by_version: dict[str, int] = field(default_factory=dict)


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
    return _run_schedule(lambda i: _invoke(lam, function, qualifier, payloads[i % len(payloads)]),
                         rate_per_s=rate_per_s, duration_s=duration_s, max_requests=max_requests, clock=clock, sleep=sleep)


def _run_schedule(send: Callable[[int], tuple[str, bool]], *, rate_per_s: float, duration_s: float, max_requests: int,
                  clock: Callable[[], float], sleep: Callable[[float], None]) -> TrafficResult:
    """Request i is due at ``i / rate_per_s``: never more than ``max_requests``, none started after ``duration_s``,
    no bursts to catch up. ``send(i)`` returns (who answered, did it fail)."""
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
        version, failed = send(sent)
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


def drive_http(
    base_url: str,
    requests: list[dict],
    *,
    rate_per_s: float,
    duration_s: float,
    max_requests: int = 10_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = 5.0,
) -> TrafficResult:
    """Send ``requests`` (``{method, path, body, headers}``) to ``base_url`` round-robin; request i is due at
    ``i / rate_per_s``. Direct connections only, redirects not followed. Any HTTP reply is a response (a 4xx is
    not an error, a 5xx is); a refused, reset or timed-out request is an error, and the run goes on."""
    _validate_http(base_url, requests, rate_per_s, duration_s, max_requests, timeout_s)
    prepared = [_prepare(base_url, request) for request in requests]  # a body that is not JSON fails here

    def send(i: int) -> tuple[str, bool]:
        url, data, headers, method = prepared[i % len(prepared)]
        try:
            status, _ = _send(urllib.request.Request(url, data=data, headers=headers, method=method), timeout_s)
        except OSError:
            status = None
        # Which version answered is the proxy's choice and is not in the reply: counted per endpoint.
        return "endpoint", status is None or status >= 500

    return _run_schedule(send, rate_per_s=rate_per_s, duration_s=duration_s, max_requests=max_requests, clock=clock, sleep=sleep)


def _prepare(base_url: str, request: dict) -> tuple[str, bytes | None, dict[str, str], str]:
    data, headers = _encode_body(request.get("body"), dict(request.get("headers") or {}))
    return base_url.rstrip("/") + (request.get("path") or "/"), data, headers, str(request.get("method") or "GET").upper()


def _validate_http(base_url: str, requests: list[dict], rate_per_s: float, duration_s: float, max_requests: int,
                   timeout_s: float) -> None:
    if not str(base_url).startswith(("http://", "https://")):
        raise ValueError(f"synthetic traffic needs an http:// or https:// base URL, got {base_url!r}")
    if not requests:
        raise ValueError("synthetic traffic needs at least one request to send")
    for i, request in enumerate(requests):
        extra = sorted(set(request) - REQUEST_KEYS)
        if extra:
            raise ValueError(f"traffic request {i}: unknown key(s) {', '.join(extra)} (a request takes "
                             f"{', '.join(sorted(REQUEST_KEYS))})")
        if not str(request.get("path") or "/").startswith("/"):
            raise ValueError(f"traffic request {i}: path {request.get('path')!r} must start with /")
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"traffic rate must be > 0 requests per second, got {rate_per_s}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"traffic duration must be > 0 seconds, got {duration_s}")
    if max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"request timeout must be > 0 seconds, got {timeout_s}")

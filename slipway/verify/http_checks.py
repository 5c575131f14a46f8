"""HTTP smoke checks for docker-image releases: send a request to the environment's stable URL, compare the reply.

A check is ``{name, request: {method, path, body, headers}, expect: {status, body_contains}}`` (SmokeCheck in
slipway.spec.schema). Anything that goes wrong on the wire (refused, reset, timed out, not HTTP) is a failed check with
a detail a user can act on, never an exception: every check runs, because the evidence helps.

Two deliberate differences from a browser: redirects are not followed (a check asserts the status the service
sent) and proxies from the environment are not used (the check talks to the target directly).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from slipway.core.errors import SpecError
from slipway.core.models import CheckResult, VerifyResult

REQUEST_KEYS = {"method", "path", "body", "headers"}
EXPECT_KEYS = {"status", "body_contains"}
BODY_LIMIT = 64 * 1024  # read at most this much of a reply
SNIPPET = 200  # characters of the body shown in a failure detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status, which the check compares


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def health_check(health_path: str) -> dict:
    """A target's default smoke check when the spec has none: GET the health path, expect 200."""
    return {"name": "health", "request": {"method": "GET", "path": health_path}, "expect": {"status": 200}}


def http_check(base_url: str, name: str, request: dict | None, expect: dict | None, timeout_s: float = 10) -> CheckResult:
    request, expect = request or {}, expect or {}
    _check_keys(name, request, expect)
    method = str(request.get("method") or "GET").upper()
    url = base_url.rstrip("/") + (request.get("path") or "/")
    data, headers = _encode_body(request.get("body"), dict(request.get("headers") or {}))
    started = time.monotonic()
    try:
        status, raw = _send(urllib.request.Request(url, data=data, headers=headers, method=method), timeout_s)
    except OSError as exc:
        return CheckResult(name=name, passed=False, detail=f"{method} {url}: {_describe(exc, timeout_s)}",
                           duration_ms=_ms_since(started))
    elapsed = _ms_since(started)
    text = raw.decode("utf-8", errors="replace")
    response = {"status": status, "body": text[:SNIPPET]}
    want_status = int(expect.get("status", 200))
    if status != want_status:
        detail = f"{method} {url}: expected status {want_status}, got {status} (body {_snippet(text)})"
        return CheckResult(name=name, passed=False, detail=detail, duration_ms=elapsed, response=response)
    needle = expect.get("body_contains")
    if needle is not None and str(needle) not in text:
        detail = f"{method} {url}: body does not contain {str(needle)!r} (got {_snippet(text)})"
        return CheckResult(name=name, passed=False, detail=detail, duration_ms=elapsed, response=response)
    return CheckResult(name=name, passed=True, detail="ok", duration_ms=elapsed, response=response)


def run_http_checks(base_url: str, checks: list[dict], timeout_s: float = 10) -> VerifyResult:
    """Run every check against ``base_url`` (not just up to the first failure). ``checks`` are SmokeCheck dicts."""
    for check in checks:  # validate all before the first request
        _check_keys(check.get("name", "?"), check.get("request") or {}, check.get("expect") or {})
    results = [
        http_check(base_url, check["name"], check.get("request"), check.get("expect"), timeout_s=timeout_s)
        for check in checks
    ]
    return VerifyResult(function=base_url, qualifier="", passed=all(r.passed for r in results), checks=results)


def _check_keys(name: str, request: dict, expect: dict) -> None:
    for label, given, allowed in (("request", request, REQUEST_KEYS), ("expect", expect, EXPECT_KEYS)):
        extra = sorted(set(given) - allowed)
        if extra:
            raise SpecError(f"http check {name!r}: unknown {label} key(s) {', '.join(extra)}",
                            hint=f"an HTTP check's {label} takes {', '.join(sorted(allowed))}", ref="invalid-http-check")
    path = request.get("path") or "/"
    if not str(path).startswith("/"):
        raise SpecError(f"http check {name!r}: path {path!r} must start with /", hint="use a path such as /health",
                        ref="invalid-http-check")


def _encode_body(body: Any, headers: dict[str, str]) -> tuple[bytes | None, dict[str, str]]:
    if body is None:
        return None, headers
    if isinstance(body, bytes):
        return body, headers
    if isinstance(body, str):
        return body.encode(), headers
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(body).encode(), headers


def _send(req: urllib.request.Request, timeout_s: float) -> tuple[int, bytes]:
    """(status, body) for any HTTP reply, 4xx/5xx included; OSError when there is no HTTP reply at all."""
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return resp.status, resp.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(BODY_LIMIT)
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise (reason if isinstance(reason, OSError) else OSError(str(reason))) from exc
    except http.client.HTTPException as exc:
        raise OSError(f"the reply is not HTTP ({type(exc).__name__})") from exc


def _describe(exc: OSError, timeout_s: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, TimeoutError):
        return f"no reply within {timeout_s:g}s"
    if isinstance(exc, ConnectionResetError):
        return "connection reset before a complete reply"
    return f"{type(exc).__name__}: {exc}" if type(exc) is not OSError else str(exc)


def _snippet(text: str) -> str:
    return repr(text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…")


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

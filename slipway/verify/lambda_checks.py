"""Smoke checks: invoke through the environment's live alias and compare the reply with ``expect``.

``expect`` is a subset match on the returned JSON. When the reply has a JSON string ``body`` (API Gateway
proxy style) and ``expect.body`` is a mapping, the body is parsed and matched as JSON too.
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from slipway.core.aws import translate
from slipway.core.errors import VerificationFailed
from slipway.core.models import CheckResult, VerifyResult


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """None when ``expected`` is contained in ``actual``; otherwise where and how they differ."""
    here = path or "reply"
    if isinstance(expected, dict):
        if isinstance(actual, str) and path.endswith("body"):
            try:
                actual = json.loads(actual)
            except ValueError:
                return f"{here} is not JSON: {actual[:80]!r}"
        if not isinstance(actual, dict):
            return f"{here}: expected an object, got {_short(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{here}.{key}: missing (expected {_short(value)})"
            found = subset_mismatch(value, actual[key], f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return f"{here}: expected a list like {_short(expected)}, got {_short(actual)}"
        for i, value in enumerate(expected):
            found = subset_mismatch(value, actual[i], f"{here}[{i}]")
            if found:
                return found
        return None
    if expected != actual:
        return f"{here}: expected {_short(expected)}, got {_short(actual)}"
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invoke_check(lam, function: str, qualifier: str, name: str, event: Any, expect: dict) -> CheckResult:
    started = time.monotonic()
    try:
        resp = lam.invoke(FunctionName=function, Qualifier=qualifier, Payload=json.dumps(event).encode())
    except ReadTimeoutError:
        return CheckResult(name=name, passed=False, detail="invoke timed out (no reply from Lambda)")
    except (ClientError, BotoCoreError) as exc:
        err = translate(exc, VerificationFailed, f"invoke {function}:{qualifier}", target=function)
        return CheckResult(name=name, passed=False, detail=err.one_line())
    elapsed = (time.monotonic() - started) * 1000
    raw = resp["Payload"].read()
    executed = resp.get("ExecutedVersion")
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    if resp.get("FunctionError"):
        message = payload.get("errorMessage") if isinstance(payload, dict) else str(payload)
        kind = payload.get("errorType") if isinstance(payload, dict) else None
        detail = f"FunctionError {resp['FunctionError']}: {kind + ': ' if kind else ''}{message}"
        return CheckResult(name=name, passed=False, detail=detail, executed_version=executed, duration_ms=elapsed, response=payload)
    mismatch = subset_mismatch(expect, payload)
    if mismatch:
        return CheckResult(name=name, passed=False, detail=mismatch, executed_version=executed, duration_ms=elapsed, response=payload)
    return CheckResult(name=name, passed=True, detail="ok", executed_version=executed, duration_ms=elapsed, response=payload)


def run_smoke_checks(lam, function: str, qualifier: str, checks: list[dict], expected_version: str | None = None) -> VerifyResult:
    """Run every check (not just up to the first failure: the evidence helps). ``checks`` are SmokeCheck dicts."""
    results = []
    for check in checks:
        event = check.get("event")
        result = invoke_check(lam, function, qualifier, check["name"], {} if event is None else event, check.get("expect") or {})
        if result.passed and expected_version and result.executed_version and result.executed_version != expected_version:
            result = result.model_copy(update={
                "passed": False,
                "detail": f"alias served version {result.executed_version}, expected {expected_version}",
            })
        results.append(result)
    return VerifyResult(function=function, qualifier=qualifier, passed=all(r.passed for r in results), checks=results)


def failure_error(result: VerifyResult, environment: str) -> VerificationFailed:
    failed = result.first_failure
    assert failed is not None
    others = sum(1 for c in result.checks if not c.passed) - 1
    more = f" (+{others} more failing)" if others > 0 else ""
    return VerificationFailed(
        f"smoke check {failed.name!r} failed in {environment}: {failed.detail}{more}",
        target=f"{result.function}:{result.qualifier}",
        evidence={"checks": [c.model_dump(mode="json") for c in result.checks]},
    )

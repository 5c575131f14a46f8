"""Lifecycle hooks (``hooks:`` per environment in slipway.yaml): call a Lambda function (CodeDeploy's
BeforeAllowTraffic / AfterAllowTraffic model) or an HTTP webhook (Flagger's pre-rollout / rollout / post-rollout
webhooks) with the release's details, and decide from the answer.

- ``before_traffic``: the new version exists and takes no traffic yet. A failure stops the stage: nothing shifted.
- ``during_bake``: at the start of each canary or linear bake (a load test, an external analysis). A failure rolls
  the traffic back to stable.
- ``after_traffic``: the new version has all the traffic and is not yet declared verified. A failure rolls back.

A Lambda hook passes unless the invoke fails, the function raises (``FunctionError``), or it answers with
``{"status": "Failed"}`` (``"message"`` says why). A webhook passes on any 2xx answer; redirects are not followed.
No answer within the hook's timeout fails it. Hooks run one after another in the spec's order, and the first failure
stops the rest. Every answer is kept (truncated) as the stage's evidence and in the ledger.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Callable

from slipway.core.errors import HookFailed
from slipway.spec.schema import Hook

ANSWER_LIMIT = 1000  # characters of a hook's answer kept as evidence
PHASES = ("before_traffic", "during_bake", "after_traffic")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # a hook answers itself; a redirect is its answer
        return None


@dataclass(frozen=True)
class HookAnswer:
    phase: str
    hook: str  # "lambda NAME" or "webhook URL" (without the query string)
    passed: bool
    detail: str  # one line: why it passed or failed
    answer: str | None  # the function's payload or the webhook's body, truncated
    seconds: float
    timed_out: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def payload(*, phase: str, app: str, environment: str, release_id: str, commit: str | None, version: str,
            stable_version: str | None, percent: int | None, run_id: str | None) -> dict:
    """What a hook is told: enough to find and test the new version (``version`` is the Lambda version, the
    container's release, or the ECS task definition revision) and to tell Slipway's runs apart."""
    return {"hook": phase, "app": app, "environment": environment, "release_id": release_id, "commit": commit,
            "version": version, "stable_version": stable_version, "percent": percent, "run_id": run_id}


def with_timeout(call: Callable[[], Any], timeout_s: float) -> Any:
    """``call()``'s result, or TimeoutError after ``timeout_s`` (the call is left to finish in a daemon thread: a
    hook that hangs must not hold the release, nor the process at exit)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="slipway-hook", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def call_lambda(lam: Any, hook: Hook, phase: str, body: dict, clock: Callable[[], float] = time.monotonic) -> HookAnswer:
    from botocore.exceptions import BotoCoreError, ClientError

    t0 = clock()

    def answer(passed: bool, detail: str, text: str | None = None, timed_out: bool = False) -> HookAnswer:
        return HookAnswer(phase, hook.label, passed, detail, _cut(text), round(clock() - t0, 3), timed_out)

    try:
        response = with_timeout(lambda: lam.invoke(FunctionName=hook.function, InvocationType="RequestResponse",
                                                   Payload=json.dumps(body).encode()), hook.timeout)
        text = response["Payload"].read().decode("utf-8", "replace")
    except TimeoutError as exc:
        return answer(False, f"timed out: {exc}", timed_out=True)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        return answer(False, f"could not invoke {hook.function}: {err.get('Code')}: {err.get('Message', '')}"[:300])
    except BotoCoreError as exc:
        return answer(False, f"could not invoke {hook.function}: {exc}"[:300])
    if response.get("FunctionError"):
        return answer(False, f"the function raised ({response['FunctionError']}): {_error_message(text)}", text)
    status, message = _status(text)
    if status in ("failed", "failure", "fail", "error"):
        return answer(False, f"the function answered {status}" + (f": {message}" if message else ""), text)
    return answer(True, f"the function answered {status or 'without a status'}" + (f": {message}" if message else ""), text)


def call_webhook(hook: Hook, phase: str, body: dict, headers: dict[str, str],
                 open_url: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic) -> HookAnswer:
    """POST ``body`` as JSON with ``headers`` (secret values already read; never logged). 2xx passes."""
    t0 = clock()
    url = hook.webhook.url
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "slipway-hook", **headers})
    opener = open_url or _opener(url).open

    def answer(passed: bool, detail: str, text: str | None = None, timed_out: bool = False) -> HookAnswer:
        return HookAnswer(phase, hook.label, passed, detail, _cut(text), round(clock() - t0, 3), timed_out)

    def post() -> tuple[int, str]:
        try:
            with opener(request, timeout=hook.timeout) as response:
                return response.status, response.read(64_000).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(64_000).decode("utf-8", "replace")

    try:
        status, text = with_timeout(post, hook.timeout)
    except TimeoutError as exc:
        return answer(False, f"timed out: {exc}", timed_out=True)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        timed_out = "timed out" in str(reason)
        return answer(False, ("timed out: " if timed_out else "unreachable: ") + str(reason)[:200], timed_out=timed_out)
    if 200 <= status < 300:
        return answer(True, f"HTTP {status}", text)
    return answer(False, f"HTTP {status}" + (f": {_first_line(text)}" if text.strip() else ""), text)


def run(hooks: list[Hook], phase: str, call: Callable[[Hook], HookAnswer], record: Callable[[HookAnswer], None],
        where: str) -> list[HookAnswer]:
    """Each hook in order, each answer recorded; the first failure raises ``HookFailed`` with every answer so far."""
    answers: list[HookAnswer] = []
    for hook in hooks:
        result = call(hook)
        answers.append(result)
        record(result)
        if not result.passed:
            step = {"before_traffic": "before any traffic reached the new version",
                    "during_bake": "during the bake", "after_traffic": "after the traffic moved"}[phase]
            raise HookFailed(
                f"{phase} hook {result.hook} failed {step}: {result.detail}", target=where,
                hint=("nothing was shifted: the new version never took traffic" if phase == "before_traffic"
                      else "traffic goes back to the stable version") + "; the hook's answer is in the evidence and `slipway history`",
                evidence={"phase": phase, "hook": result.to_dict(), "answers": [a.to_dict() for a in answers]},
            )
    return answers


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[Any] = [_NoRedirect()]
    if host in _LOOPBACK:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _status(text: str) -> tuple[str | None, str | None]:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    status = data.get("status")
    message = data.get("message") or data.get("reason")
    return (str(status).lower() if status is not None else None), (str(message)[:300] if message else None)


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
        return f"{data.get('errorType', 'Error')}: {data.get('errorMessage', '')}"[:300]
    except (ValueError, AttributeError):
        return _first_line(text)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= ANSWER_LIMIT else text[:ANSWER_LIMIT] + "…"


__all__ = ["HookAnswer", "PHASES", "call_lambda", "call_webhook", "payload", "run", "with_timeout"]

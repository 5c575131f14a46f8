"""Lifecycle hooks against real endpoints: a webhook on a local HTTP server and Lambda functions on the local AWS
(their code runs). What passes, what fails, what a hook is told, and that a hook which never answers fails at its
timeout instead of holding the release."""

from __future__ import annotations

import io
import json
import threading
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slipway.core.errors import HookFailed
from slipway.rollout import hooks
from slipway.spec.schema import Hook

BODY = hooks.payload(phase="after_traffic", app="shop", environment="prod", release_id="r2", commit="c" * 40, version="2",
                     stable_version="1", percent=100, run_id="run-1")


@pytest.fixture
def webhook_server():
    seen: list[dict] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(self.rfile.read(length) or b"{}")})
            if self.path == "/hang":
                release.wait(30)  # never answers within the hook's timeout
            status, text = {"/ok": (204, ""), "/fail": (503, "smoke suite: 3 of 40 checks failed\nmore"),
                            "/redirect": (302, "")}.get(self.path, (404, "no such hook"))
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/ok")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    release.set()
    server.shutdown()


def webhook(url: str, timeout: str = "5s") -> Hook:
    return Hook.model_validate({"webhook": {"url": url}, "timeout": timeout})


def test_a_webhook_passes_on_2xx_and_is_told_the_release_with_its_secret_header(webhook_server):
    base, seen = webhook_server
    answer = hooks.call_webhook(webhook(base + "/ok"), "after_traffic", BODY, {"Authorization": "Bearer t0ken"})
    assert answer.passed and answer.detail == "HTTP 204"
    assert seen[0]["body"] == BODY and seen[0]["headers"]["Authorization"] == "Bearer t0ken"


def test_a_webhook_fails_on_an_error_status_with_its_answer_as_evidence(webhook_server):
    base, _ = webhook_server
    answer = hooks.call_webhook(webhook(base + "/fail"), "after_traffic", BODY, {})
    assert not answer.passed and answer.detail == "HTTP 503: smoke suite: 3 of 40 checks failed"
    assert answer.answer.startswith("smoke suite")


def test_a_redirect_is_the_webhooks_answer_not_a_place_to_go(webhook_server):
    base, seen = webhook_server
    answer = hooks.call_webhook(webhook(base + "/redirect"), "before_traffic", BODY, {})
    assert not answer.passed and answer.detail.startswith("HTTP 302")
    assert [s["path"] for s in seen] == ["/redirect"]


def test_a_webhook_that_never_answers_fails_at_its_timeout(webhook_server):
    base, _ = webhook_server
    answer = hooks.call_webhook(webhook(base + "/hang", timeout="300ms"), "during_bake", BODY, {})
    assert not answer.passed and answer.timed_out and answer.seconds < 5


def test_an_unreachable_webhook_fails_naming_why():
    answer = hooks.call_webhook(webhook("http://127.0.0.1:9/x"), "before_traffic", BODY, {})
    assert not answer.passed and answer.detail.startswith("unreachable")


def test_run_stops_at_the_first_failing_hook_and_raises_with_every_answer(webhook_server):
    base, seen = webhook_server
    recorded = []
    spec_hooks = [webhook(base + "/ok"), webhook(base + "/fail"), webhook(base + "/ok")]
    with pytest.raises(HookFailed) as info:
        hooks.run(spec_hooks, "after_traffic", lambda h: hooks.call_webhook(h, "after_traffic", BODY, {}), recorded.append, "shop/prod")
    assert [a.passed for a in recorded] == [True, False] and len(seen) == 2  # the third never ran
    assert info.value.ref == "hook-failed" and info.value.evidence["hook"]["detail"].startswith("HTTP 503")
    assert "traffic goes back to the stable version" in info.value.hint


HOOK_CODE = """
def handler(event, context):
    if event.get("version") == "{bad}":
        {action}
    return {{"status": "Succeeded", "message": "version " + event["version"] + " of " + event["app"] + " looks fine"}}
"""


@pytest.fixture
def lambda_hook(aws_endpoint, boto_session):
    lam = boto_session.client("lambda", endpoint_url=aws_endpoint)
    iam = boto_session.client("iam", endpoint_url=aws_endpoint)
    try:
        role = iam.create_role(RoleName="hook-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="hook-role")["Role"]["Arn"]

    def make(action: str) -> str:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("hook.py", HOOK_CODE.format(bad="2", action=action))
        name = f"hook-{uuid.uuid4().hex[:8]}"
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="hook.handler", Code={"ZipFile": buf.getvalue()})
        return name

    return lam, make


def test_a_lambda_hook_refuses_with_a_failed_status_or_an_exception_and_passes_otherwise(lambda_hook):
    lam, make = lambda_hook
    refuses = Hook(function=make('return {"status": "Failed", "message": "migration 42 not applied"}'))
    raises = Hook(function=make('raise RuntimeError("downstream contract test failed")'))

    answer = hooks.call_lambda(lam, refuses, "before_traffic", BODY)
    assert not answer.passed and answer.detail == "the function answered failed: migration 42 not applied"
    answer = hooks.call_lambda(lam, raises, "before_traffic", BODY)
    assert not answer.passed and "downstream contract test failed" in answer.detail
    answer = hooks.call_lambda(lam, refuses, "before_traffic", {**BODY, "version": "1"})
    assert answer.passed and "version 1 of shop looks fine" in answer.detail  # it was told the release


def test_a_missing_hook_function_fails_the_hook(lambda_hook):
    lam, _ = lambda_hook
    answer = hooks.call_lambda(lam, Hook(function="no-such-hook-fn"), "after_traffic", BODY)
    assert not answer.passed and "ResourceNotFoundException" in answer.detail

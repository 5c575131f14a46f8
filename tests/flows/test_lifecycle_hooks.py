"""Lifecycle hooks and a canary judged on the app's own metrics, end to end through the release flow on the session's
local stack: a before-traffic Lambda hook that refuses (nothing shifted), an after-traffic webhook that fails (rolled
back; its secret header from a Prefect Secret block, never recorded), and a canary failed by a Prometheus query read
through a slipway-prometheus block."""

from __future__ import annotations

import io
import json
import threading
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "hook-token-" + uuid.uuid4().hex  # must reach the webhook and nothing else


def _aws(prefect_api, service: str):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client(service, endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def one_env_repo(app_repo, env_yaml: str):
    """The example app released to prod only: v1 (tag h1) with no hooks; ``second()`` commits v2 with ``env_yaml``."""
    repo = app_repo()
    head = (repo.path / "slipway.yaml").read_text()
    head = head[: head.index("environments:")] + "environments:\n  - name: prod\n"
    repo.write("slipway.yaml", head).commit("prod only", tag="h1")

    def second() -> None:
        code = (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')
        repo.write("slipway.yaml", head + env_yaml).write("src/app.py", code).commit("v2 with hooks", tag="h2")

    return repo, second


def ledger_entries(app: str, env: str = "prod"):
    from tasks.wiring import open_store

    return open_store("default")[1].entries(app, env)


def alias(prefect_api, fn: str) -> tuple[str, dict]:
    a = _aws(prefect_api, "lambda").get_alias(FunctionName=fn, Name="live")
    return a["FunctionVersion"], (a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def release(repo, ref: str):
    from flows.release import release as run

    return run(repo_url=repo.url, ref=ref, return_state=True)


def test_a_refusing_before_traffic_lambda_hook_stops_the_release_with_nothing_shifted(prefect_api, app_repo):
    from flows.diagnose import diagnose

    lam = _aws(prefect_api, "lambda")
    hook_fn = f"pre-{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hook.py", "def handler(event, context):\n    return {'status': 'Failed', "
                               "'message': 'schema migration 42 not applied for version ' + event['version']}\n")
    lam.create_function(FunctionName=hook_fn, Runtime="python3.11", Role=prefect_api["role_arn"], Handler="hook.handler",
                        Code={"ZipFile": buf.getvalue()})
    repo, second = one_env_repo(app_repo, f"    hooks:\n      before_traffic: [{{function: {hook_fn}, timeout: 30s}}]\n")
    assert release(repo, "h1").is_completed()
    second()

    state = release(repo, "h2")

    err = state.result(raise_on_failure=False)
    assert state.is_failed() and "before_traffic hook lambda " + hook_fn in err.message, err
    assert "schema migration 42 not applied for version 2" in err.message
    assert alias(prefect_api, f"{repo.app}-prod") == ("1", {})  # the new version never took traffic
    kinds = [e.kind for e in ledger_entries(repo.app)]
    assert kinds[:3] == ["deploy-started", "deployed", "verified"] and "traffic-shifted" not in kinds
    hook = next(e for e in ledger_entries(repo.app) if e.kind == "hook")
    assert hook.detail["passed"] is False and hook.detail["phase"] == "before_traffic" and hook.version == "2"
    d = diagnose(app=repo.app, environment="prod")
    assert d["classification"] == "lifecycle-hook" and d["check"] == "before_traffic hook"
    assert any("schema migration 42" in line for line in d["evidence"])


@pytest.fixture
def webhook(prefect_api):
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
            status, text = (200, "ok") if self.path == "/pre" else (503, "post-deploy suite: checkout flow broken on v" + body["version"])
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_failing_after_traffic_webhook_rolls_back_and_its_secret_stays_out_of_every_record(prefect_api, app_repo, webhook):
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    base, seen = webhook
    with temporary_settings(updates={PREFECT_API_URL: prefect_api["env"]["PREFECT_API_URL"]}):
        Secret(value=f"Bearer {SECRET}").save("hooks-test-token", overwrite=True)
    headers = "{headers: {Authorization: {secret: 'prefect:hooks-test-token'}}}"
    repo, second = one_env_repo(app_repo, (
        "    hooks:\n"
        f"      before_traffic: [{{webhook: {{url: '{base}/pre'}}}}]\n"
        f"      after_traffic: [{{webhook: {{url: '{base}/post', {headers[1:-1]}}}, timeout: 10s}}]\n"))
    assert release(repo, "h1").is_completed()
    second()

    state = release(repo, "h2")

    err = state.result(raise_on_failure=False)
    assert state.is_failed() and "after_traffic hook webhook " + base + "/post failed" in err.message, err
    assert "HTTP 503: post-deploy suite: checkout flow broken on v2" in err.message and "prod rolled back to" in err.message
    assert alias(prefect_api, f"{repo.app}-prod") == ("1", {})
    assert [(s["path"], s["body"]["hook"], s["body"]["version"], s["body"]["percent"]) for s in seen] == [
        ("/pre", "before_traffic", "2", None), ("/post", "after_traffic", "2", 100)]
    assert seen[1]["authorization"] == f"Bearer {SECRET}" and seen[0]["authorization"] is None
    entries = ledger_entries(repo.app)
    answers = [(e.detail["phase"], e.detail["passed"]) for e in entries if e.kind == "hook"]
    assert answers == [("before_traffic", True), ("after_traffic", False)]
    assert entries[-1].kind == "rolled-back"
    assert SECRET not in json.dumps([e.model_dump(mode="json") for e in entries])


def test_a_canary_failed_by_a_prometheus_query_is_rolled_back_through_the_flow(prefect_api, app_repo, prometheus):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks import PrometheusBlock

    with temporary_settings(updates={PREFECT_API_URL: prefect_api["env"]["PREFECT_API_URL"]}):
        PrometheusBlock(url=prometheus.url).save("hooks-test-prom", overwrite=True)
    repo, second = one_env_repo(app_repo, (
        "    strategy: {canary: {steps: [50, 100], bake: 4s}}\n"
        "    traffic: {rate: 20/s, events: [{queryStringParameters: {name: ada}}]}\n"
        "    analysis:\n      min_requests: 10\n      min_latency_periods: 2\n      max_latency_increase: 3\n      inconclusive: fail\n"
        "      metrics:\n        - name: checkout-failures\n          max_change: 0.5\n          min_delta: 0.01\n"
        "          prometheus: {server: hooks-test-prom, query: 'max(checkout_failure_ratio{app=\"{{app}}\",version=\"{{version}}\"})'}\n"))
    prometheus.service.set("checkout_failure_ratio", {"app": repo.app, "version": "1"}, 0.01)
    prometheus.service.set("checkout_failure_ratio", {"app": repo.app, "version": "2"}, 0.4)
    prometheus.wait_for(f'checkout_failure_ratio{{app="{repo.app}",version="2"}}', 0.4)
    assert release(repo, "h1").is_completed()
    second()

    state = release(repo, "h2")

    err = state.result(raise_on_failure=False)
    assert state.is_failed() and "judged FAIL: failed on checkout-failures" in err.message, err
    assert alias(prefect_api, f"{repo.app}-prod") == ("1", {})
    verdict = next(e for e in reversed(ledger_entries(repo.app)) if e.kind == "canary-verdict").detail
    custom = next(m for m in verdict["metrics"] if m["metric"] == "checkout-failures")
    assert custom["verdict"] == "FAIL" and custom["canary"] == {"value": 0.4} and custom["stable"] == {"value": 0.01}


def test_a_metric_prometheus_refuses_or_a_missing_hook_function_stops_the_release_at_preflight(prefect_api, app_repo, prometheus):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks import PrometheusBlock
    from slipway.core.errors import PreflightFailed

    with temporary_settings(updates={PREFECT_API_URL: prefect_api["env"]["PREFECT_API_URL"]}):
        PrometheusBlock(url=prometheus.url).save("hooks-test-prom", overwrite=True)
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    spec = spec[: spec.index("environments:")] + (
        "environments:\n  - name: prod\n    strategy: {canary: {steps: [50, 100], bake: 4s}}\n"
        "    hooks: {before_traffic: [{function: no-such-hook-function}]}\n"
        "    analysis:\n      metrics:\n        - name: typo\n          threshold: 1\n"
        "          prometheus: {server: hooks-test-prom, query: 'sum(rate(x{version=\"{{version}}\"}[{{window}}])'}\n")
    repo.write("slipway.yaml", spec).commit("a typo'd query", tag="p1")

    err = release(repo, "p1").result(raise_on_failure=False)

    assert isinstance(err, PreflightFailed), err
    checks = {c["name"]: c for c in err.evidence["checks"] if not c["passed"]}
    assert "Prometheus refused the query (HTTP 400)" in checks["prod: metric typo"]["detail"]
    assert "no-such-hook-function cannot be read: ResourceNotFoundException" in checks[
        "prod: before_traffic hook lambda no-such-hook-function"]["detail"]
    with pytest.raises(Exception):
        _aws(prefect_api, "lambda").get_function(FunctionName=f"{repo.app}-prod")  # nothing was deployed

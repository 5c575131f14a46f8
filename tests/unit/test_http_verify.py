"""HTTP smoke checks and health polling against a tiny real HTTP server in this process (no Docker)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slipway.targets.docker_engine import wait_healthy
from slipway.core.errors import DeployError, SpecError
from slipway.verify.http_checks import http_check, run_http_checks
from fakes import FakeClock


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/health":
            return self._reply(200, b"ok-v1\n")
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path == "/slow":
            time.sleep(1.0)
            return self._reply(200, b"late")
        if self.path == "/not-http":
            self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True
            return None
        return self._reply(404, b"no such page")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        reply = {"method": "POST", "content_type": self.headers.get("Content-Type"), "body": body.decode(),
                 "x_token": self.headers.get("X-Token")}
        return self._reply(201, json.dumps(reply).encode())

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the timeout test's client has gone: that is the point of it

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_check_passes_on_expected_status_and_body(base_url):
    result = http_check(base_url, "health", {"path": "/health"}, {"status": 200, "body_contains": "ok-v1"})
    assert (result.passed, result.detail, result.response) == (True, "ok", {"status": 200, "body": "ok-v1\n"})
    assert result.duration_ms is not None


def test_check_defaults_to_get_slash_expecting_200(base_url):
    result = http_check(base_url, "root", {}, {})
    assert result.detail == f"GET {base_url}/: expected status 200, got 404 (body 'no such page')"


def test_check_reports_a_missing_body_text(base_url):
    result = http_check(base_url, "health", {"path": "/health"}, {"body_contains": "ok-v2"})
    assert not result.passed
    assert result.detail == f"GET {base_url}/health: body does not contain 'ok-v2' (got 'ok-v1\\n')"


def test_check_compares_an_error_status_instead_of_raising(base_url):
    result = http_check(base_url, "gone", {"path": "/missing"}, {"status": 404, "body_contains": "no such"})
    assert result.passed


def test_check_sends_a_json_body_with_headers(base_url):
    result = http_check(base_url, "create", {"method": "post", "path": "/items", "body": {"a": 1}, "headers": {"X-Token": "t"}},
                        {"status": 201, "body_contains": '"x_token": "t"'})
    assert result.passed, result.detail
    sent = json.loads(result.response["body"])
    assert sent == {"method": "POST", "content_type": "application/json", "body": '{"a": 1}', "x_token": "t"}


def test_check_sends_a_string_body_as_is(base_url):
    result = http_check(base_url, "raw", {"method": "POST", "path": "/", "body": "plain"}, {"status": 201, "body_contains": '"body": "plain"'})
    assert result.passed, result.detail


def test_check_does_not_follow_redirects(base_url):
    result = http_check(base_url, "moved", {"path": "/redirect"}, {"status": 302})
    assert result.passed, result.detail


def test_connection_refused_is_a_failed_check_not_an_exception(refused_url):
    result = http_check(refused_url, "health", {"path": "/health"}, {})
    assert (result.passed, result.detail) == (False, f"GET {refused_url}/health: connection refused (nothing listens there)")


def test_timeout_is_a_failed_check(base_url):
    result = http_check(base_url, "slow", {"path": "/slow"}, {}, timeout_s=0.2)
    assert (result.passed, result.detail) == (False, f"GET {base_url}/slow: no reply within 0.2s")


def test_a_reply_that_is_not_http_is_a_failed_check(base_url):
    result = http_check(base_url, "junk", {"path": "/not-http"}, {})
    assert (result.passed, result.detail) == (False, f"GET {base_url}/not-http: the reply is not HTTP (BadStatusLine)")


def test_run_http_checks_runs_every_check_and_names_the_base_url(base_url):
    checks = [
        {"name": "health", "request": {"path": "/health"}, "expect": {"body_contains": "ok"}},
        {"name": "missing", "request": {"path": "/missing"}, "expect": {}},
        {"name": "default", "request": None, "expect": {"status": 404}},
    ]
    result = run_http_checks(base_url, checks)
    assert (result.function, result.qualifier, result.passed) == (base_url, "", False)
    assert [c.passed for c in result.checks] == [True, False, True]
    assert result.first_failure.name == "missing"


def test_run_http_checks_rejects_unknown_keys_before_any_request(refused_url):
    checks = [{"name": "ok", "request": {"path": "/"}}, {"name": "typo", "request": {"pth": "/"}, "expect": {"code": 200}}]
    with pytest.raises(SpecError) as err:
        run_http_checks(refused_url, checks)
    assert str(err.value) == "http check 'typo': unknown request key(s) pth: an HTTP check's request takes body, headers, method, path"


# ---- wait_healthy (fake clock and HTTP; one real poll) -----------------------------------------------------

def scripted_get(*replies):
    calls = []

    def get(url: str, timeout_s: float) -> int:
        reply = replies[min(len(calls), len(replies) - 1)]
        calls.append(url)
        if isinstance(reply, Exception):
            raise reply
        return reply

    get.calls = calls
    return get


def test_wait_healthy_returns_at_the_first_200():
    clock = FakeClock(0.0)
    get = scripted_get(ConnectionRefusedError(), 503, 200)
    wait_healthy("http://127.0.0.1:9/health", timeout_s=5, interval_s=0.25, clock=clock, sleep=clock.sleep, http_get=get)
    assert (len(get.calls), clock.slept) == (3, [0.25, 0.25])


def test_wait_healthy_names_the_url_last_status_and_timeout():
    clock = FakeClock(0.0)
    get = scripted_get(ConnectionRefusedError(), 404)
    with pytest.raises(DeployError) as err:
        wait_healthy("http://127.0.0.1:9/health", timeout_s=2, interval_s=0.5, clock=clock, sleep=clock.sleep, http_get=get)
    assert str(err.value) == (
        "http://127.0.0.1:9/health not healthy after 2s (last: HTTP 404): "
        "check the service binds $PORT on 127.0.0.1 and serves the health path"
    )
    assert len(get.calls) == 5  # at 0, 0.5, 1.0, 1.5 and 2.0 s


def test_wait_healthy_reports_a_connection_error_as_the_last_error():
    clock = FakeClock(0.0)
    with pytest.raises(DeployError) as err:
        wait_healthy("http://127.0.0.1:9/", timeout_s=1, clock=clock, sleep=clock.sleep, http_get=scripted_get(ConnectionRefusedError()))
    assert str(err.value).startswith("http://127.0.0.1:9/ not healthy after 1s (last: connection refused): ")


def test_wait_healthy_polls_a_real_server(base_url, refused_url):
    wait_healthy(f"{base_url}/health", timeout_s=2)
    with pytest.raises(DeployError, match=r"last: connection refused"):
        wait_healthy(f"{refused_url}/health", timeout_s=0.3, interval_s=0.1)

"""drive_http's schedule and bounds on a fake clock, against a loopback port nothing listens on (refused at once)."""

from __future__ import annotations

import socket

import pytest

from fakes import FakeClock
from slipway.verify.traffic import drive_http


@pytest.fixture
def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connecting is refused
    return f"http://127.0.0.1:{port}"


def test_a_refused_request_is_an_error_and_the_run_goes_on_to_its_bound(refused_url):
    clock = FakeClock()

    result = drive_http(refused_url, [{"path": "/a"}, {"method": "POST", "path": "/b", "body": {"x": 1}}],
                        rate_per_s=10, duration_s=0.5, clock=clock, sleep=clock.sleep)

    assert (result.sent, result.errors, result.by_version, result.errors_by_version) == (5, 5, {"endpoint": 5}, {"endpoint": 5})
    assert clock.slept == pytest.approx([0.1] * 4)  # request i due at i / rate: no burst, no real sleep


def test_max_requests_caps_the_run(refused_url):
    clock = FakeClock()

    result = drive_http(refused_url, [{"path": "/"}], rate_per_s=1000, duration_s=60, max_requests=3, clock=clock, sleep=clock.sleep)

    assert result.sent == 3


@pytest.mark.parametrize(
    ("base_url", "requests", "message"),
    [
        ("127.0.0.1:80", [{"path": "/"}], "synthetic traffic needs an http:// or https:// base URL, got '127.0.0.1:80'"),
        ("http://127.0.0.1:1", [], "synthetic traffic needs at least one request to send"),
        ("http://127.0.0.1:1", [{"path": "/", "expect": {}}], "traffic request 0: unknown key(s) expect (a request takes body, headers, method, path)"),
        ("http://127.0.0.1:1", [{"path": "/"}, {"path": "health"}], "traffic request 1: path 'health' must start with /"),
    ],
)
def test_bad_input_is_refused_before_the_first_request(base_url, requests, message):
    with pytest.raises(ValueError) as err:
        drive_http(base_url, requests, rate_per_s=1, duration_s=1)
    assert str(err.value) == message

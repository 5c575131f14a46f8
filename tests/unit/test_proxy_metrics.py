"""Per-version canary samples from nginx access-log lines (slipway.verify.nginx_metrics), on files written by the test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from slipway.verify.canary import SideSample
from slipway.verify.nginx_metrics import SLACK_S, sample_from_access_log

START = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
END = START + timedelta(seconds=60)
T0 = START.timestamp()
STABLE, CANARY = 20001, 20002
PORTS = {"r1": STABLE, "r2": CANARY}


def line(at: float, status: int, addr: str, upstream_s: str = "0.010", request_s: str = "0.011", request: str = "GET / HTTP/1.1") -> str:
    return f'{at:.3f} {status} {addr} {upstream_s} {request_s} "{request}"'


def write(tmp_path, lines: list[str]):
    path = tmp_path / "app-prod.access.log"
    path.write_text("".join(f"{text}\n" for text in lines))
    return path


def test_each_request_counts_for_the_version_whose_port_answered(tmp_path):
    log = write(tmp_path, [
        line(T0 + 1, 200, f"127.0.0.1:{STABLE}", "0.004"),
        line(T0 + 2, 200, f"127.0.0.1:{CANARY}", "0.007"),
        line(T0 + 3, 200, f"127.0.0.1:{STABLE}", "0.005"),
    ])

    samples = sample_from_access_log(log, PORTS, START, END)

    assert samples == {
        "r1": SideSample(requests=2, errors=0, latencies_ms=[4.0, 5.0]),
        "r2": SideSample(requests=1, errors=0, latencies_ms=[7.0]),
    }


def test_the_window_includes_its_start_and_excludes_its_end(tmp_path):
    log = write(tmp_path, [
        line(T0 - 0.001, 200, f"127.0.0.1:{STABLE}"),
        line(T0, 200, f"127.0.0.1:{STABLE}"),
        line(END.timestamp() - 0.001, 200, f"127.0.0.1:{STABLE}"),
        line(END.timestamp(), 200, f"127.0.0.1:{STABLE}"),
    ])

    assert sample_from_access_log(log, PORTS, START, END)["r1"].requests == 2


def test_a_request_logged_in_the_millisecond_the_window_starts_counts(tmp_path):
    """nginx cuts $msec to whole milliseconds: a request that ended 0.4 ms after start is logged before it."""
    log = write(tmp_path, [line(T0 - 0.001, 200, f"127.0.0.1:{STABLE}"), line(T0, 200, f"127.0.0.1:{STABLE}")])
    start = START + timedelta(microseconds=600)

    assert sample_from_access_log(log, PORTS, start, END)["r1"].requests == 1
    assert sample_from_access_log(log, PORTS, START - timedelta(microseconds=1), START)["r1"].requests == 1  # only T0 - 1 ms


def test_5xx_and_requests_the_client_gave_up_on_are_errors_and_4xx_are_not(tmp_path):
    log = write(tmp_path, [
        line(T0 + 1, 500, f"127.0.0.1:{CANARY}"),
        line(T0 + 2, 502, f"127.0.0.1:{CANARY}", "0.000"),  # the container refused the connection
        line(T0 + 3, 499, f"127.0.0.1:{CANARY}", "-", "5.000"),  # the client timed out waiting for it
        line(T0 + 4, 404, f"127.0.0.1:{CANARY}"),
        line(T0 + 5, 200, f"127.0.0.1:{STABLE}"),
    ])

    samples = sample_from_access_log(log, PORTS, START, END)

    assert (samples["r2"].requests, samples["r2"].errors) == (4, 3)
    assert (samples["r1"].requests, samples["r1"].errors) == (1, 0)


def test_latency_falls_back_to_the_request_time_when_no_upstream_time_was_logged(tmp_path):
    log = write(tmp_path, [line(T0 + 1, 499, f"127.0.0.1:{CANARY}", "-", "5.000")])

    assert sample_from_access_log(log, PORTS, START, END)["r2"].latencies_ms == [5000.0]


def test_malformed_lines_are_skipped(tmp_path):
    log = write(tmp_path, [
        "",
        "garbage",
        f"{T0 + 1:.3f} 200 127.0.0.1:{STABLE} 0.001",  # cut short
        f'{T0 + 2:.3f} OK 127.0.0.1:{STABLE} 0.001 0.001 "GET / HTTP/1.1"',
        line(T0 + 3, 200, f"127.0.0.1:{STABLE}", "0.002"),
        f'{T0 + 4:.3f} 200 127.0.0.1:{STABLE} 0.003 0.003 "GET / HT',  # a line still being written
    ])

    assert sample_from_access_log(log, PORTS, START, END)["r1"] == SideSample(requests=1, errors=0, latencies_ms=[2.0])


def test_unknown_ports_and_requests_nginx_answered_itself_are_left_out(tmp_path):
    log = write(tmp_path, [
        line(T0 + 1, 200, "127.0.0.1:29999"),  # another environment's container
        line(T0 + 2, 400, "-", "-", "0.000", "GARBAGE"),  # nginx rejected it before choosing an upstream
        line(T0 + 3, 500, "unix:/run/app.sock"),
        line(T0 + 4, 200, f"127.0.0.1:{STABLE}"),
    ])

    samples = sample_from_access_log(log, PORTS, START, END)

    assert (samples["r1"].requests, samples["r2"].requests) == (1, 0)


def test_a_retried_request_counts_for_the_last_server_with_its_own_time(tmp_path):
    log = write(tmp_path, [
        line(T0 + 1, 200, f"127.0.0.1:{CANARY}, 127.0.0.1:{STABLE}", "0.000, 0.006", "0.007"),
        line(T0 + 2, 502, f"127.0.0.1:{STABLE}, 127.0.0.1:{CANARY}", "0.004, 0.000", "0.005"),
    ])

    samples = sample_from_access_log(log, PORTS, START, END)

    assert samples == {
        "r1": SideSample(requests=1, errors=0, latencies_ms=[6.0]),
        "r2": SideSample(requests=1, errors=1, latencies_ms=[0.0]),
    }


def test_a_version_may_have_several_ports_and_a_missing_log_is_no_traffic(tmp_path):
    log = write(tmp_path, [line(T0 + 1, 200, "127.0.0.1:20003"), line(T0 + 2, 200, f"127.0.0.1:{STABLE}")])

    assert sample_from_access_log(log, {"r1": [STABLE, 20003], "r2": []}, START, END)["r1"].requests == 2
    assert sample_from_access_log(tmp_path / "nothing.log", PORTS, START, END) == {
        "r1": SideSample(requests=0, errors=0, latencies_ms=[]),
        "r2": SideSample(requests=0, errors=0, latencies_ms=[]),
    }


@pytest.mark.parametrize("block_size", [1, 7, 64, 1 << 16])
def test_reading_backwards_in_blocks_of_any_size_gives_the_same_sample(tmp_path, block_size):
    lines = [line(T0 + i * 0.5, 500 if i % 4 == 0 else 200, f"127.0.0.1:{STABLE if i % 3 else CANARY}", f"0.{i:03d}")
             for i in range(100)]
    log = write(tmp_path, lines)

    samples = sample_from_access_log(log, PORTS, START, END, block_size=block_size)

    assert samples["r1"] == SideSample(requests=66, errors=16, latencies_ms=[float(i) for i in range(100) if i % 3])
    assert samples["r2"] == SideSample(requests=34, errors=9, latencies_ms=[float(i) for i in range(100) if not i % 3])


def test_reading_stops_at_the_first_line_well_before_the_window(tmp_path):
    """The log is in time order, so everything before a line older than start - SLACK_S is older still and is
    never read: a big log costs what the window holds. (A line out of that order shows the stop.)"""
    log = write(tmp_path, [
        line(T0 + 1, 200, f"127.0.0.1:{STABLE}"),  # never reached
        line(T0 - SLACK_S - 1, 200, f"127.0.0.1:{STABLE}"),  # reading stops here
        line(T0 + 3, 200, f"127.0.0.1:{STABLE}"),
        line(T0 - SLACK_S + 1, 200, f"127.0.0.1:{STABLE}"),  # within the slack: reading goes on past it
        line(T0 + 2, 200, f"127.0.0.1:{STABLE}"),
    ])

    assert sample_from_access_log(log, PORTS, START, END, block_size=64)["r1"].requests == 2


def test_a_window_must_be_timezone_aware_and_not_empty(tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        sample_from_access_log(tmp_path / "a.log", PORTS, START.replace(tzinfo=None), END)
    with pytest.raises(ValueError, match="sample window is empty"):
        sample_from_access_log(tmp_path / "a.log", PORTS, END, START)


def test_one_port_given_for_two_versions_is_refused(tmp_path):
    with pytest.raises(ValueError) as err:
        sample_from_access_log(tmp_path / "a.log", {"r1": STABLE, "r2": STABLE}, START, END)
    assert str(err.value) == f"port {STABLE} is given for both r1 and r2: requests could not be attributed"

"""A real Prometheus (Debian's ``prometheus`` package, installed by .ci/run) scraping a test service's ``/metrics``
every second, once per session. Tests set the service's series (labelled per app and version) and wait until
Prometheus has scraped them. Skipped with a reason where the binary is not installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsService:
    """What an app would expose: gauges in the Prometheus text format, set by the test."""

    def __init__(self) -> None:
        self.series: dict[str, float] = {}
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with service.lock:
                    body = "".join(f"{k} {v}\n" for k, v in service.series.items()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        key = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        with self.lock:
            self.series[key] = value


class Prometheus:
    def __init__(self, url: str, service: MetricsService) -> None:
        self.url = url
        self.service = service

    def query(self, promql: str) -> list:
        params = urllib.parse.urlencode({"query": promql})
        with _OPENER.open(f"{self.url}/api/v1/query?{params}", timeout=5) as response:
            return json.loads(response.read())["data"]["result"]

    def wait_for(self, promql: str, value: float, timeout_s: float = 30) -> None:
        """Until the query answers ``value`` (Prometheus scraped the service): polls a real server, bounded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and float(result[0]["value"][1]) == value:
                return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus did not scrape {promql} = {value} within {timeout_s}s")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        pytest.skip("Prometheus is not installed (Debian package prometheus); CI installs it (.ci/run)")
    service = MetricsService()
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{service.address}']\n")
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with _OPENER.open(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Prometheus did not start: {(work / 'prometheus.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield Prometheus(url, service)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    service.server.shutdown()

"""A canary on the docker-host target: a weighted nginx split between two real containers, synthetic traffic
through the stable port, and per-version samples read back from nginx's access log.

The service is busybox httpd in a FROM-scratch image (built here on the session's busybox image) serving
/health (``ok-$RELEASE``), /version and a CGI /cgi-bin/checkout that answers ``$CHECKOUT_STATUS`` (200 unless
set). Releases differ by environment, as two commits of one slipway.yaml would. Traffic runs on a fake clock
(no real sleeping); the requests themselves are real. Every container a test starts carries the test's own app
label and is removed by the ``app`` fixture; every nginx is stopped by the ``proxy`` fixture.

nginx's smooth weighted round robin is deterministic in its one worker: weights 75/25 send requests
stable, stable, canary, stable, then repeat, so the counts below are exact.
"""

from __future__ import annotations

import contextlib
import io
import random
import socket
import tarfile
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker.errors
import pytest

from fakes import FakeClock
from slipway.verify.canary import CanaryThresholds, judge
from slipway.targets.docker_host import DockerHostTarget
from slipway.targets.ecs import EcsTarget
from slipway.targets.docker_engine import managed_containers
from slipway.targets.ecs import EcsSettings
from slipway.core.errors import DeployError
from slipway.core.models import ArtifactRef, ImageRef
from slipway.targets.nginx import NginxProxy
from slipway.verify.nginx_metrics import sample_from_access_log
from slipway.artifact.registry import push_image
from slipway.verify.traffic import drive_http

SERVE = r"""#!/bin/sh
set -e
mkdir -p /www/cgi-bin
echo "ok-$RELEASE" > /www/health
echo "$RELEASE" > /www/version
cat > /www/cgi-bin/checkout <<EOF
#!/bin/sh
printf 'Status: ${CHECKOUT_STATUS:-200} From $RELEASE\r\nContent-Type: text/plain\r\n\r\n$RELEASE\n'
EOF
chmod +x /www/cgi-bin/checkout
exec httpd -f -p "127.0.0.1:$PORT" -h /www
"""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str]:
    try:
        with _DIRECT.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def logged(path, lines: int, timeout_s: float = 5.0) -> None:
    """nginx writes a request's access-log line after the reply has gone: wait (bounded) until the lines are there."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_bytes().splitlines()) >= lines:
            return
        time.sleep(0.01)  # nginx, another process, is writing: there is no clock of ours to advance


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def now() -> datetime:
    return datetime.now(timezone.utc)


# ---- fixtures ----------------------------------------------------------------------------------------------
@dataclass
class Ports:
    range: tuple[int, int]
    listen: int


@pytest.fixture
def ports() -> Ports:
    """Container ports below Linux's ephemeral range (so nothing else grabs them meanwhile) and a stable port."""
    for _ in range(50):
        lo = random.randrange(20000, 32000, 4)
        if all(bindable(p) for p in range(lo, lo + 4)):
            break
    return Ports(range=(lo, lo + 3), listen=free_port())


@pytest.fixture(scope="module")
def service_image(docker_client, busybox_image, local_registry) -> ImageRef:
    """The test service as an image with its own CMD (a target runs an image as built), pushed to the session's
    registry so that it is deployed by digest, as a published release is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in (
            ("Dockerfile", f'FROM {busybox_image}\nCOPY serve.sh /serve.sh\nCMD ["/bin/sh", "/serve.sh"]\n'.encode(), 0o644),
            ("serve.sh", SERVE.encode(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    local_tag = "slipway-test/canary-service:latest"
    image, _ = docker_client.images.build(fileobj=buf, custom_context=True, tag=local_tag, rm=True)
    ref = push_image(docker_client, image.id, registry=local_registry, name=f"test/canary-{uuid.uuid4().hex[:10]}", tag="t1")
    yield ref
    for tag in (f"{ref.repository}:{ref.tag}", local_tag):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag)


@pytest.fixture
def app(docker_client):
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"dev.slipway.app={name}"}):
        container.remove(force=True)


@pytest.fixture
def proxy(tmp_path, nginx_binary):
    nginx = NginxProxy(tmp_path / "proxy", nginx_binary)
    yield nginx
    nginx.stop()


@pytest.fixture
def target(docker_client, proxy, app, ports):
    """``target(release, **environment)``: the environment's target as a flow run of that release builds it."""

    def make(release: str = "r1", **environment: str) -> DockerHostTarget:
        return DockerHostTarget(docker_client, proxy, app=app, env="prod", listen_port=ports.listen, container_ports=ports.range,
                                health_path="/health", health_timeout=10, environment={"RELEASE": release, **environment})

    return make


def artifact(release: str, image: ImageRef) -> ArtifactRef:
    return ArtifactRef(app="canary", sha256=image.digest.split(":")[1], size=0, bucket="unused", key=f"{release}.json",
                       manifest_key=f"{release}.manifest.json", commit="0" * 40, release_id=release, image=image)


@pytest.fixture
def canary(target, service_image, docker_client, app):
    """r1 live on the stable port, r2 prepared beside it (answering /cgi-bin/checkout with ``checkout_status``)."""

    def start(checkout_status: int = 200) -> tuple[DockerHostTarget, int, int]:
        stable = target("r1")
        stable.prepare(artifact("r1", service_image))
        stable.point("r1")
        candidate = target("r2", CHECKOUT_STATUS=str(checkout_status))
        candidate.prepare(artifact("r2", service_image))
        ports = {s.release_id: s.port for s in managed_containers(docker_client, app, "prod")}
        return candidate, ports["r1"], ports["r2"]

    return start


def sample(t: DockerHostTarget, start: datetime, expected: int):
    """canary_sample once nginx has logged all ``expected`` requests: it writes a request's access-log line after
    the response went out, so the client can be a line ahead of the log. Polls the log (bounded), then samples."""
    import time

    deadline = time.monotonic() + 5
    while True:
        stable, canary_side = t.canary_sample("r1", "r2", start, now() + timedelta(seconds=1))
        if stable.requests + canary_side.requests >= expected or time.monotonic() > deadline:
            return stable, canary_side
        time.sleep(0.02)  # polling interval for nginx's log write, not a wait for an outcome


def drive(t: DockerHostTarget, items: list[dict], n: int):
    clock = FakeClock()
    result = t.drive(items, rate_per_s=100, duration_s=n / 100, clock=clock, sleep=clock.sleep)
    assert clock.now - 1000.0 == pytest.approx((n - 1) / 100)  # the schedule ran on the fake clock, not in real time
    return result


# ---- docker-host target ------------------------------------------------------------------------------------
@pytest.mark.docker
def test_a_25_percent_split_sends_every_fourth_request_to_the_canary_while_stable_stays_serving(canary, proxy):
    t, stable_port, canary_port = canary()

    t.shift("r1", "r2", 25)

    assert t.serving() == "r1"
    assert proxy.current_upstream(t.route) == stable_port
    assert proxy.current_upstreams(t.route) == {stable_port: 75, canary_port: 25}
    start = now()
    result = drive(t, [{"method": "GET", "path": "/version"}, {"path": "/health", "headers": {"X-Probe": "canary-test"}}], 100)
    stable, canary_side = sample(t, start, 100)
    assert (result.sent, result.errors, result.by_version, result.errors_by_version) == (100, 0, {"endpoint": 100}, {})
    assert (stable.requests, stable.errors, len(stable.latencies_ms)) == (75, 0, 75)
    assert (canary_side.requests, canary_side.errors, len(canary_side.latencies_ms)) == (25, 0, 25)
    assert all(ms >= 0 for ms in stable.latencies_ms + canary_side.latencies_ms)
    # and the replies really come from the two containers, in nginx's order
    assert [get(f"{t.endpoint}/version")[1] for _ in range(8)] == ["r1\n", "r1\n", "r2\n", "r1\n"] * 2


@pytest.mark.docker
def test_pointing_back_at_stable_ends_the_split_and_discard_then_removes_the_canary(canary, proxy, docker_client, app):
    t, stable_port, canary_port = canary()
    t.shift("r1", "r2", 25)
    t.discard("r2")  # too early: the split still sends it requests, so its container stays
    assert {s.release_id for s in managed_containers(docker_client, app, "prod")} == {"r1", "r2"}

    t.point("r1")  # what a rollback does

    assert proxy.current_upstreams(t.route) == {stable_port: 1}
    assert t.serving() == "r1"
    start = now()
    assert drive(t, [{"path": "/version"}], 20).sent == 20
    stable, canary_side = sample(t, start, 20)
    assert (stable.requests, canary_side.requests) == (20, 0)
    t.discard("r2")
    assert [s.release_id for s in managed_containers(docker_client, app, "prod")] == ["r1"]
    assert get(f"{t.endpoint}/version") == (200, "r1\n")


@pytest.mark.docker
def test_promoting_the_canary_ends_the_split_and_settle_retires_stable(canary, proxy, docker_client, app):
    t, stable_port, canary_port = canary()
    t.shift("r1", "r2", 50)

    t.point("r2")
    t.settle("r2")

    assert proxy.current_upstreams(t.route) == {canary_port: 1}
    assert t.serving() == "r2"
    assert [s.release_id for s in managed_containers(docker_client, app, "prod")] == ["r2"]


@pytest.mark.docker
def test_a_canary_failing_on_one_path_has_errors_on_its_side_only(canary):
    t, _, _ = canary(checkout_status=500)
    t.shift("r1", "r2", 25)
    items = [{"method": "GET", "path": "/cgi-bin/checkout"}, {"method": "GET", "path": "/cgi-bin/checkout?step=2"}]

    start = now()
    result = drive(t, items, 40)
    stable, canary_side = sample(t, start, 40)

    assert (result.sent, result.errors, result.errors_by_version) == (40, 10, {"endpoint": 10})
    assert (stable.requests, stable.errors) == (30, 0)
    assert (canary_side.requests, canary_side.errors) == (10, 10)
    verdict = judge(stable, canary_side, CanaryThresholds(min_requests=10))
    assert verdict.verdict == "FAIL"
    assert verdict.metrics[0].verdict == "FAIL"


@pytest.mark.docker
def test_shift_refuses_a_stable_release_that_is_not_running_and_leaves_the_route_alone(canary, docker_client, proxy):
    t, stable_port, _ = canary()
    conf = (proxy.conf_d / f"{t.route}.conf").read_text()

    with pytest.raises(DeployError) as err:
        t.shift("r0", "r2", 10)

    assert str(err.value) == (
        f"stable release r0 has no running healthy container to keep serving 90% of requests ({t.name}): "
        "point the environment at a running release (roll back) before starting a canary"
    )
    assert err.value.ref == "stable-not-running"
    with pytest.raises(DeployError) as err:
        t.shift("r1", "r3", 10)
    assert err.value.ref == "canary-not-running"
    with pytest.raises(DeployError) as err:
        t.shift("r1", "r2", 100)
    assert str(err.value) == f"canary share 100% is not a whole percentage in 1-99 ({t.name}): use point() to send 0% or 100% to one release"
    assert (proxy.conf_d / f"{t.route}.conf").read_text() == conf
    assert proxy.current_upstreams(t.route) == {stable_port: 1}


@pytest.mark.docker
def test_shift_raises_the_callers_error_class(canary):
    class Halted(DeployError):
        pass

    t, _, _ = canary()
    with pytest.raises(Halted):
        t.shift("r0", "r2", 10, error_cls=Halted)


def test_an_ecs_environment_refuses_a_canary():
    t = EcsTarget(ecs=None, settings=EcsSettings(cluster="c", service="s", container_name="web"), endpoint=None)  # no call reaches ECS
    for call in (lambda: t.shift("a", "b", 10), lambda: t.canary_sample("a", "b", now(), now()),
                 lambda: t.drive([{"path": "/"}], 1, 1)):
        with pytest.raises(DeployError) as err:
            call()
        assert err.value.ref == "strategy-unsupported"
        assert str(err.value) == (
            "canary/linear is not supported on the ECS target: an ECS canary needs a load balancer with two target "
            "groups (CodeDeploy blue/green) (ecs c/s): use strategy all-at-once for ecs environments"
        )


# ---- nginx alone (upstreams are tiny in-process servers) ------------------------------------------------------
class _Named(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = self.server.label.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstreams():
    servers = []

    def start(label: str) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        server.label = label
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_weighted_route_splits_by_weight_and_reports_its_primary_after_a_restart(proxy, upstreams, tmp_path, nginx_binary):
    a, b = upstreams("a"), upstreams("b")
    listen = free_port()
    proxy.route("web", listen, a)

    proxy.route_weighted("web", listen, {b: 1, a: 3}, primary=a)

    assert [get(f"http://127.0.0.1:{listen}/")[1] for _ in range(8)] == ["a", "a", "b", "a"] * 2
    again = NginxProxy(tmp_path / "proxy", nginx_binary)  # a later process knows only the files
    assert (again.current_upstream("web"), again.current_upstreams("web")) == (a, {a: 3, b: 1})


def test_a_plain_route_replaces_a_weighted_one(proxy, upstreams):
    a, b = upstreams("a"), upstreams("b")
    listen = free_port()
    proxy.route_weighted("web", listen, {a: 75, b: 25}, primary=a)

    proxy.route("web", listen, b)

    assert (proxy.current_upstream("web"), proxy.current_upstreams("web")) == (b, {b: 1})
    assert "upstream" not in (proxy.conf_d / "web.conf").read_text().replace("proxy_next_upstream", "")
    assert {get(f"http://127.0.0.1:{listen}/")[1] for _ in range(8)} == {"b"}


def test_a_dead_canary_fails_its_own_share_and_is_neither_retried_on_stable_nor_taken_out(proxy, upstreams):
    """proxy_next_upstream off: the canary's failures reach the client (and its log line); max_fails=0: nginx
    keeps sending the canary its share instead of quietly routing around it for 10 s."""
    a, dead = upstreams("a"), free_port()
    listen = free_port()
    proxy.route_weighted("web", listen, {a: 3, dead: 1}, primary=a)
    start = now()

    replies = [get(f"http://127.0.0.1:{listen}/")[0] for _ in range(8)]

    assert replies == [200, 200, 502, 200] * 2
    logged(proxy.access_log("web"), lines=8)
    samples = sample_from_access_log(proxy.access_log("web"), {"stable": a, "canary": dead}, start, now())
    assert (samples["stable"].requests, samples["stable"].errors) == (6, 0)
    assert (samples["canary"].requests, samples["canary"].errors) == (2, 2)


def test_a_weighted_route_nginx_rejects_leaves_the_previous_route_live(proxy, upstreams):
    a, b = upstreams("a"), upstreams("b")
    listen_a, listen_b = free_port(), free_port()
    proxy.route("a", listen_a, a)
    proxy.route("b", listen_b, b)
    before = (proxy.conf_d / "b.conf").read_text()

    with pytest.raises(DeployError) as err:
        proxy.route_weighted("b", listen_a, {a: 1, b: 1}, primary=b)  # a's stable port: nginx -t says no

    assert err.value.ref == "proxy-config-rejected"
    assert (proxy.conf_d / "b.conf").read_text() == before
    assert (get(f"http://127.0.0.1:{listen_a}/")[1], get(f"http://127.0.0.1:{listen_b}/")[1]) == ("a", "b")


def test_a_weighted_route_of_one_upstream_is_a_plain_route(proxy, upstreams):
    a = upstreams("a")
    listen = free_port()

    proxy.route_weighted("web", listen, {a: 5}, primary=a)

    assert proxy.current_upstreams("web") == {a: 1}
    assert get(f"http://127.0.0.1:{listen}/") == (200, "a")


class _Status(BaseHTTPRequestHandler):
    """Answers /status/<code> with that status."""

    def do_GET(self):  # noqa: N802
        self.send_response(int(self.path.rsplit("/", 1)[1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_synthetic_traffic_counts_5xx_as_errors_and_4xx_as_replies(proxy):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        listen = free_port()
        proxy.route("web", listen, server.server_address[1])
        clock = FakeClock()

        result = drive_http(f"http://127.0.0.1:{listen}", [{"path": f"/status/{code}"} for code in (200, 404, 302, 503)],
                            rate_per_s=50, duration_s=0.4, clock=clock, sleep=clock.sleep)

        assert (result.sent, result.errors) == (20, 5)
    finally:
        server.shutdown()
        server.server_close()

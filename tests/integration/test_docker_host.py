"""Blue/green on a real Docker engine behind a real nginx: switch, verify, roll back, and never drop a request.

The service is busybox httpd in the session's FROM-scratch image, bound to 127.0.0.1:$PORT with host networking,
serving /health as ``ok-$RELEASE``. Every container a test starts carries the test's own app label and is
removed by the ``app`` fixture; every nginx is stopped by the ``proxy`` fixture.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker.errors
import pytest

from slipway.targets.docker_engine import ContainerSlot, deploy_blue_green, managed_containers, run_release_container
from slipway.core.errors import DeployError, VerificationFailed
from slipway.verify.http_checks import run_http_checks
from slipway.targets.nginx import NginxProxy

pytestmark = pytest.mark.docker

SERVE = "mkdir -p /www && echo ok-$RELEASE > /www/health && exec httpd -f -p 127.0.0.1:$PORT -h /www"
NO_HEALTH = "mkdir -p /www && exec httpd -f -p 127.0.0.1:$PORT -h /www"  # /health is a 404 forever
HINT = "check the service binds $PORT on 127.0.0.1 and serves the health path"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> str:
    with _DIRECT.open(url, timeout=5) as resp:
        return resp.read().decode()


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    return Ports(range=(lo, lo + 3), listen=listen)


@pytest.fixture(scope="module")
def image(docker_client, busybox_image) -> str:
    return docker_client.images.get(busybox_image).id  # sha256:..., the local form of "pinned by digest"


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


def expect_body(text: str):
    """The verify step a flow would pass: HTTP smoke checks through the stable URL."""

    def verify(stable_url: str) -> None:
        result = run_http_checks(stable_url, [{"name": "health", "request": {"path": "/health"}, "expect": {"body_contains": text}}])
        if not result.passed:
            raise VerificationFailed(f"smoke check 'health' failed: {result.first_failure.detail}", target=stable_url)

    return verify


def deploy(docker_client, proxy, image, app, ports, release, *, script=SERVE, verify=None, health_timeout_s=10.0,
           port_range=None, env="prod"):
    return deploy_blue_green(
        docker_client, proxy, app=app, env=env, release_id=release, image=image, port_range=port_range or ports.range,
        listen_port=ports.listen, health_path="/health", health_timeout_s=health_timeout_s,
        verify=verify or expect_body(f"ok-{release}"), environment={"RELEASE": release}, command=["sh", "-c", script],
    )


def assert_removed(docker_client, slot: ContainerSlot) -> None:
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(slot.container_id)


class Poller(threading.Thread):
    """GETs the stable URL every ~20 ms on a new connection each time; bounded by count and time."""

    def __init__(self, url: str, max_requests: int = 3000, max_s: float = 40) -> None:
        super().__init__(daemon=True)
        self.url, self.max_requests, self.max_s = url, max_requests, max_s
        self.bodies: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self.done.is_set() and len(self.bodies) + len(self.failures) < self.max_requests and time.monotonic() < deadline:
            try:
                self.bodies.append(get(self.url))
            except urllib.error.HTTPError as exc:
                self.failures.append(f"HTTP {exc.code}")
            except Exception as exc:  # noqa: BLE001 - any failure is what the test counts
                self.failures.append(repr(exc))
            self.done.wait(0.02)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


# ---- tests -------------------------------------------------------------------------------------------------
def test_a_first_release_goes_live_behind_the_stable_port(docker_client, proxy, image, app, ports):
    slot = deploy(docker_client, proxy, image, app, ports, "r1")

    assert get(f"http://127.0.0.1:{ports.listen}/health") == "ok-r1\n"
    assert proxy.current_upstream("prod") == slot.port == ports.range[0]
    assert managed_containers(docker_client, app, "prod") == [slot]
    assert slot.name == f"slipway-{app}-prod-r1-{slot.port}"
    labels = docker_client.containers.get(slot.container_id).labels
    assert {k: v for k, v in labels.items() if k.startswith("dev.slipway.")} == {
        "dev.slipway.app": app, "dev.slipway.env": "prod", "dev.slipway.release": "r1",
        "dev.slipway.port": str(slot.port), "dev.slipway.managed": "true",
    }
    last = proxy.access_log("prod").read_text().splitlines()[-1]
    assert re.fullmatch(rf'\d+\.\d{{3}} 200 127\.0\.0\.1:{slot.port} \d+\.\d{{3}} \d+\.\d{{3}} "GET /health HTTP/1\.1"', last)


def test_a_second_release_switches_and_the_old_container_is_removed_only_after_verification(docker_client, proxy, image, app, ports):
    first = deploy(docker_client, proxy, image, app, ports, "r1")
    seen = {}

    def verify(stable_url: str) -> None:
        expect_body("ok-r2")(stable_url)
        seen["old_status"] = docker_client.containers.get(first.container_id).status

    second = deploy(docker_client, proxy, image, app, ports, "r2", verify=verify)

    assert seen == {"old_status": "running"}
    assert_removed(docker_client, first)
    assert proxy.current_upstream("prod") == second.port != first.port
    assert managed_containers(docker_client, app, "prod") == [second]
    assert get(f"http://127.0.0.1:{ports.listen}/health") == "ok-r2\n"


def test_no_request_fails_during_a_switch_and_a_rollback(docker_client, proxy, image, app, ports):
    deploy(docker_client, proxy, image, app, ports, "r1")
    poller = Poller(f"http://127.0.0.1:{ports.listen}/health")
    poller.start()
    try:
        time.sleep(0.2)
        second = deploy(docker_client, proxy, image, app, ports, "r2")
        with pytest.raises(VerificationFailed):
            deploy(docker_client, proxy, image, app, ports, "r3", verify=expect_body("ok-r3-with-the-new-page"))
        time.sleep(0.2)
    finally:
        poller.stop()

    assert poller.failures == []
    assert len(poller.bodies) >= 20
    assert {"ok-r1\n", "ok-r2\n"} <= set(poller.bodies) <= {"ok-r1\n", "ok-r2\n", "ok-r3\n"}
    assert poller.bodies[-1] == "ok-r2\n"
    assert managed_containers(docker_client, app, "prod") == [second]


def test_health_that_never_passes_removes_the_new_container_and_leaves_the_proxy_alone(docker_client, proxy, image, app, ports):
    lo = ports.range[0]
    first = deploy(docker_client, proxy, image, app, ports, "r1", port_range=(lo, lo + 1))
    conf_before = (proxy.conf_d / "prod.conf").read_text()

    with pytest.raises(DeployError) as err:
        deploy(docker_client, proxy, image, app, ports, "r2", script=NO_HEALTH, health_timeout_s=2, port_range=(lo, lo + 1))

    assert str(err.value) == f"http://127.0.0.1:{lo + 1}/health not healthy after 2s (last: HTTP 404): {HINT}"
    assert (proxy.conf_d / "prod.conf").read_text() == conf_before
    assert managed_containers(docker_client, app, "prod") == [first]
    assert get(f"http://127.0.0.1:{ports.listen}/health") == "ok-r1\n"


def test_failed_verification_switches_back_and_removes_the_failed_container(docker_client, proxy, image, app, ports):
    first = deploy(docker_client, proxy, image, app, ports, "r1")
    raised = VerificationFailed("smoke check 'health' failed", target="stable")
    served_during_verify = []

    def verify(stable_url: str) -> None:
        served_during_verify.append(get(f"{stable_url}/health"))
        raise raised

    with pytest.raises(VerificationFailed) as err:
        deploy(docker_client, proxy, image, app, ports, "r2", verify=verify)

    assert err.value is raised
    assert served_during_verify == ["ok-r2\n"]
    assert proxy.current_upstream("prod") == first.port
    assert managed_containers(docker_client, app, "prod") == [first]
    assert get(f"http://127.0.0.1:{ports.listen}/health") == "ok-r1\n"


def test_a_failed_first_release_leaves_the_stable_port_unrouted(docker_client, proxy, image, app, ports):
    with pytest.raises(VerificationFailed):
        deploy(docker_client, proxy, image, app, ports, "r1", verify=expect_body("something else"))

    assert proxy.current_upstream("prod") is None
    assert managed_containers(docker_client, app, "prod") == []
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{ports.listen}/health")


def test_an_exhausted_port_range_fails_before_anything_runs(docker_client, proxy, image, app, ports):
    lo = ports.range[0]
    first = deploy(docker_client, proxy, image, app, ports, "r1", port_range=(lo, lo))

    with pytest.raises(DeployError) as err:
        deploy(docker_client, proxy, image, app, ports, "r2", port_range=(lo, lo))

    assert str(err.value) == (
        f"port range {lo}-{lo} exhausted ({app}/prod): widen port_range in the docker-host block or remove old containers"
    )
    assert err.value.evidence == {"slipway_containers": 1, "other_processes": 0}
    assert managed_containers(docker_client, app, "prod") == [first]
    assert proxy.current_upstream("prod") == first.port


def test_a_port_bound_by_another_process_is_skipped_and_counts_as_used(docker_client, image, app, ports):
    lo = ports.range[0]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", lo))
        squatter.listen()
        slot = run_release_container(docker_client, app=app, env="prod", release_id="r1", image=image, port_range=(lo, lo + 1),
                                     environment={"RELEASE": "r1"}, command=["sh", "-c", SERVE])
        assert slot.port == lo + 1
        with pytest.raises(DeployError) as err:
            run_release_container(docker_client, app=app, env="prod", release_id="r2", image=image, port_range=(lo, lo + 1))
    assert err.value.evidence == {"slipway_containers": 1, "other_processes": 1}
    assert managed_containers(docker_client, app, "prod") == [slot]


def test_an_image_not_pinned_by_digest_is_refused_before_anything_runs(docker_client, busybox_image, app, ports):
    with pytest.raises(DeployError) as err:
        run_release_container(docker_client, app=app, env="prod", release_id="r1", image=busybox_image, port_range=ports.range)
    assert str(err.value) == (
        f"image '{busybox_image}' is not pinned by digest ({app}/prod): "
        "deploy repository@sha256:<digest> (the digest the publish step recorded)"
    )
    assert managed_containers(docker_client, app, "prod") == []


def test_state_is_rebuilt_from_engine_labels_and_the_running_proxy(docker_client, proxy, tmp_path, image, app, ports):
    live = deploy(docker_client, proxy, image, app, ports, "r1")
    staging = run_release_container(docker_client, app=app, env="staging", release_id="s1-0123456789abcdef", image=image,
                                    port_range=ports.range, environment={"RELEASE": "s1"}, command=["sh", "-c", SERVE])

    assert staging.name == f"slipway-{app}-staging-s1-012345678-{staging.port}"
    assert managed_containers(docker_client, app, "prod") == [live]
    assert managed_containers(docker_client, app, "staging") == [staging]
    # A new process (a later flow run) finds the same master and routes from files alone.
    again = NginxProxy(tmp_path / "proxy", proxy.nginx_binary)
    pid = proxy.master_pid()
    again.ensure_running()
    assert (again.master_pid(), again.current_upstream("prod"), again.current_upstream("staging")) == (pid, live.port, None)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_config_nginx_rejects_is_never_swapped_in(proxy, upstreams):
    a, b = upstreams("a"), upstreams("b")
    listen_a, listen_b = free_port(), free_port()
    proxy.route("a", listen_a, a)
    proxy.route("b", listen_b, b)
    before = (proxy.conf_d / "b.conf").read_text()

    with pytest.raises(DeployError) as err:
        proxy.route("b", listen_a, b)  # two environments on one stable port: nginx -t says no

    assert str(err.value) == (
        f"nginx rejected the route for b: a duplicate default server for 127.0.0.1:{listen_a} "
        f"({proxy.conf_d / 'b.conf'}): the previous configuration is still live; fix the ports and deploy again"
    )
    assert (proxy.conf_d / "b.conf").read_text() == before
    assert sorted(p.name for p in proxy.conf_d.iterdir()) == ["a.conf", "b.conf"]
    assert (get(f"http://127.0.0.1:{listen_a}/"), get(f"http://127.0.0.1:{listen_b}/")) == ("a", "b")


def test_a_listen_port_held_by_another_process_is_refused_before_any_change(proxy, upstreams):
    a = upstreams("a")
    listen_a = free_port()
    proxy.route("a", listen_a, a)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(DeployError) as err:
            proxy.route("c", taken, a)

    assert str(err.value) == (
        f"listen port {taken} is in use by another process (c): choose another listen_port for this environment or stop what holds it"
    )
    assert sorted(p.name for p in proxy.conf_d.iterdir()) == ["a.conf"]


class _NoPortProbe(NginxProxy):
    """Skips the up-front port probe: stands in for a process that takes the port between the probe and the reload."""

    def _check_listen_port_free(self, name: str, listen_port: int) -> None:
        return None


def test_a_reload_nginx_refuses_restores_the_previous_routes(tmp_path, nginx_binary, upstreams):
    proxy = _NoPortProbe(tmp_path / "proxy", nginx_binary)
    try:
        a = upstreams("a")
        listen_a = free_port()
        proxy.route("a", listen_a, a)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            with pytest.raises(DeployError) as err:
                proxy.route("c", taken, a)  # nginx -t does not bind, so only the reload finds out

        assert str(err.value).startswith(f"nginx kept its old configuration: bind() to 127.0.0.1:{taken} failed (98: ")
        assert sorted(p.name for p in proxy.conf_d.iterdir()) == ["a.conf"]
        assert proxy.current_upstream("c") is None
        assert get(f"http://127.0.0.1:{listen_a}/") == "a"
        proxy.route("c", free_port(), a)  # and the proxy still takes a good route afterwards
        assert proxy.current_upstream("c") == a
    finally:
        proxy.stop()


@pytest.mark.docker
def test_a_route_written_but_never_reloaded_is_reloaded_by_the_next_identical_route(tmp_path, nginx_binary):
    """A run killed after swapping the file in but before the reload: nginx still serves the old config. The
    next run asks for the same route; the files already match, but nginx must be told."""
    import http.server
    import threading

    from slipway.targets.nginx import NginxProxy

    servers = []
    for text in (b"old", b"new"):
        class Handler(http.server.BaseHTTPRequestHandler):
            body = text

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(self.body)))
                self.end_headers()
                self.wfile.write(self.body)

            def log_message(self, *args):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    old_port, new_port = (srv.server_address[1] for srv in servers)
    listen = free_port()
    proxy = NginxProxy(tmp_path / "proxy", nginx_binary)
    try:
        proxy.route("app-dev", listen, old_port)
        # the killed run: the new file is on disk, nginx was never reloaded
        conf = proxy.conf_d / "app-dev.conf"
        conf.write_text(conf.read_text().replace(f"127.0.0.1:{old_port}", f"127.0.0.1:{new_port}"))
        assert urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5).read() == b"old"
        proxy.route("app-dev", listen, new_port)
        assert urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5).read() == b"new"
    finally:
        proxy.stop()
        for srv in servers:
            srv.shutdown()


def test_a_route_changed_by_hand_to_a_container_slipway_did_not_start_is_never_taken_for_a_release(docker_client, proxy, image, app, ports):
    from slipway.targets.docker_host import DockerHostTarget, route_name

    slot = deploy(docker_client, proxy, image, app, ports, "r1")
    target = DockerHostTarget(docker_client, proxy, app=app, env="prod", listen_port=ports.listen, container_ports=ports.range)
    proxy.unroute("prod")  # the low-level deploy above routes by environment name; the target routes by app and environment
    proxy.route(route_name(app, "prod"), ports.listen, slot.port)
    assert target.serving() == "r1"

    hand_port = ports.range[1]  # someone's debugging container, routed to by editing the proxy by hand
    foreign = docker_client.containers.run(image, ["sh", "-c", f"mkdir -p /www && echo hand > /www/health && exec httpd -f -p 127.0.0.1:{hand_port} -h /www"],
                                           detach=True, network_mode="host", labels={"dev.slipway.app": app}, name=f"{app}-debug")
    proxy.route(route_name(app, "prod"), ports.listen, hand_port)
    assert target.serving() == f"foreign:127.0.0.1:{hand_port}"  # drift, never "nothing served" (which a deploy would overwrite)

    foreign.remove(force=True)
    assert target.serving() is None  # an upstream that is gone: nothing is served

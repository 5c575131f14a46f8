"""A Docker host behind the rollout ``Target`` protocol: blue/green (and canaries) through nginx.

 a *version* is a release id. ``prepare`` starts the release's container (by digest) beside the
live one and waits for its health path; ``point`` switches the environment's stable port to it with a
graceful nginx reload (starting the release's image again if its container is gone, as on a rollback long
after the old container was retired); ``settle`` retires the other containers once verified; ``discard``
removes a failed release's container. A canary: ``shift`` splits the stable port between the stable and the
canary container with nginx weights (stable stays the primary, so ``serving`` still names it), ``drive`` sends
synthetic requests through the stable port, ``canary_sample`` reads each side's requests, errors and latencies
from the proxy's access log; ``point`` ends the split either way.

"""

from __future__ import annotations

import fcntl
import json
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from slipway.targets import docker_engine
from slipway.verify.canary import SideSample
from slipway.core.errors import DeployError
from slipway.verify.http_checks import health_check, run_http_checks
from slipway.core.models import ArtifactRef, CheckResult, DeployResult, VerifyResult
from slipway.targets.nginx import NginxProxy
from slipway.verify.nginx_metrics import sample_from_access_log
from slipway.verify.traffic import TrafficResult, drive_http

_LISTEN_RE = re.compile(r"listen\s+127\.0\.0\.1:(\d+)")


def route_name(app: str, env: str) -> str:
    return f"{app}-{env}"


def routed_listen_ports(proxy: NginxProxy) -> dict[str, int]:
    """route name → the stable port nginx listens on for it (from the proxy's config files)."""
    out = {}
    for conf in sorted(proxy.conf_d.glob("*.conf")) if proxy.conf_d.exists() else []:
        found = _LISTEN_RE.search(conf.read_text())
        if found:
            out[conf.stem] = int(found.group(1))
    return out


def allocate_listen_port(proxy: NginxProxy, name: str, stable_range: tuple[int, int]) -> int:
    """The route's stable port: the one it is routed on or was given before, else the lowest port of the range
    that no route holds, no other route was given, and no process listens on. Allocations are kept in
    ``ports.json`` beside the proxy's config (under a lock), so every environment of every app keeps its port."""
    proxy.root.mkdir(parents=True, exist_ok=True)
    book = proxy.root / "ports.json"
    with open(proxy.root / "ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        given = json.loads(book.read_text()) if book.exists() else {}
        routed = routed_listen_ports(proxy)
        port = routed.get(name) or given.get(name)
        if port is None:
            taken = set(routed.values()) | set(given.values())
            port = next((p for p in range(stable_range[0], stable_range[1] + 1) if p not in taken and docker_engine.port_is_free(p)), None)
            if port is None:
                raise DeployError(
                    f"stable port range {stable_range[0]}-{stable_range[1]} exhausted",
                    hint="widen stable_ports in the docker-host block",
                    ref="port-range-exhausted",
                )
        if given.get(name) != port:
            given[name] = port
            tmp = book.with_suffix(".tmp")
            tmp.write_text(json.dumps(given, indent=2, sort_keys=True))
            tmp.replace(book)
        return port


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class DockerHostTarget:
    type = "docker-host"

    def __init__(
        self, client, proxy: NginxProxy, *, app: str, env: str, listen_port: int, container_ports: tuple[int, int],
        health_path: str = "/health", health_timeout: float = 60, port_env: str = "PORT",
        environment: dict[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep, recorded_environment: dict | None = None,
    ) -> None:
        self.client = client
        self.proxy = proxy
        self.app, self.env = app, env
        self.route = route_name(app, env)
        self.listen_port = listen_port
        self.container_ports = container_ports
        self.health_path = health_path
        self.health_timeout = health_timeout
        self.port_env = port_env
        self.environment = dict(environment or {})
        # what the ledger records: the spec's values, secret references unresolved (``environment`` holds them read)
        self.recorded_environment = dict(recorded_environment if recorded_environment is not None else self.environment)
        self.clock, self.sleep = clock, sleep

    @property
    def name(self) -> str:
        return f"docker-host {self.env} at 127.0.0.1:{self.listen_port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def location(self) -> dict:
        # enough to run any recorded release again without the spec (a rollback to a retired container):
        # environment values come from the committed slipway.yaml; secrets stay references, read again when used
        return {"endpoint": self.endpoint, "listen_port": self.listen_port, "health_path": self.health_path,
                "port_env": self.port_env, "environment": self.recorded_environment}

    def default_check(self) -> dict:
        return health_check(self.health_path)

    # ---- helpers ----------------------------------------------------------------------------------------
    def _slots(self):
        return docker_engine.managed_containers(self.client, self.app, self.env)

    def _healthy(self, slot) -> bool:
        try:
            return docker_engine.http_status(f"http://127.0.0.1:{slot.port}{self.health_path}", 2.0) == 200
        except OSError:
            return False

    def _start(self, release_id: str, image: str):
        live_port = self.proxy.current_upstream(self.route)
        # one port pick + container start at a time on this host: two releases must never pick the same port
        with open(Path(tempfile.gettempdir()) / "slipway-container-ports.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            slot = docker_engine.run_release_container(
                self.client, app=self.app, env=self.env, release_id=release_id, image=image, port_range=self.container_ports,
                port_env=self.port_env, environment=self.environment, exclude_ports=() if live_port is None else (live_port,),
            )
        try:
            docker_engine.wait_healthy(
                f"http://127.0.0.1:{slot.port}{self.health_path}", timeout_s=self.health_timeout, clock=self.clock, sleep=self.sleep,
            )
        except BaseException:
            docker_engine.remove_container(self.client, slot.container_id)  # nothing of the failed attempt stays
            raise
        return slot

    def _running_slot(self, release_id: str, prefer_port: int | None = None):
        """The release's newest healthy container; the one on ``prefer_port`` (the routed one) if that is healthy."""
        slots = [s for s in reversed(self._slots()) if s.release_id == release_id]
        for slot in sorted(slots, key=lambda s: s.port != prefer_port):  # stable sort: newest first otherwise
            if self._healthy(slot):
                return slot
        return None

    # ---- Target -----------------------------------------------------------------------------------------
    def prepare(self, artifact: ArtifactRef) -> DeployResult:
        if artifact.image is None:
            raise DeployError("a docker-host environment needs a docker-image artifact", ref="wrong-artifact-type")
        previous = self.serving()
        existing = self._running_slot(artifact.release_id)
        slot = existing or self._start(artifact.release_id, artifact.image.pinned)
        return DeployResult(
            environment=self.env, function=slot.name, alias=self.endpoint, version=artifact.release_id,
            previous_version=previous, code_sha256=artifact.image.digest, created_function=False, new_version=existing is None,
        )

    def serving(self) -> str | None:
        """The release behind the stable port; None when unrouted or its upstream is gone. A route changed by hand to a
        container Slipway did not start names that container (``foreign:NAME``), so it never passes for Slipway's own."""
        port = self.proxy.current_upstream(self.route)
        if port is None:
            return None
        ours = next((s.release_id for s in self._slots() if s.port == port), None)
        if ours is not None:
            return ours
        if not _listening(port):
            return None  # the upstream is gone (a container that died): nothing is served
        return f"foreign:{docker_engine.container_on_port(self.client, port) or f'127.0.0.1:{port}'}"

    def point(self, version: str, release=None, *, error_cls=DeployError) -> None:
        slot = self._running_slot(version)
        if slot is None:
            image = getattr(release, "image", None)
            if not image:
                raise error_cls(
                    f"no running container of release {version} and no image recorded to start one",
                    target=self.name, hint="deploy the release again", ref="release-not-runnable",
                )
            slot = self._start(version, image)
        self.proxy.route(self.route, self.listen_port, slot.port)

    def remove(self) -> None:
        self.proxy.unroute(self.route)

    def identity_mismatch(self, version: str, release) -> str | None:
        """None when the container serving ``version`` runs the release's image digest; else what differs."""
        image = getattr(release, "image", None)
        port = self.proxy.current_upstream(self.route)
        slot = next((s for s in self._slots() if s.port == port and s.release_id == version), None)
        if not image or slot is None:
            return None
        if slot.image != image:
            return f"the container serving {version} runs {slot.image}, not the release's {image}"
        return None

    def verify(self, checks: list[dict], expected_version: str) -> VerifyResult:
        serving = self.serving()
        if serving != expected_version:
            return VerifyResult(function=self.endpoint, qualifier="", passed=False, checks=[CheckResult(
                name="routing", passed=False, detail=f"stable port serves release {serving}, expected {expected_version}",
            )])
        return run_http_checks(self.endpoint, checks or [self.default_check()])

    def settle(self, live_version: str) -> None:
        routed = self.proxy.current_upstreams(self.route)  # never pull a container nginx still sends requests to
        for slot in self._slots():
            if slot.release_id != live_version and slot.port not in routed:
                docker_engine.remove_container(self.client, slot.container_id)

    def discard(self, version: str) -> None:
        # Every routed port is kept, not only the stable one: a canary discarded while its split is still in
        # place keeps its container (removing it would turn its share into 502s); point() ends the split first.
        routed = self.proxy.current_upstreams(self.route)
        for slot in self._slots():
            if slot.release_id == version and slot.port not in routed:
                docker_engine.remove_container(self.client, slot.container_id)

    # ---- canary -----------------------------------------------------------------------------------------
    def shift(self, stable_version: str, canary_version: str, canary_percent: int, *, error_cls=DeployError) -> None:
        """Send ``canary_percent`` (1..99) of the stable port's requests to the canary's container, the rest to the
        stable one's. Stable stays the route's primary, so ``serving()`` keeps naming it during the split."""
        if not isinstance(canary_percent, int) or isinstance(canary_percent, bool) or not 1 <= canary_percent <= 99:
            raise error_cls(f"canary share {canary_percent!r}% is not a whole percentage in 1-99", target=self.name,
                            hint="use point() to send 0% or 100% to one release", ref="invalid-traffic-split")
        if stable_version == canary_version:
            raise error_cls(f"stable and canary are the same release {stable_version}", target=self.name,
                            hint="a canary compares two different releases", ref="invalid-traffic-split")
        stable = self._running_slot(stable_version, prefer_port=self.proxy.current_upstream(self.route))
        if stable is None:
            raise error_cls(
                f"stable release {stable_version} has no running healthy container to keep serving "
                f"{100 - canary_percent}% of requests", target=self.name,
                hint="point the environment at a running release (roll back) before starting a canary", ref="stable-not-running",
            )
        canary = self._running_slot(canary_version)
        if canary is None:
            raise error_cls(f"canary release {canary_version} has no running healthy container", target=self.name,
                            hint="prepare the canary release before shifting traffic to it", ref="canary-not-running")
        self.proxy.route_weighted(self.route, self.listen_port, {stable.port: 100 - canary_percent, canary.port: canary_percent},
                                  primary=stable.port)

    def canary_sample(self, stable_version: str, canary_version: str, start: datetime, end: datetime) -> tuple[SideSample, SideSample]:
        """(stable, canary) from the requests the proxy served in ``[start, end)``, attributed by upstream port.

        The split route itself says which port is which: its primary is the stable side, the other upstream the
        canary (container labels could name a stopped container's old port). Without a split (sampled after the
        route went back to one upstream), the running containers' labels are used."""
        ports: dict[str, list[int]] = {stable_version: [], canary_version: []}
        upstreams = self.proxy.current_upstreams(self.route)
        primary = self.proxy.current_upstream(self.route)
        if len(upstreams) > 1 and primary in upstreams:
            ports[stable_version] = [primary]
            ports[canary_version] = [port for port in upstreams if port != primary]
        else:
            for slot in self._slots():
                if slot.release_id in ports and self._healthy(slot):
                    ports[slot.release_id].append(slot.port)
        samples = sample_from_access_log(self.proxy.access_log(self.route), ports, start, end)
        return samples[stable_version], samples[canary_version]

    def drive(self, items: list[dict], rate_per_s: float, duration_s: float, *, max_requests: int = 10_000,
              clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> TrafficResult:
        """Bounded synthetic requests through the stable port (see ``slipway.verify.traffic.drive_http``); the proxy's
        weights decide which side answers each. ``clock``/``sleep`` default to the target's own."""
        return drive_http(self.endpoint, items, rate_per_s=rate_per_s, duration_s=duration_s, max_requests=max_requests,
                          clock=clock or self.clock, sleep=sleep or self.sleep)


def proxy_for(root: str | Path, nginx_binary: str = "nginx") -> NginxProxy:
    return NginxProxy(Path(root).expanduser(), nginx_binary)

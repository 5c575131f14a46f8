"""Docker-host target: run a release's container by digest, health-check it, switch the proxy, roll back.

Every container Slipway starts carries labels (``dev.slipway.app``, ``.env``, ``.release``, ``.port``,
``.managed=true``), so the engine itself is the record of what runs where: ``managed_containers`` rebuilds the
state after a restart without any local file. Containers use host networking and bind 127.0.0.1 on a port
Slipway picks; only the nginx proxy (see ``slipway.targets.nginx``) serves the environment's stable port.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass

import docker.errors

from slipway.core.errors import DeployError, RollbackError
from slipway.targets.nginx import NginxProxy

LABEL = "dev.slipway"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PINNED_RE = re.compile(r"([^@\s]+@)?sha256:[0-9a-f]{64}")  # repo@sha256:... or a local image id
HEALTH_HINT = "check the service binds $PORT on 127.0.0.1 and serves the health path"
# Direct connections only: a proxy from the environment must not sit between Slipway and 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ContainerSlot:
    container_id: str
    name: str
    port: int
    image: str
    release_id: str


def run_release_container(
    client,
    *,
    app: str,
    env: str,
    release_id: str,
    image: str,
    port_range: tuple[int, int],
    port_env: str = "PORT",
    environment: dict[str, str] | None = None,
    command: list[str] | None = None,
    exclude_ports: Collection[int] = (),
) -> ContainerSlot:
    """Start ``image`` detached on a free port of ``port_range``. ``exclude_ports``: also never pick these
    (the proxy's current upstream, in case its container was removed by hand)."""
    _check_inputs(app=app, env=env, release_id=release_id, image=image, port_range=port_range, port_env=port_env)
    port = _pick_port(client, app, env, port_range, set(exclude_ports))
    name = f"slipway-{app}-{env}-{release_id[:12]}-{port}"
    labels = {
        f"{LABEL}.app": app, f"{LABEL}.env": env, f"{LABEL}.release": release_id,
        f"{LABEL}.port": str(port), f"{LABEL}.managed": "true",
    }
    env_vars = {port_env: str(port), "HOST": "127.0.0.1", **(environment or {})}
    try:
        container = client.containers.run(
            image, command=command, name=name, detach=True, network_mode="host", environment=env_vars,
            labels=labels, init=True,  # an init as PID 1 forwards SIGTERM, so stop is quick and zombies are reaped
            restart_policy={"Name": "unless-stopped"},
        )
    except docker.errors.ImageNotFound as exc:
        _remove_by_name(client, name)
        raise DeployError(f"image {image} is not on the engine and could not be pulled", target=f"{app}/{env}",
                          hint="check the registry holds this digest and the docker host can pull from it",
                          ref="image-not-found") from exc
    except docker.errors.APIError as exc:
        _remove_by_name(client, name)  # run = create + start; a failed start leaves the created container
        raise DeployError(f"docker could not start {name}: {exc.explanation or exc}", target=f"{app}/{env}",
                          hint="see the engine's message; check the image's command and the port_env setting",
                          ref="container-start-failed") from exc
    return ContainerSlot(container_id=container.id, name=name, port=port, image=image, release_id=release_id)


def wait_healthy(
    url: str,
    *,
    timeout_s: float,
    interval_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    http_get: Callable[[str, float], int] | None = None,
) -> None:
    """Poll GET ``url`` until it answers 200. ``http_get(url, timeout_s) -> status`` raises OSError when unreachable."""
    get = http_get or http_status
    deadline = clock() + timeout_s
    while True:
        try:
            status = get(url, max(0.5, min(5.0, timeout_s)))
        except OSError as exc:
            last = _describe_error(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        if clock() >= deadline:
            raise DeployError(f"{url} not healthy after {timeout_s:g}s (last: {last})", hint=HEALTH_HINT,
                              ref="health-check-failed", evidence={"url": url, "last": last})
        sleep(interval_s)


def http_status(url: str, timeout_s: float) -> int:
    try:
        with _OPENER.open(url, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise (reason if isinstance(reason, OSError) else OSError(str(reason))) from exc
    except http.client.HTTPException as exc:  # e.g. a reply that is not HTTP at all
        raise OSError(f"bad HTTP reply: {type(exc).__name__}") from exc


def managed_containers(client, app: str, env: str) -> list[ContainerSlot]:
    """Slipway's containers for one environment, running or not, oldest first, rebuilt from engine labels."""
    filters = {"label": [f"{LABEL}.managed=true", f"{LABEL}.app={app}", f"{LABEL}.env={env}"]}
    try:
        containers = client.containers.list(all=True, filters=filters)
    except docker.errors.APIError as exc:
        raise DeployError("could not list containers", target=f"{app}/{env}", hint="check the docker engine is reachable",
                          ref="engine-unavailable") from exc
    slots = []
    for c in sorted(containers, key=lambda c: (c.attrs.get("Created", ""), c.name)):
        labels = c.labels
        slots.append(ContainerSlot(container_id=c.id, name=c.name, port=int(labels[f"{LABEL}.port"]),
                                   image=c.attrs["Config"]["Image"], release_id=labels[f"{LABEL}.release"]))
    return slots


def container_on_port(client, port: int) -> str | None:
    """The name of a running container that publishes ``port`` on the host, if any (one on the host network publishes
    nothing: the caller names the port instead)."""
    try:
        containers = client.containers.list()
    except docker.errors.APIError:
        return None
    for c in containers:
        for bindings in (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            if any(str(b.get("HostPort")) == str(port) for b in (bindings or [])):
                return c.name
    return None


def remove_container(client, container_id: str, *, stop_timeout_s: int = 5) -> None:
    """Stop (SIGTERM, SIGKILL after ``stop_timeout_s``) and remove. A container that is already gone is fine."""
    try:
        container = client.containers.get(container_id)
        container.stop(timeout=stop_timeout_s)
        container.remove(force=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        raise DeployError(f"could not remove container {container_id[:12]}: {exc.explanation or exc}",
                          hint="remove it with docker rm -f", ref="container-remove-failed") from exc


def deploy_blue_green(
    client,
    proxy: NginxProxy,
    *,
    app: str,
    env: str,
    release_id: str,
    image: str,
    port_range: tuple[int, int],
    listen_port: int,
    health_path: str,
    health_timeout_s: float,
    verify: Callable[[str], None],
    environment: dict[str, str] | None = None,
    command: list[str] | None = None,
    port_env: str = "PORT",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ContainerSlot:
    """Run the new container beside the old one, switch the stable port to it, verify through the stable port.

    Verified: the previous containers of ``env`` are removed. Health never passes: the new container is removed and
    the proxy was never touched. Verification fails: the proxy is switched back and the new container removed, then
    the verification error is re-raised (RollbackError if switching back fails; the new container is then kept,
    because it is what the stable port serves).
    """
    lo, hi = port_range
    if not isinstance(listen_port, int) or not 1 <= listen_port <= 65535:
        raise DeployError(f"listen_port {listen_port!r} is not a TCP port", target=f"{app}/{env}",
                          hint="set listen_port in the docker-host block to a port in 1-65535", ref="invalid-ports")
    if lo <= listen_port <= hi:
        raise DeployError(f"listen_port {listen_port} lies inside port_range {lo}-{hi}", target=f"{app}/{env}",
                          hint="choose a stable listen_port outside the container port range", ref="invalid-ports")
    if not health_path.startswith("/"):
        raise DeployError(f"health_path {health_path!r} must start with /", target=f"{app}/{env}",
                          hint="use a path such as /health", ref="invalid-health-path")
    previous = managed_containers(client, app, env)
    live_port = proxy.current_upstream(env)
    slot = run_release_container(
        client, app=app, env=env, release_id=release_id, image=image, port_range=port_range, port_env=port_env,
        environment=environment, command=command, exclude_ports=() if live_port is None else (live_port,),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{slot.port}{health_path}", timeout_s=health_timeout_s, clock=clock, sleep=sleep)
        proxy.route(env, listen_port, slot.port)
    except BaseException:
        _discard(client, slot)
        raise
    try:
        verify(f"http://127.0.0.1:{listen_port}")
    except Exception as exc:
        _switch_back(client, proxy, env, listen_port, live_port, slot, exc)
        raise
    for old in previous:
        remove_container(client, old.container_id)
    return slot


def _switch_back(client, proxy: NginxProxy, env: str, listen_port: int, live_port: int | None,
                 slot: ContainerSlot, cause: Exception) -> None:
    try:
        if live_port is None:
            proxy.unroute(env)  # the first release of env: nothing served the stable port before
        else:
            proxy.route(env, listen_port, live_port)
    except DeployError as exc:
        raise RollbackError(
            f"could not switch {env} back to port {live_port} after verification failed", target=f"127.0.0.1:{listen_port}",
            hint=f"release {slot.release_id} still serves the stable port; fix nginx (see {proxy.error_log}) and deploy again",
            evidence={"verification": str(cause), "switch_back": str(exc)},
        ) from exc
    _discard(client, slot)


def _discard(client, slot: ContainerSlot) -> None:
    """Remove a container that failed; if even that fails, keep the first error: the container keeps its labels,
    so the next verified deploy of this environment removes it with the other previous containers."""
    with contextlib.suppress(DeployError):
        remove_container(client, slot.container_id)


def _check_inputs(*, app: str, env: str, release_id: str, image: str, port_range: tuple[int, int], port_env: str) -> None:
    for label, value in (("app", app), ("env", env)):
        if not NAME_RE.fullmatch(value):
            raise DeployError(f"{label} {value!r} is not a slug", hint="use lowercase letters, digits and dashes (at most 40)",
                              ref="invalid-input")
    if not RELEASE_RE.fullmatch(release_id):
        raise DeployError(f"release id {release_id!r} cannot name a container", target=f"{app}/{env}",
                          hint="use letters, digits, '.', '_' and '-'", ref="invalid-input")
    if not PINNED_RE.fullmatch(image):
        raise DeployError(f"image {image!r} is not pinned by digest", target=f"{app}/{env}",
                          hint="deploy repository@sha256:<digest> (the digest the publish step recorded)", ref="image-not-pinned")
    lo, hi = port_range
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 65535):
        raise DeployError(f"port_range {lo}-{hi} is not a range of TCP ports", target=f"{app}/{env}",
                          hint="set port_range to two ports, low first, within 1-65535", ref="invalid-ports")
    if not ENV_NAME_RE.fullmatch(port_env):
        raise DeployError(f"port_env {port_env!r} is not an environment variable name", target=f"{app}/{env}",
                          hint="use letters, digits and underscores, e.g. PORT", ref="invalid-input")


def _pick_port(client, app: str, env: str, port_range: tuple[int, int], exclude: set[int]) -> int:
    try:
        managed = client.containers.list(all=True, filters={"label": f"{LABEL}.managed=true"})
    except docker.errors.APIError as exc:
        raise DeployError("could not list containers", target=f"{app}/{env}", hint="check the docker engine is reachable",
                          ref="engine-unavailable") from exc
    taken = {int(p) for c in managed if (p := c.labels.get(f"{LABEL}.port", "")).isdigit()} | exclude
    lo, hi = port_range
    busy = 0
    for port in range(lo, hi + 1):
        if port in taken:
            continue
        if port_is_free(port):
            return port
        busy += 1
    raise DeployError(
        f"port range {lo}-{hi} exhausted", target=f"{app}/{env}",
        hint="widen port_range in the docker-host block or remove old containers", ref="port-range-exhausted",
        evidence={"slipway_containers": len(taken & set(range(lo, hi + 1))), "other_processes": busy},
    )


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _remove_by_name(client, name: str) -> None:
    try:
        remove_container(client, client.containers.get(name).id)
    except (docker.errors.NotFound, DeployError):
        pass


def _describe_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"

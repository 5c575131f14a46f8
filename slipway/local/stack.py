"""The embedded local stack: a Prefect server (SQLite, UI) and a local AWS endpoint, in the background.

State lives under ``$SLIPWAY_HOME/local`` (default ``~/.slipway/local``): ``stack.json`` (ports, pids),
the Prefect home and database, the local AWS work directory, and the logs. ``up`` and ``down`` are
idempotent; ``up`` keeps a healthy component running and restarts only what died, on the same port, so
the exported environment stays valid. Everything binds 127.0.0.1.

moto keeps its state in memory: ``down`` (or a crash of the AWS process) forgets artifacts and the ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slipway.core.errors import LocalStackError
from slipway.core.home import slipway_home

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "slipway-local-artifacts"
ROLE_NAME = "slipway-local-lambda"
LOCAL_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # not secrets: moto accepts any


def stack_dir(home: Path | None = None) -> Path:
    return (home or slipway_home()) / "local"


def _state_path(home: Path | None) -> Path:
    return stack_dir(home) / "stack.json"


def _read_state(home: Path | None) -> dict:
    try:
        return json.loads(_state_path(home).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(home: Path | None, state: dict) -> None:
    path = _state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """Can a server listen on ``port`` again? SO_REUSEADDR as the servers themselves set it: connections the stopped
    server left in TIME_WAIT do not make its port look taken (`local down` then `up` keeps the same ports)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status < 500
    except Exception:
        return False


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # Linux, and no such process
    except OSError:
        return None
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + " ") if out.stdout.strip() else None


def _alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and is ours: its command line holds ``marker``, which names the component and
    its port, so a recycled pid or another stack's server is never signalled."""
    if not pid:
        return False
    cmdline = _cmdline(pid)
    return cmdline is not None and marker in cmdline


@dataclass(frozen=True)
class Component:
    name: str
    program: str  # part of the command line that identifies the program
    health_path: str
    command: Callable[[int, Path], list[str]]
    env: Callable[[int, Path], dict[str, str]]
    optional: bool = False  # the stack runs without it (the registry needs a Docker engine)
    prepare: Callable[[int, Path], None] | None = None


def _prefect_command(port: int, home: Path) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]


def _prefect_env(port: int, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(stack_dir(home) / "prefect"),
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://{HOST}:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # the environment locks' leases on disk, under PREFECT_HOME: a restarted server still knows them and expires a
        # dead holder's (in memory, the default, a lock held when the server stopped would never be released)
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def _aws_command(port: int, home: Path) -> list[str]:
    return [sys.executable, "-m", "slipway.local.aws", "--host", HOST, "--port", str(port), "--work-dir", str(stack_dir(home) / "aws")]


def _aws_env(port: int, home: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}


def _registry_config(port: int, home: Path) -> Path:
    return stack_dir(home) / "registry" / f"config-{port}.yml"


def _registry_prepare(port: int, home: Path) -> None:
    """Debian's docker-registry with our own config: loopback only, no auth, deletes allowed."""
    config = _registry_config(port, home)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {stack_dir(home) / 'registry' / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: {HOST}:{port}}}\n"
        "log: {level: warn}\n"
    )


def _registry_command(port: int, home: Path) -> list[str]:
    return [shutil.which("docker-registry") or "docker-registry", "serve", str(_registry_config(port, home))]


COMPONENTS = (
    Component("prefect", "-m prefect server start --host 127.0.0.1 --port", "/api/health", _prefect_command, _prefect_env),
    Component("aws", "-m slipway.local.aws --host 127.0.0.1 --port", "/moto-api/", _aws_command, _aws_env),
    Component("registry", "serve", "/v2/", _registry_command, _aws_env, optional=True, prepare=_registry_prepare),
)


def docker_available() -> str | None:
    """None when a Docker engine answers and docker-registry is installed; otherwise why not (one line)."""
    if not shutil.which("docker-registry"):
        return "docker-registry is not installed (apt-get install docker-registry)"
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        return f"no Docker engine reachable ({type(exc).__name__}): set DOCKER_HOST or start dockerd"
    return None


def _marker(comp: Component, port: int | None, home: Path | None = None) -> str:
    if comp.name == "registry":  # its port is in its config file, whose name holds the port
        return f"serve {_registry_config(port, home or slipway_home())} "
    return f"{comp.program} {port} "


def _url(port: int) -> str:
    return f"http://{HOST}:{port}"


def status(home: Path | None = None) -> dict:
    """What runs, where, and the environment to export. Never starts anything."""
    state = _read_state(home)
    out: dict = {"home": str(stack_dir(home)), "running": True, "components": {}}
    for comp in COMPONENTS:
        info = state.get(comp.name, {})
        port, pid = info.get("port"), info.get("pid")
        if comp.optional and not port:
            continue
        healthy = bool(port) and _alive(pid, _marker(comp, port, home)) and _http_ok(_url(port) + comp.health_path)
        out["components"][comp.name] = {"url": _url(port) if port else None, "pid": pid, "healthy": healthy}
        if not comp.optional:
            out["running"] = out["running"] and healthy
    registry_port = state.get("registry", {}).get("port")
    out["registry"] = f"{HOST}:{registry_port}" if registry_port and out["components"].get("registry", {}).get("healthy") else None
    out["docker"] = state.get("docker")
    out["proxy_root"] = str(stack_dir(home) / "proxy")
    prefect_port = state.get("prefect", {}).get("port")
    aws_port = state.get("aws", {}).get("port")
    out["env"] = export_env(prefect_port, aws_port) if prefect_port and aws_port else {}
    out["ui_url"] = _url(prefect_port) if prefect_port else None
    out["bucket"] = state.get("bucket")
    out["role_arn"] = state.get("role_arn")
    return out


def export_env(prefect_port: int, aws_port: int) -> dict[str, str]:
    return {
        "PREFECT_API_URL": f"{_url(prefect_port)}/api",
        "AWS_ENDPOINT_URL": _url(aws_port),
        "AWS_DEFAULT_REGION": REGION,
        **LOCAL_KEYS,
    }


def _start(comp: Component, port: int, home: Path) -> int:
    logs = stack_dir(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if comp.prepare:
        comp.prepare(port, home)
    with open(logs / f"{comp.name}.log", "ab") as log:
        proc = subprocess.Popen(
            comp.command(port, home), env=comp.env(port, home), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(stack_dir(home)),
        )
    return proc.pid


def _wait_healthy(comp: Component, port: int, pid: int, home: Path, timeout: float, sleep: Callable[[float], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http_ok(_url(port) + comp.health_path, timeout=1.0):
            return
        if not _alive(pid, _marker(comp, port, home)):
            tail = (stack_dir(home) / "logs" / f"{comp.name}.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise LocalStackError(
                f"the local {comp.name} server exited while starting",
                hint=f"see {stack_dir(home) / 'logs' / (comp.name + '.log')}: {' | '.join(tail)[-300:]}",
            )
        sleep(0.25)
    raise LocalStackError(f"the local {comp.name} server did not become healthy in {timeout:.0f}s", hint=f"see {stack_dir(home) / 'logs'}")


@contextlib.contextmanager
def _locked(home: Path):
    """One ``up``/``down`` at a time per state directory (two concurrent ``up`` would orphan servers)."""
    path = stack_dir(home) / "stack.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def require_local_extra() -> None:
    """The local AWS endpoint is moto's server, an optional dependency: a worker for real AWS does without it."""
    import importlib.util

    missing = [name for name in ("moto", "werkzeug") if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalStackError(
            f"the embedded local stack needs {', '.join(missing)}, which this installation does not have",
            hint="install Slipway with its local extra: pip install 'slipway[local]' (make demo and make test do)",
            ref="local-stack-failed",
        )


def up(home: Path | None = None, *, timeout: float = 120, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Start what is not running (idempotent), bootstrap the local AWS resources, return ``status()``."""
    require_local_extra()
    home = home or slipway_home()
    with _locked(home):
        return _up(home, timeout, sleep)


def _up(home: Path, timeout: float, sleep: Callable[[float], None]) -> dict:
    state = _read_state(home)
    started: list[tuple[Component, int, int]] = []
    docker_problem = docker_available()
    state["docker"] = docker_problem or "ok"
    for comp in COMPONENTS:
        if comp.optional and docker_problem:
            continue
        info = state.get(comp.name, {})
        port, pid = info.get("port"), info.get("pid")
        if port and _alive(pid, _marker(comp, port, home)) and _http_ok(_url(port) + comp.health_path):
            continue
        if pid and _alive(pid, _marker(comp, port, home)):
            _stop_pid(pid, _marker(comp, port, home))
        if not port or not _port_free(port):
            port = free_port()
        pid = _start(comp, port, home)
        state[comp.name] = {"port": port, "pid": pid}
        _write_state(home, state)
        started.append((comp, port, pid))
    for comp, port, pid in started:  # start both, then wait: the waits overlap
        _wait_healthy(comp, port, pid, home, timeout, sleep)
    aws = bootstrap_aws(_url(state["aws"]["port"]))
    state.update(aws)
    _write_state(home, state)
    result = status(home)
    result["started"] = [c.name for c, _, _ in started] + _restart_proxy(home)
    return result


def _restart_proxy(home: Path) -> list[str]:
    """The nginx of local docker-host releases, back with the routes it had (`down` stopped it; the containers behind
    it kept running). Best effort: the next docker-host release starts it anyway."""
    proxy_root = stack_dir(home) / "proxy"
    if not any((proxy_root / "conf.d").glob("*.conf")):
        return []
    from slipway.targets.nginx import NginxProxy

    proxy = NginxProxy(proxy_root)
    if proxy.master_pid():
        return []
    try:
        proxy.ensure_running()
    except Exception:  # noqa: BLE001 - no nginx here any more: the endpoints stay down until a release routes them
        return []
    return ["proxy"]


def bootstrap_aws(endpoint: str) -> dict:
    """Create the artifact bucket (versioned) and the Lambda execution role. Idempotent."""
    import boto3
    from botocore.exceptions import ClientError

    session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = session.client("s3", endpoint_url=endpoint)
    iam = session.client("iam", endpoint_url=endpoint)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    try:
        role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        role = iam.get_role(RoleName=ROLE_NAME)["Role"]
    return {"bucket": BUCKET, "role_arn": role["Arn"], "region": REGION}


def _stop_pid(pid: int, marker: str, timeout: float = 15) -> None:
    if not _alive(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, marker):
        try:
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid, marker):
        os.killpg(pid, signal.SIGKILL)


def down(home: Path | None = None, *, reset: bool = False) -> dict:
    """Stop what ``up`` started (by pid, only if it is still ours). Idempotent. The state stays for the next ``up``
    (the Prefect database, and the local AWS endpoint's journal of changes); ``reset`` removes both, so the next
    ``up`` starts empty (ports are kept)."""
    home = home or slipway_home()
    with _locked(home):
        result = _down(home)
        if reset:
            for kept in (stack_dir(home) / "aws" / "journal", stack_dir(home) / "prefect"):
                shutil.rmtree(kept, ignore_errors=True)
            result["reset"] = True
        return result


def _down(home: Path) -> dict:
    state = _read_state(home)
    stopped = []
    for comp in COMPONENTS:
        pid, port = state.get(comp.name, {}).get("pid"), state.get(comp.name, {}).get("port")
        if pid and _alive(pid, _marker(comp, port, home)):
            _stop_pid(pid, _marker(comp, port, home))
            stopped.append(comp.name)
        state.get(comp.name, {}).pop("pid", None)
    proxy_root = stack_dir(home) / "proxy"
    if (proxy_root / "nginx.pid").exists():  # the nginx that docker-host releases started for this stack
        from slipway.targets.nginx import NginxProxy

        if NginxProxy(proxy_root).master_pid():
            NginxProxy(proxy_root).stop()
            stopped.append("proxy")
    if state:
        _write_state(home, state)
    return {"stopped": stopped, "home": str(stack_dir(home))}

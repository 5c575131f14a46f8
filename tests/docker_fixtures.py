"""Fixtures for tests that need a Docker engine, a local OCI registry or nginx.

Each skips with a reason where the thing is not there (no engine, package not installed); CI installs and
starts them. Nothing is pulled: the base image is made from the host's static busybox (busybox-static).
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

BUSYBOX_IMAGE = "slipway-test/busybox:latest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine here
        pytest.skip(f"no Docker engine reachable ({type(exc).__name__}); CI starts one (.ci/run)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    """A tiny image with busybox (sh, httpd, wget), built FROM scratch from the host's static binary."""
    busybox = shutil.which("busybox")
    if not busybox or "static" not in subprocess.run(["file", "-L", busybox], capture_output=True, text=True).stdout.lower():
        candidates = [p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).exists()]
        if not candidates:
            pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
        busybox = candidates[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        dockerfile = b"FROM scratch\nCOPY bin/busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=BUSYBOX_IMAGE, rm=True)
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory) -> str:
    """A real OCI registry (Debian's docker-registry) on 127.0.0.1; yields 'host:port'."""
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        "log: {level: error}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("docker-registry did not start")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not binary:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return binary

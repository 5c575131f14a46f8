"""A team's Prefect server with authentication on (`PREFECT_SERVER_API_AUTH_STRING`): the `slipway` command releases
and reads history with the credentials (`PREFECT_API_AUTH_STRING`), and without them is refused in one line, touching
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from own_server import OwnServer


@pytest.fixture
def authed_server(tmp_path):
    secret = f"admin:{uuid.uuid4().hex}"
    server = OwnServer(tmp_path / "server-home", env={"PREFECT_SERVER_API_AUTH_STRING": secret})
    server.start()
    try:
        yield server, secret
    finally:
        server.kill()


def _slipway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    from conftest import ROOT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([sys.executable, "-m", "slipway.cli", *args], cwd=ROOT, env={**clean, **env}, text=True,
                          capture_output=True, timeout=300)


def test_slipway_works_against_a_prefect_server_with_authentication(prefect_api, app_repo, authed_server):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deployments.local_blocks import save_local_blocks

    server, secret = authed_server
    with temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_API_AUTH_STRING: secret}):
        save_local_blocks(prefect_api["env"]["AWS_ENDPOINT_URL"], prefect_api["bucket"], prefect_api["role_arn"])
    repo = app_repo()
    env = {"PREFECT_API_URL": server.url, "AWS_ENDPOINT_URL": prefect_api["env"]["AWS_ENDPOINT_URL"]}

    refused = _slipway("release", repo.url, "--ref", "v1", "--only", "dev", env=env)  # no credentials

    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines == [f"error: the Prefect API at {server.url} refused the request (401): set PREFECT_API_AUTH_STRING=user:password "
                     "for a server with authentication (PREFECT_API_KEY for Prefect Cloud)"], refused.stderr

    released = _slipway("release", repo.url, "--ref", "v1", "--only", "dev", env={**env, "PREFECT_API_AUTH_STRING": secret})
    assert released.returncode == 0, released.stderr[-2000:]
    history = _slipway("history", repo.app, "--env", "dev", env={**env, "PREFECT_API_AUTH_STRING": secret})
    assert history.returncode == 0 and "verified" in history.stdout

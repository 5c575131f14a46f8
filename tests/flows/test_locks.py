"""One release at a time per app and environment (a Prefect global concurrency limit, created on demand and
acquired strictly): a second release is refused or waits, never interleaves."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest



def ledger_kinds(app: str, env: str) -> list[str]:
    from tasks.wiring import open_store

    return [e.kind for e in open_store("default")[1].entries(app, env)]


def test_the_lock_is_created_on_demand_and_a_release_is_refused_while_another_run_holds_it(prefect_api, app_repo):
    from prefect import get_client

    from flows.release import release
    from tasks.locks import environment_lock, lock_name

    repo = app_repo()
    with environment_lock(repo.app, "dev", wait_seconds=5):
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(lock_name(repo.app, "dev")).limit == 1
        state = release(repo_url=repo.url, ref="v1", only=["dev"], lock_wait=0, return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert f"another release or rollback of {repo.app}/dev is running" in str(err)
    assert "dev unchanged" in str(err)
    assert ledger_kinds(repo.app, "dev") == []  # nothing was touched


def test_a_second_release_waits_for_the_first_and_never_interleaves(prefect_api, app_repo):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from tasks.locks import environment_lock

    repo = app_repo()
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    with environment_lock(repo.app, "dev", wait_seconds=5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipway.cli", "release", repo.url, "--ref", "v1", "--only", "dev", "--lock-wait", "120"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # wait (bounded, polling) until the release's deploy subflow is running, i.e. waiting for the lock
        deadline, waiting = time.monotonic() + 90, False
        while time.monotonic() < deadline and proc.poll() is None:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"deploy {repo.app}/dev"])))
            if runs and runs[0].state and runs[0].state.is_running():
                waiting = True
                break
            time.sleep(0.2)  # polling interval, not a wait for an outcome
        assert waiting, proc.communicate(timeout=5)
        assert ledger_kinds(repo.app, "dev") == []  # it waits: nothing recorded while we hold the lock
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    assert ledger_kinds(repo.app, "dev") == ["deploy-started", "deployed", "verified"]


HOLDER = """
import pathlib, sys, threading
from prefect import flow
from prefect.runtime import flow_run
from tasks.locks import environment_lock

@flow(name="lock holder")
def hold(app, marker):
    with environment_lock(app, "dev", 5):
        pathlib.Path(marker).write_text(flow_run.get_id())
        threading.Event().wait(600)  # killed here, holding the lock

hold(sys.argv[1], sys.argv[2])
"""


def test_a_lock_left_by_a_killed_run_is_given_back_as_soon_as_the_run_is_marked_crashed(prefect_api, app_repo, tmp_path):
    """SIGKILL: the lease stays until it expires, unless the run is known to have ended (the worker marks it Crashed)."""
    import signal

    from prefect import get_client
    from prefect.states import Crashed

    from conftest import ROOT
    from slipway.core.errors import DeployError
    from tasks.locks import environment_lock

    repo = app_repo()
    marker = tmp_path / "holding"
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, repo.app, str(marker)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, pause = time.monotonic() + 90, threading.Event()
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        pause.wait(0.1)  # polling the holder's marker, bounded
    assert marker.exists(), "the holder never took the lock"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    # the killed run is still Running as far as Prefect knows: its lease decides, the lock is refused
    with pytest.raises(DeployError, match="another release or rollback"):
        with environment_lock(repo.app, "dev", 0):
            pass
    # what a worker does when its flow-run process dies; then the lock is given back at once
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(marker.read_text(), Crashed(message="the process was killed"), force=True)
    started = time.monotonic()
    with environment_lock(repo.app, "dev", 0):
        took = time.monotonic() - started
    assert took < 10, f"the lock came back after {took:.1f}s: it waited for the lease instead"

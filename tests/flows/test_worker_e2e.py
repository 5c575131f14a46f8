"""Slipway operated the Prefect way: prefect.yaml deployed to the session's server, a real `prefect worker`
executing `prefect deployment run`, and the rollback deployment's trigger recovering an environment whose
release process was SIGKILLed mid-canary (the in-process hooks never ran)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
PREFECT = [str(Path(sys.executable).parent / "prefect")]


@pytest.fixture(scope="module")
def worker(prefect_api, tmp_path_factory):
    """Deploy prefect.yaml (pool, blocks, deployments with the rollback trigger) and run one worker."""
    from deployments.deploy import deploy_all

    # PREFECT_CLIENT_MAX_RETRIES as `make worker` sets it for the embedded SQLite server (docs/scale.md): under the
    # load test's 20 releases a worker's submission once got 503 six times in a row and crashed the run
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"], "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_CLIENT_MAX_RETRIES": "10"}
    out = deploy_all(env)
    assert "release/release" in out and "rollback/rollback" in out and "promote/promote" in out and "verify/verify" in out and "diagnose/diagnose" in out
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    elsewhere = tmp_path_factory.mktemp("worker-cwd")  # as on another machine: the deployments say where the code is
    with open(log, "w") as fh:
        proc = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "slipway"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=elsewhere, start_new_session=True)
    yield {"env": env, "log": log}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(3)  # every run it started has ended; a worker that lingers (it often does, ~20 s) is killed
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    _delete_automations()


def _delete_automations() -> None:
    """Later tests in the session fail releases on purpose: no trigger should act on them once the worker is gone."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            client.delete_automation(automation.id)


def prefect_cli(worker, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*PREFECT, *args], env=worker["env"], cwd=ROOT, text=True, capture_output=True, timeout=timeout)


def ledger_entries(app: str, env: str):
    from tasks.wiring import open_store

    return open_store("default")[1].entries(app, env)


def flow_run_process(run_id: str) -> int:
    """The process the worker started for this flow run (its environment names the run)."""
    for pid in subprocess.run(["pgrep", "-f", "prefect.engine"], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no process runs flow run {run_id}")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)  # polling interval for work another process does, not a wait for an outcome
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_prefect_deployment_run_executes_a_release_on_the_worker(worker, app_repo):
    repo = app_repo()
    started = time.monotonic()
    done = prefect_cli(worker, "deployment", "run", "release/release", "-p", f"repo_url={repo.url}", "-p", "ref=v1",
                       "-p", 'only=["dev"]', "--watch", "--watch-timeout", "200")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Completed" in done.stdout
    assert [e.kind for e in ledger_entries(repo.app, "dev")] == ["deploy-started", "deployed", "verified"]
    print(f"release through the worker: {time.monotonic() - started:.1f}s")


def test_the_watch_deployment_releases_a_pushed_commit_once_on_the_worker(worker, app_repo):
    """Release on push: the watch deployment finds the branch's new head and starts one release/release run for it."""
    import json

    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:\n  - name: dev\n").commit("dev only")
    repos = json.dumps([{"repo_url": repo.url, "branch": "main"}])
    done = prefect_cli(worker, "deployment", "run", "watch/watch", "-p", f"repos={repos}", "--watch", "--watch-timeout", "120")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    from conftest import git

    entries = wait_for(lambda: [e for e in ledger_entries(repo.app, "dev") if e.kind == "verified"], 240, "the release the watch started")
    assert entries[0].commit == git(repo.path, "rev-parse", "HEAD")
    again = prefect_cli(worker, "deployment", "run", "watch/watch", "-p", f"repos={repos}", "--watch", "--watch-timeout", "120")
    assert again.returncode == 0
    assert len(_release_runs_of(repo.url)) == 1  # nothing pushed since: the second check started nothing


def test_a_signed_push_webhook_releases_the_pushed_commit_through_the_release_trigger(worker, app_repo):
    """`slipway webhook`'s receiver in this process: a verified push becomes the slipway.push event, and the release
    deployment's trigger releases that commit on the worker."""
    import hashlib
    import hmac
    import json
    import urllib.request
    import uuid

    from conftest import git
    from deployments.webhook import serve

    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    head = repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:\n  - name: dev\n").commit("dev only")
    secret = b"webhook-secret-for-the-e2e-test"
    server = serve("127.0.0.1", 0, secret)
    try:
        body = json.dumps({"ref": "refs/heads/main", "after": head, "repository": {"clone_url": repo.url}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/hooks/push", data=body, method="POST",
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
                     "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 202
    finally:
        server.shutdown()
        server.server_close()

    verified = wait_for(lambda: [e for e in ledger_entries(repo.app, "dev") if e.kind == "verified"], 240, "the pushed release")
    assert verified[0].commit == head == git(repo.path, "rev-parse", "HEAD")


def _release_runs_of(repo_url: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["release"])), limit=200)
    return [r for r in runs if (r.parameters or {}).get("repo_url") == repo_url]


CANARY_DEV = """
  - name: dev
    strategy: {canary: {steps: [50, 100], bake: 120s}}
    traffic: {rate: 5/s, events: [{}]}
    analysis: {min_requests: 10}
"""


def test_a_release_killed_mid_canary_is_rolled_back_by_the_trigger(worker, app_repo):
    """SIGKILL leaves the release run to the worker (marked Crashed) and the subflow Running forever: only the
    ledger and the rollback deployment's trigger can put dev back on its verified release."""
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:" + CANARY_DEV).commit("dev by canary", tag="k1")
    assert prefect_cli(worker, "deployment", "run", "release/release", "-p", f"repo_url={repo.url}", "-p", "ref=k1",
                       "--watch", "--watch-timeout", "200").returncode == 0
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="k2")
    started = prefect_cli(worker, "deployment", "run", "release/release", "-p", f"repo_url={repo.url}", "-p", "ref=k2")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    wait_for(lambda: any(e.kind == "traffic-shifted" for e in ledger_entries(repo.app, "dev")), 120, "the canary to start")

    pid = flow_run_process(run_id)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    # the worker marks the run Crashed; the triggered rollback gives the dead run's lock back instead of waiting for
    # its lease (LEASE_SECONDS) to run out
    wait_for(lambda: ledger_entries(repo.app, "dev")[-1].kind == "rolled-back", 240, "the triggered rollback")
    back_after = time.monotonic() - killed_at
    entries = ledger_entries(repo.app, "dev")
    assert [e.kind for e in entries][-4:] == ["deploy-started", "traffic-shifted", "rollback-started", "rolled-back"]
    assert "prefect.flow-run.Crashed" in entries[-1].message
    from tasks.wiring import open_store

    head = open_store("default")[1].head(repo.app, "dev")
    assert head.live.version == "1" and head.canary is None and head.in_progress is None
    print(f"SIGKILL → dev back on its verified release: {back_after:.1f}s")
    from tasks.locks import LEASE_SECONDS

    assert back_after < LEASE_SECONDS, f"back after {back_after:.1f}s: the rollback waited out the dead run's lease"


def test_a_failed_release_leaves_one_rollback_run_and_the_trigger_acts_only_when_asked(worker, app_repo):
    """The in-process hook rolls the failed stage back: one rollback run, named after what it rolls back, and nothing
    from the rollback deployment. The trigger acts on ``slipway.rollback.needed`` (what a hook whose rollback failed
    emits): that run finds nothing in progress and does nothing, no nested runs, no double rollback."""
    from datetime import datetime, timezone

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterStartTime

    from flows.events import emit

    repo = app_repo()
    assert prefect_cli(worker, "deployment", "run", "release/release", "-p", f"repo_url={repo.url}", "-p", "ref=v1",
                       "-p", 'only=["dev"]', "--watch", "--watch-timeout", "200").returncode == 0
    repo.break_health_check().commit("v2", tag="v2")
    since = datetime.now(timezone.utc)
    failed = prefect_cli(worker, "deployment", "run", "release/release", "-p", f"repo_url={repo.url}", "-p", "ref=v2",
                         "-p", 'only=["dev"]', "--watch", "--watch-timeout", "200")
    assert failed.returncode != 0 and "Failed" in failed.stdout
    deploy_run = next(e.run_id for e in reversed(ledger_entries(repo.app, "dev")) if e.kind == "deploy-started")
    emit("slipway.rollback.needed", repo.app, "dev", failed_run_id=deploy_run, reason="test", error="test")

    def rollback_runs():
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since), name=FlowRunFilterName(like_="rollback")))

    def the_triggered_run_finished():
        runs = [r for r in rollback_runs() if r.deployment_id]
        return runs if runs and all(r.state and r.state.is_final() for r in runs) else None

    triggered = wait_for(the_triggered_run_finished, 120, "the rollback run slipway.rollback.needed triggers")
    assert [r.name for r in triggered] == [f"rollback {repo.app}/dev"], "the failed runs themselves triggered rollbacks"
    assert triggered[0].state.is_completed(), triggered[0].state.message
    in_process = [r for r in rollback_runs() if not r.deployment_id]
    assert [r.name for r in in_process] == [f"rollback {repo.app}/dev"]  # the hook's: the only one that did anything
    kinds = [e.kind for e in ledger_entries(repo.app, "dev")]
    assert kinds.count("rolled-back") == 1 and kinds[-1] == "rolled-back"  # the hook's; the trigger's found nothing to do

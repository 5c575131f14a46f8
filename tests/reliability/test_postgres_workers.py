"""Slipway as a team runs it: one Prefect server on PostgreSQL (Debian's package, a private cluster on a free port),
the deployments of prefect.yaml, and two process workers started in separate working directories (as two machines
would be). Twenty apps are released at once through `release/release` deployment runs, and two releases of one app's
environment land on the two workers: every run completes, each app's ledger holds exactly one verified release, the
environment lock holds across workers (the two releases never interleave in the ledger), and both workers ran
releases. Marked ``load``; prints the wall time."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from own_server import OwnServer

PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15 (Debian's postgresql) is not installed")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A private PostgreSQL cluster (trust auth, 127.0.0.1, a free port), run as the postgres user as Debian does."""
    from slipway.local.stack import free_port

    root = Path(tempfile.mkdtemp(prefix="slipway-postgres-"))  # not under pytest's 0700 directory: postgres must reach it
    shutil.chown(root, "postgres")
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(root / "data"), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-w",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect"], check=True)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres, prefect_api, tmp_path_factory):
    """The Prefect server on PostgreSQL, the local AWS blocks saved there, prefect.yaml deployed, two workers."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import deploy_all
    from deployments.local_blocks import save_local_blocks

    server = OwnServer(tmp_path_factory.mktemp("team-server"), env={"PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres})
    server.start()
    workers = []
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            save_local_blocks(prefect_api["env"]["AWS_ENDPOINT_URL"], prefect_api["bucket"], prefect_api["role_arn"], health_timeout=5)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "PREFECT_API_URL": server.url,
               "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO",
               "AWS_ENDPOINT_URL": prefect_api["env"]["AWS_ENDPOINT_URL"], "SLIPWAY_POOL_LIMIT": "10"}
        deploy_all(env)
        prefect = [str(Path(sys.executable).parent / "prefect")]
        for name in ("machine-a", "machine-b"):
            cwd = tmp_path_factory.mktemp(name)
            log = open(cwd / "worker.log", "w")
            workers.append((subprocess.Popen([*prefect, "worker", "start", "--pool", "slipway", "--name", name], env=env, cwd=cwd,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True), cwd / "worker.log"))
        yield {"server": server, "env": env, "workers": workers}
    finally:
        for proc, _ in workers:
            with_timeout_kill(proc)
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            _delete_automations()
        server.kill()


def with_timeout_kill(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _delete_automations() -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            client.delete_automation(automation.id)


async def _release_all(params: list[dict], timeout: float) -> list:
    from prefect import get_client
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("release/release")
        created = [await client.create_flow_run_from_deployment(deployment.id, parameters=p) for p in params]

        async def finish(run_id):
            try:
                return await wait_for_flow_run(run_id, timeout=timeout, client=client)
            except FlowRunWaitTimeout:
                return await client.read_flow_run(run_id)

        return await asyncio.gather(*(finish(run.id) for run in created))


def _without_tests(repo, tag: str):
    spec = (repo.path / "slipway.yaml").read_text().replace('test:\n  command: ["python", "-m", "pytest", "-q"]\n', "")
    repo.write("slipway.yaml", spec).commit("no tests", tag=tag)
    return repo


@pytest.mark.load
@pytest.mark.timeout(1200)
def test_twenty_apps_and_one_contended_environment_on_postgresql_with_two_workers(team_server, app_repo):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.wiring import open_store

    repos = [_without_tests(app_repo(f"pg-{i:02d}"), "load") for i in range(20)]
    shared = _without_tests(app_repo("pg-shared"), "load")
    params = [{"repo_url": r.url, "ref": "load", "only": ["dev"]} for r in repos]
    params += [{"repo_url": shared.url, "ref": "load", "only": ["dev"]}] * 2  # one environment, two workers

    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: team_server["server"].url}):
        finished = asyncio.run(_release_all(params, timeout=900))
        ledger = open_store("default")[1]
    wall = time.monotonic() - started

    stuck = [(run.name, run.state.name if run.state else None, (run.state.message or "")[:200] if run.state else "")
             for run in finished if not (run.state and run.state.is_completed())]
    assert not stuck, f"{len(stuck)} of {len(finished)} releases did not complete on PostgreSQL: {stuck}"
    for repo in repos:
        kinds = [e.kind for e in ledger.entries(repo.app, "dev")]
        assert kinds == ["deploy-started", "deployed", "verified"], (repo.app, kinds)
    entries = ledger.entries(shared.app, "dev")
    blocks = [run for i, run in enumerate(e.run_id for e in entries) if i == 0 or entries[i - 1].run_id != run]
    # the same commit twice, one run after the other under the lock (each run's entries contiguous), each verified
    assert len(blocks) == 2 == len(set(blocks)), [(e.kind, e.run_id) for e in entries]
    assert [e.kind for e in entries if e.kind == "verified"] == ["verified", "verified"] and entries[-1].kind == "verified"
    submitted = {log.parent.name: log.read_text().count("submitting flow run") for _, log in team_server["workers"]}
    assert all(submitted.values()), f"a worker ran nothing: {submitted}"
    print(f"\nPostgreSQL, 2 workers: 22 releases (20 apps + 2 of one environment) in {wall:.0f} s wall; runs per worker {submitted}")

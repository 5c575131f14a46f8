"""A newer release is never replaced by an older one: a release whose commit is an ancestor of the live verified
commit, or of a release of the same app waiting for the same environment, ends that stage superseded (ledger entry,
summary, exit 4) and touches nothing; only the newest of several queued releases deploys; `--allow-older` is the
deliberate downgrade."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def lam(prefect_api):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def _new_commit(repo, n: int) -> str:
    repo.write("src/app.py", (repo.path / "src" / "app.py").read_text() + f"\n# v{n}\n")
    return repo.commit(f"v{n}", tag=f"v{n}")


def test_an_older_commit_released_after_a_newer_one_is_superseded_and_touches_nothing(prefect_api, app_repo, lam):
    from flows.release import release
    from test_cli import slipway
    from tasks.wiring import open_store

    repo = app_repo()
    _new_commit(repo, 2)
    assert release(repo_url=repo.url, ref="v2", only=["dev"], return_state=True).is_completed()
    ledger = open_store("default")[1]
    live = ledger.head(repo.app, "dev").live
    alias = lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")["FunctionVersion"]

    state = release(repo_url=repo.url, ref="v1", return_state=True)

    assert state.is_completed()
    outcomes = {o["environment"]: o for o in state.result()["outcomes"]}
    assert outcomes["dev"]["status"] == "superseded" and f"already runs {live.release_id}" in outcomes["dev"]["message"]
    assert outcomes["staging"]["status"] == "not-reached" and "superseded in dev" in outcomes["staging"]["message"]
    assert lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")["FunctionVersion"] == alias  # nothing touched
    head = ledger.head(repo.app, "dev")
    assert head.live == live and head.in_progress is None
    assert ledger.entries(repo.app, "dev")[-1].kind == "superseded"

    cli = slipway("release", repo.url, "--ref", "v1", "--only", "dev", env={"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]})
    assert cli.returncode == 4 and "superseded: dev already runs" in cli.stderr and "--allow-older" in cli.stderr

    downgrade = release(repo_url=repo.url, ref="v1", only=["dev"], allow_older=True, return_state=True)
    assert downgrade.is_completed() and ledger.head(repo.app, "dev").live.commit != live.commit  # deliberate: deployed


def _running_deploys(app: str) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"deploy {app}/dev"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))), limit=10))


def test_of_three_releases_queued_for_one_environment_only_the_newest_deploys(prefect_api, app_repo, lam):
    """The environment's lock is held while three releases (v1, v2, v3) line up behind it; when it is free, v1 and v2
    find a newer release waiting (or live) and end superseded: v3 is the only one deployed."""
    from conftest import ROOT
    from tasks.locks import environment_lock
    from tasks.wiring import open_store

    repo = app_repo()
    commits = {1: None, 2: _new_commit(repo, 2), 3: _new_commit(repo, 3)}
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    procs = []
    with environment_lock(repo.app, "dev", 60):
        for n in (1, 2, 3):
            code = f"from flows.release import release; release(repo_url={repo.url!r}, ref='v{n}', only=['dev'])"
            procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while _running_deploys(repo.app) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)  # waiting for three processes to reach the lock, not for a timing
        assert _running_deploys(repo.app) == 3, "the three releases never lined up behind the lock"
    for proc in procs:
        assert proc.wait(timeout=180) == 0

    ledger = open_store("default")[1]
    entries = ledger.entries(repo.app, "dev")
    deployed = [e.commit for e in entries if e.kind == "deploy-started"]
    superseded = sorted(e.commit for e in entries if e.kind == "superseded")
    assert deployed == [commits[3]], [(e.kind, e.commit[:8] if e.commit else None) for e in entries]
    assert len(superseded) == 2 and commits[2] in superseded
    assert ledger.head(repo.app, "dev").live.commit == commits[3]

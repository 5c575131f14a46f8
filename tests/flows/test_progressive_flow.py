"""Canary releases and approval gates end to end: the release flow on the session's local stack (real Prefect
server, local AWS running each version's code), synthetic traffic, CloudWatch metrics, the verdict, the
rollback hook, the ledger and the UI artifacts."""

from __future__ import annotations

from conftest import EXAMPLE
from paused_release import start_release, wait_until_paused


CANARY_ENV = """
  - name: prod
    strategy:
      canary: {steps: [50, 100], bake: 6s}
    traffic:
      rate: 25/s
      events: [{"queryStringParameters": {"name": "ada"}}, {"queryStringParameters": {"name": "grace"}}]
    analysis: {min_requests: 20, min_latency_periods: 3, max_latency_increase: 3, inconclusive: fail}
"""


def canary_repo(app_repo):
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    spec = spec[: spec.index("environments:")] + "environments:" + CANARY_ENV
    repo.write("slipway.yaml", spec).commit("prod releases by canary", tag="c1")
    return repo


def lam_client(prefect_api):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def alias(lam, name: str) -> tuple[str, dict]:
    a = lam.get_alias(FunctionName=name, Name="live")
    return a["FunctionVersion"], (a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def ledger_entries(app: str, env: str):
    from tasks.wiring import open_store

    return open_store("default")[1].entries(app, env)


def latest_artifact(key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_a_clean_canary_is_promoted_and_a_30_percent_error_canary_is_rolled_back_with_its_verdict(prefect_api, app_repo):
    from flows.release import release
    from slipway.core.errors import ReleaseFailed

    lam = lam_client(prefect_api)
    repo = canary_repo(app_repo)
    fn = f"{repo.app}-prod"
    assert release(repo_url=repo.url, ref="c1", return_state=True).is_completed()  # first release: nothing to compare, all-at-once
    assert alias(lam, fn) == ("1", {})

    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="c2")
    state = release(repo_url=repo.url, ref="c2", return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    assert alias(lam, fn) == ("2", {})
    kinds = [e.kind for e in ledger_entries(repo.app, "prod")]
    assert kinds[-5:] == ["deploy-started", "traffic-shifted", "canary-verdict", "deployed", "verified"]
    verdict = ledger_entries(repo.app, "prod")[-3]
    assert verdict.detail["verdict"] == "PASS" and verdict.detail["percent"] == 50

    repo.write("src/app.py", (EXAMPLE / "demo" / "app_v3_flaky.py").read_text()).commit("v3: flaky dependency", tag="c3")
    state = release(repo_url=repo.url, ref="c3", return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, ReleaseFailed)
    assert " failed at canary: canary of " in err.message and "judged FAIL: failed on error_rate" in err.message
    assert "prod rolled back to" in err.message
    assert alias(lam, fn) == ("2", {})  # 100% back on the stable version, routing cleared
    entries = ledger_entries(repo.app, "prod")
    fail = next(e for e in reversed(entries) if e.kind == "canary-verdict")
    assert fail.detail["verdict"] == "FAIL"
    error_rate = next(m for m in fail.detail["metrics"] if m["metric"] == "error_rate")
    assert error_rate["canary"]["error_rate"] > 0.1 and error_rate["stable"]["errors"] == 0 and error_rate["p_value"] < 0.05
    assert entries[-1].kind == "rolled-back" and entries[-1].detail["cause"]["verdict"] == "FAIL"
    assert "error_rate" in entries[-1].detail["cause"]["reason"]
    canary_md = latest_artifact(f"canary-{repo.app}-prod")
    assert "Canary verdict: **FAIL**" in canary_md and "| error_rate | **FAIL** |" in canary_md
    report = latest_artifact(f"release-{repo.app}")
    assert "## Canary verdicts" in report and "- **prod**: FAIL at 50%" in report
    assert "[this run in the Prefect UI](http://127.0.0.1:" in report


# ---- approval gates (the release runs in a subprocess, answered from here as `slipway approve` would) ------
APPROVAL_ENV = """
  - name: prod
    approval: required
    approval_timeout: {timeout}
"""


def approval_repo(app_repo, timeout: str = "2m"):
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    spec = spec[: spec.index("environments:")] + "environments:" + APPROVAL_ENV.format(timeout=timeout)
    repo.write("slipway.yaml", spec).commit("prod needs approval", tag="a1")
    return repo


def test_an_approved_release_goes_live_and_records_the_approver(prefect_api, app_repo):
    from deployments.runner import approve

    repo = approval_repo(app_repo)
    proc = start_release(prefect_api, repo, "a1")
    wait_until_paused(repo.app, "prod", proc)
    assert ledger_entries(repo.app, "prod") == []  # paused before prod was touched
    approve(repo.app, "prod", approve=True, reason="change ticket CHG-42", approver="ada@example.com")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    kinds = [(e.kind, e.actor) for e in ledger_entries(repo.app, "prod")]
    assert kinds[0] == ("approved", "ada@example.com") and [k for k, _ in kinds[1:]] == ["deploy-started", "deployed", "verified"]
    assert ledger_entries(repo.app, "prod")[0].detail == {"gate": "approval", "approver": "ada@example.com", "reason": "change ticket CHG-42"}


def test_a_rejected_release_touches_nothing(prefect_api, app_repo):
    from deployments.runner import approve

    repo = approval_repo(app_repo)
    proc = start_release(prefect_api, repo, "a1")
    wait_until_paused(repo.app, "prod", proc)
    approve(repo.app, "prod", approve=False, reason="freeze until Monday", approver="grace")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "prod not approved: freeze until Monday (grace)" in out + err
    assert "prod unchanged (still serving nothing)" in out + err and "rolled back" not in out + err
    assert [e.kind for e in ledger_entries(repo.app, "prod")] == ["rejected"]


def test_no_decision_in_time_is_a_rejection(prefect_api, app_repo):
    from flows.release import release

    repo = approval_repo(app_repo, timeout="2s")
    state = release(repo_url=repo.url, ref="a1", only=["prod"], return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert "prod not approved: no decision within 2s (timed out = rejected) (nobody)" in str(err)
    entries = ledger_entries(repo.app, "prod")
    assert [(e.kind, e.actor) for e in entries] == [("rejected", "nobody")]


# ---- INCONCLUSIVE: never a silent pass ----------------------------------------------------------------------
QUIET_ENV = """
  - name: prod
    strategy:
      canary: {{steps: [50, 100], bake: 1s}}
    analysis: {{min_requests: 20, inconclusive: {policy}, max_extensions: 1}}
"""


def quiet_repo(app_repo, policy: str):
    """prod by canary with no synthetic traffic (and nothing else calling the function): every bake is INCONCLUSIVE."""
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:" + QUIET_ENV.format(policy=policy))
    repo.commit("quiet prod", tag="q1")
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="q2")
    return repo


def test_an_inconclusive_canary_is_extended_then_fails_and_rolls_back(prefect_api, app_repo):
    from flows.release import release

    lam = lam_client(prefect_api)
    repo = quiet_repo(app_repo, "extend")
    assert release(repo_url=repo.url, ref="q1", return_state=True).is_completed()
    state = release(repo_url=repo.url, ref="q2", return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert "canary at 50% INCONCLUSIVE after 1 extension(s): inconclusive on error_rate: too little traffic" in str(err)
    assert alias(lam, f"{repo.app}-prod") == ("1", {})
    verdicts = [e for e in ledger_entries(repo.app, "prod") if e.kind == "canary-verdict"]
    assert [v.detail["verdict"] for v in verdicts] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert "(step 1/1, extension 1)" in verdicts[-1].message
    # the extension judged the whole step so far: its window starts where the first bake's did
    assert verdicts[-1].detail["window"]["start"] == verdicts[0].detail["window"]["start"]
    assert ledger_entries(repo.app, "prod")[-1].kind == "rolled-back"


def test_an_inconclusive_canary_set_to_pause_waits_for_a_human_and_goes_on_when_approved(prefect_api, app_repo):
    from deployments.runner import approve

    lam = lam_client(prefect_api)
    repo = quiet_repo(app_repo, "pause")
    proc = start_release(prefect_api, repo, "q1")
    assert proc.wait(timeout=120) == 0
    proc = start_release(prefect_api, repo, "q2")
    wait_until_paused(repo.app, "prod", proc)
    assert alias(lam, f"{repo.app}-prod") == ("1", {"2": 0.5})  # paused mid-canary: the split stays while a human looks
    approve(repo.app, "prod", approve=True, reason="low traffic night; errors fine in logs", approver="grace")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert alias(lam, f"{repo.app}-prod") == ("2", {})
    kinds = [e.kind for e in ledger_entries(repo.app, "prod")]
    assert kinds[-4:] == ["canary-verdict", "approved", "deployed", "verified"]

"""Controls on a running canary, end to end: the release runs in a subprocess (as `slipway release` would), and
`slipway abort` / `slipway promote-now` are asked from here while it bakes. An abort puts traffic back on the stable
version without waiting for the bake (no verdict is recorded for the step it cut short); promote-now skips the
remaining bakes and promotes; both are recorded in the ledger with who asked and why."""

from __future__ import annotations

import os
import subprocess
import sys
import time

LONG_CANARY = """
  - name: prod
    strategy:
      canary: {steps: [25, 50, 100], bake: 90s}
    analysis: {inconclusive: fail}
"""


def canary_repo(app_repo, tag: str):
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:" + LONG_CANARY).commit("long bakes", tag=tag)
    return repo


def ledger_entries(app: str, env: str):
    from tasks.wiring import open_store

    return open_store("default")[1].entries(app, env)


def alias(prefect_api, name: str) -> tuple[str, dict]:
    import boto3

    lam = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    a = lam.get_alias(FunctionName=name, Name="live")
    return a["FunctionVersion"], (a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def slipway(prefect_api, *args: str, background: bool = False):
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    argv = [sys.executable, "-m", "slipway.cli", *args]
    if background:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, text=True, capture_output=True, timeout=120)


def baking(app: str, proc: subprocess.Popen) -> None:
    """Until the new version takes its first share of traffic (the first bake starts)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        entries = ledger_entries(app, "prod")
        if entries and entries[-1].kind == "traffic-shifted":
            return
        time.sleep(0.3)  # polling for a state another process reaches, not a wait for an outcome
    raise AssertionError(f"the canary never started baking: {proc.communicate(timeout=5)}")


def new_version(repo, tag: str) -> None:
    repo.write("src/app.py", (repo.path / "src/app.py").read_text() + f"\n# {tag}\n").commit(tag, tag=tag)


def test_abort_puts_traffic_back_on_stable_without_waiting_for_the_bake(prefect_api, app_repo):
    from flows.release import release

    repo = canary_repo(app_repo, "k1")
    assert release(repo_url=repo.url, ref="k1", return_state=True).is_completed()  # nothing live before: all-at-once
    new_version(repo, "k2")
    proc = slipway(prefect_api, "release", repo.url, "--ref", "k2", background=True)
    baking(repo.app, proc)
    assert alias(prefect_api, f"{repo.app}-prod") == ("1", {"2": 0.25})
    asked = slipway(prefect_api, "abort", repo.app, "prod", "--reason", "error budget burning")
    assert asked.returncode == 0 and "abort recorded for release" in asked.stdout, asked.stderr
    out, err = proc.communicate(timeout=60)  # the bake is 90 s: the abort is acted on without waiting for it
    assert proc.returncode != 0 and "aborted by" in out + err and "error budget burning" in out + err
    assert alias(prefect_api, f"{repo.app}-prod") == ("1", {})
    kinds = [e.kind for e in ledger_entries(repo.app, "prod")]
    i = kinds.index("abort-requested")
    assert kinds[i - 1] == "traffic-shifted" and kinds[i + 1:] == ["rollback-started", "rolled-back"], kinds  # no verdict: cut short
    request = next(e for e in ledger_entries(repo.app, "prod") if e.kind == "abort-requested")
    assert request.detail == {"reason": "error budget burning"} and request.actor
    again = slipway(prefect_api, "abort", repo.app, "prod")
    assert again.returncode == 2 and "no canary of" in again.stderr  # nothing baking any more: refused, nothing recorded


def test_promote_now_skips_the_remaining_bakes_and_is_recorded(prefect_api, app_repo):
    from flows.release import release

    repo = canary_repo(app_repo, "p1")
    assert release(repo_url=repo.url, ref="p1", return_state=True).is_completed()
    new_version(repo, "p2")
    proc = slipway(prefect_api, "release", repo.url, "--ref", "p2", background=True)
    baking(repo.app, proc)
    refused = slipway(prefect_api, "promote-now", repo.app, "prod")
    assert refused.returncode == 2 and "--reason" in refused.stderr
    asked = slipway(prefect_api, "promote-now", repo.app, "prod", "--reason", "hotfix INC-9")
    assert asked.returncode == 0, asked.stderr
    out, err = proc.communicate(timeout=60)  # three 90 s bakes skipped
    assert proc.returncode == 0, out + err
    assert alias(prefect_api, f"{repo.app}-prod") == ("2", {})
    entries = ledger_entries(repo.app, "prod")
    kinds = [e.kind for e in entries]
    started = len(kinds) - 1 - kinds[::-1].index("deploy-started")
    assert kinds[started:] == ["deploy-started", "traffic-shifted", "promote-requested", "deployed", "verified"], kinds
    request = entries[kinds.index("promote-requested")]
    assert request.detail == {"reason": "hotfix INC-9"} and "promote-now asked by" in request.message

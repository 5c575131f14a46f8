"""Freeze windows end to end on the session's local stack: a release into a frozen environment is refused before
anything is built (the window named, from the spec or from a shared block); an override with a reason asks for an
approval at the environment's turn, and the answer is recorded in the ledger; a rejected override touches nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from paused_release import start_release, wait_until_paused


def frozen_repo(app_repo, windows: str, tag: str):
    """The example app with one environment, prod, and the given freeze settings (YAML lines under prod)."""
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    spec = spec[: spec.index("environments:")] + "environments:\n  - name: prod\n    approval_timeout: 2m\n" + windows
    repo.write("slipway.yaml", spec).commit("prod has a freeze window", tag=tag)
    return repo


def dated_window_around_now(reason: str) -> str:
    now = datetime.now(timezone.utc)
    return (f"    freeze:\n      - reason: {reason}\n        start: '{(now - timedelta(hours=1)).isoformat()}'\n"
            f"        end: '{(now + timedelta(hours=1)).isoformat()}'\n")


def ledger_entries(app: str, env: str):
    from tasks.wiring import open_store

    return open_store("default")[1].entries(app, env)


def stored_keys(prefect_api, app: str) -> list[str]:
    import boto3

    s3 = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "s3", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    return [o["Key"] for o in s3.list_objects_v2(Bucket=prefect_api["bucket"], Prefix=f"slipway/artifacts/{app}/").get("Contents", [])]


def test_a_release_into_a_frozen_environment_is_refused_before_anything_is_built(prefect_api, app_repo):
    from flows.release import release
    from slipway.core.errors import EnvironmentFrozen, exit_code_for

    repo = frozen_repo(app_repo, dated_window_around_now("year-end freeze"), "f1")
    state = release(repo_url=repo.url, ref="f1", return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, EnvironmentFrozen), err
    assert err.message.startswith("prod is frozen until ") and "year-end freeze" in err.message
    assert "nothing was built" in err.hint and "--override-freeze" in err.hint and exit_code_for(err) == 2
    assert stored_keys(prefect_api, repo.app) == [] and ledger_entries(repo.app, "prod") == []


def test_a_shared_block_freezes_every_environment_that_names_it(prefect_api, app_repo):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks import FreezeWindowsBlock
    from flows.release import release

    with temporary_settings(updates={PREFECT_API_URL: prefect_api["env"]["PREFECT_API_URL"]}):
        FreezeWindowsBlock(windows=[{"reason": "always (test)", "cron": "* * * * *", "duration": "5m", "timezone": "Europe/Berlin"}]).save(
            "test-freeze", overwrite=True)
    repo = frozen_repo(app_repo, "    freeze_block: test-freeze\n", "f2")
    err = release(repo_url=repo.url, ref="f2", return_state=True).result(raise_on_failure=False)
    assert err.ref == "environment-frozen" and "always (test) (from '* * * * *' Europe/Berlin, for 5m)" in err.message


def test_an_override_is_approved_at_the_environments_turn_and_recorded_and_a_rejected_one_touches_nothing(prefect_api, app_repo):
    from deployments.runner import approve

    repo = frozen_repo(app_repo, dated_window_around_now("year-end freeze"), "f3")
    proc = start_release(prefect_api, repo, "f3", "--override-freeze", "hotfix for INC-7")
    wait_until_paused(repo.app, "prod", proc)
    assert ledger_entries(repo.app, "prod") == []  # paused before prod was touched
    approve(repo.app, "prod", approve=True, reason="CAB approved", approver="ada@example.com")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    entries = ledger_entries(repo.app, "prod")
    assert [e.kind for e in entries] == ["approved", "deploy-started", "deployed", "verified"]
    assert entries[0].actor == "ada@example.com"
    assert entries[0].detail == {"gate": "freeze override (year-end freeze)", "approver": "ada@example.com",
                                 "reason": "hotfix for INC-7; CAB approved"}

    repo.write("src/app.py", (repo.path / "src/app.py").read_text() + "\n# another change\n").commit("f4", tag="f4")
    proc = start_release(prefect_api, repo, "f4", "--override-freeze", "just because")
    wait_until_paused(repo.app, "prod", proc)
    approve(repo.app, "prod", approve=False, reason="not during the freeze", approver="grace")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "the override was not approved: not during the freeze (grace)" in out + err
    assert [e.kind for e in ledger_entries(repo.app, "prod")][-1] == "rejected"  # recorded; nothing deployed after it


def test_what_is_live_is_re_verified_during_a_freeze_and_a_new_commit_is_refused(prefect_api, app_repo):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks import FreezeWindowsBlock
    from flows.release import release

    def freeze(windows: list[dict]) -> None:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api["env"]["PREFECT_API_URL"]}):
            FreezeWindowsBlock(windows=windows).save("later-freeze", overwrite=True)

    freeze([])
    repo = frozen_repo(app_repo, "    freeze_block: later-freeze\n", "f5")
    assert release(repo_url=repo.url, ref="f5", return_state=True).is_completed()
    freeze([{"reason": "change freeze", "cron": "* * * * *", "duration": "10m"}])
    again = release(repo_url=repo.url, ref="f5", return_state=True)  # the same commit: only re-verified, which a freeze allows
    assert again.is_completed(), again.result(raise_on_failure=False)
    # the deploy's verified, then the re-verification's (nothing deployed: no deploy-started)
    assert [e.kind for e in ledger_entries(repo.app, "prod")][-2:] == ["verified", "verified"]
    repo.write("src/app.py", (repo.path / "src/app.py").read_text() + "\n# a change\n").commit("f6", tag="f6")
    err = release(repo_url=repo.url, ref="f6", return_state=True).result(raise_on_failure=False)
    assert err.ref == "environment-frozen" and "change freeze" in err.message

"""The maintenance flows: ``verify`` finds drift and failing checks (and heals drift), ``promote`` moves a verified
release to the next environment without rebuilding."""

from __future__ import annotations




def lam_client(prefect_api):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def test_verify_reports_drift_heals_it_and_then_passes(prefect_api, app_repo):
    from flows.maintain import verify_live
    from flows.release import release
    from slipway.core.errors import ReleaseFailed
    from tasks.wiring import open_store

    lam = lam_client(prefect_api)
    repo = app_repo()
    assert release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="v2")
    assert release(repo_url=repo.url, ref="v2", only=["dev"], return_state=True).is_completed()
    fn = f"{repo.app}-dev"
    lam.update_alias(FunctionName=fn, Name="live", FunctionVersion="1")  # someone moved the alias by hand

    state = verify_live(apps=[repo.app], return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, ReleaseFailed)
    assert f"{repo.app}/dev: drift: {fn}:live serves 1; the ledger says" in err.message and "(version 2)" in err.message

    healed = verify_live(apps=[repo.app], heal=True)
    row = next(r for r in healed["checked"] if r["environment"] == "dev")
    assert row["status"] == "drift" and row["healed"] is True
    assert lam.get_alias(FunctionName=fn, Name="live")["FunctionVersion"] == "2"
    assert open_store("default")[1].entries(repo.app, "dev")[-1].kind == "reconciled"
    again = verify_live(apps=[repo.app])
    assert [r["status"] for r in again["checked"]] == ["ok"]


def test_promote_moves_the_verified_release_without_rebuilding(prefect_api, app_repo):
    from flows.maintain import promote
    from flows.release import release
    from tasks.wiring import open_store

    repo = app_repo()
    first = release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).result()
    assert first["artifact"]["reused"] is False
    promoted = promote(app=repo.app, from_env="dev", to_env="staging")
    assert promoted["release_id"] == first["release_id"]
    assert promoted["artifact"]["reused"] is True  # found by its build pointer: no tests, no build
    assert open_store("default")[1].head(repo.app, "staging").live.release_id == first["release_id"]

    state = promote(app=repo.app, from_env="prod", to_env="staging", return_state=True)
    assert state.is_failed() and "nothing is verified" in str(state.result(raise_on_failure=False))


def test_verify_notices_a_recreated_function_whose_version_runs_other_code(prefect_api, app_repo):
    import io
    import zipfile

    from flows.maintain import verify_live

    lam = lam_client(prefect_api)
    repo = app_repo()
    assert release_dev(repo)
    fn = f"{repo.app}-dev"
    role = lam.get_function(FunctionName=fn)["Configuration"]["Role"]
    lam.delete_function(FunctionName=fn)  # someone recreates the function by hand: version 1 is now other code
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {'statusCode': 200, 'body': '{\"ok\": true}'}\n")
    lam.create_function(FunctionName=fn, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": buf.getvalue()},
                        Tags={"slipway:app": repo.app})
    lam.publish_version(FunctionName=fn)
    lam.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")

    state = verify_live(apps=[repo.app], return_state=True)
    assert state.is_failed()
    assert "drift" in str(state.result(raise_on_failure=False)) and "version 1 runs code" in str(state.result(raise_on_failure=False))


def release_dev(repo) -> bool:
    from flows.release import release

    return release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()


def test_promote_uses_the_spec_the_release_was_made_with_and_a_spec_of_another_app_is_refused(prefect_api, app_repo):
    from flows.maintain import promote
    from flows.release import release

    repo = app_repo()
    own = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.alt.yaml", own)  # the app's spec under another name; slipway.yaml now describes another app
    repo.write("slipway.yaml", own.replace(f"app: {repo.app}\n", "app: somebody-else\n"))
    repo.commit("the spec moves", tag="alt1")
    first = release(repo_url=repo.url, ref="alt1", spec_path="slipway.alt.yaml", only=["dev"])

    promoted = promote(app=repo.app, from_env="dev", to_env="staging")
    assert (promoted["app"], promoted["release_id"]) == (repo.app, first["release_id"])

    state = release(repo_url=repo.url, ref="alt1", only=["prod"], app=repo.app, return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and err.ref == "spec-app-mismatch"
    assert str(err) == f"slipway.yaml describes app 'somebody-else', not '{repo.app}': pass the spec of the app being released (--spec)"

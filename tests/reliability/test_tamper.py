"""Tamper detection: an artifact replaced in the store after publishing is refused before any deploy, with a clear
error, and the diagnosis names it."""

from __future__ import annotations

import io
import zipfile

import pytest



def test_an_artifact_modified_after_publishing_is_refused_before_any_deploy(prefect_api, app_repo):
    import boto3

    from flows.diagnose import diagnose
    from flows.release import release
    from tasks.wiring import open_store

    repo = app_repo()
    assert release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()
    live = open_store("default")[1].head(repo.app, "dev").live
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    endpoint = prefect_api["env"]["AWS_ENDPOINT_URL"]
    s3 = session.client("s3", endpoint_url=endpoint)
    key = f"slipway/artifacts/{repo.app}/{live.artifact_sha256}.zip"
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {'statusCode': 200, 'body': '{\"ok\": true}', 'pwned': True}\n")
    s3.put_object(Bucket=prefect_api["bucket"], Key=key, Body=evil.getvalue())  # anyone with write access to the bucket

    state = release(repo_url=repo.url, ref="v1", only=["staging"], return_state=True)  # promotes the published artifact
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert f"artifact s3://{prefect_api['bucket']}/{key} does not match its published digest" in err.message
    assert "it was modified after publishing" in err.message and "staging unchanged" in err.message
    lam = session.client("lambda", endpoint_url=endpoint)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{repo.app}-staging")  # nothing deployed
    assert lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")["FunctionVersion"] == live.version  # dev untouched
    d = diagnose(app=repo.app, environment="staging")
    assert d["classification"] == "drift" and d["error_ref"] == "artifact-tampered" and "delete s3://" in d["next_action"]


def _s3(prefect_api):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("s3", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"]), session


def test_a_build_pointer_swapped_to_another_commits_artifact_is_refused_and_nothing_is_deployed(prefect_api, app_repo):
    """Someone with write access to the bucket rewrites v1's build pointer to name v2's artifact: `release --ref v1`
    must not deploy v2's code as v1."""
    import json

    from flows.release import release
    from tasks.wiring import open_store

    repo = app_repo()  # v1 committed and tagged
    repo.write("src/app.py", (repo.path / "src" / "app.py").read_text() + "\n# v2\n").commit("v2", tag="v2")
    assert release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()
    assert release(repo_url=repo.url, ref="v2", only=["dev"], return_state=True).is_completed()
    store, ledger = open_store("default")
    live_before = ledger.head(repo.app, "dev").live
    s3, session = _s3(prefect_api)
    bucket = prefect_api["bucket"]
    pointers = {}
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=f"slipway/builds/{repo.app}/")["Contents"]:
        body = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        pointers[body["commit"]] = (obj["Key"], body)
    from conftest import git

    commit_v1, commit_v2 = git(repo.path, "rev-parse", "v1"), git(repo.path, "rev-parse", "v2")
    v1_key, _ = pointers[commit_v1]
    _, v2_pointer = pointers[commit_v2]
    s3.put_object(Bucket=bucket, Key=v1_key, Body=json.dumps({**v2_pointer, "commit": commit_v1}).encode())  # v2's artifact, v1's name

    state = release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True)

    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert f"build pointer s3://{bucket}/{v1_key} does not match the artifact it names" in err.message
    assert "the artifact's manifest has commit" in err.message
    head = ledger.head(repo.app, "dev")
    assert head.live == live_before and head.in_progress is None  # nothing deployed, no record of a deploy
    lam = session.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    assert lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")["FunctionVersion"] == live_before.version


def test_rollback_to_a_release_whose_manifest_was_rewritten_is_refused_and_nothing_moves(prefect_api, app_repo):
    import json

    from flows.release import release
    from flows.rollback import rollback
    from tasks.wiring import open_store

    repo = app_repo()
    repo.write("src/app.py", (repo.path / "src" / "app.py").read_text() + "\n# v2\n").commit("v2", tag="v2")
    assert release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()
    assert release(repo_url=repo.url, ref="v2", only=["dev"], return_state=True).is_completed()
    store, ledger = open_store("default")
    head = ledger.head(repo.app, "dev")
    first = head.previous_verified()
    s3, session = _s3(prefect_api)
    key = f"slipway/artifacts/{repo.app}/{first.artifact_sha256}.releases/{first.release_id}.json"  # the release's own provenance
    manifest = json.loads(s3.get_object(Bucket=prefect_api["bucket"], Key=key)["Body"].read())
    s3.put_object(Bucket=prefect_api["bucket"], Key=key, Body=json.dumps({**manifest, "commit": "e" * 40}).encode())

    state = rollback(app=repo.app, environment="dev", to=first.release_id, return_state=True)

    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert f"refusing to move dev back to {first.release_id}" in err.message and key in err.message
    lam = session.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    assert lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")["FunctionVersion"] == head.live.version  # not moved

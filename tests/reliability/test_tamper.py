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

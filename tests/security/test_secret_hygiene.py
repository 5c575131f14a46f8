"""Secret hygiene: releases run with known secret values — an AWS secret key, a git token, a registry password — and
everything Slipway writes is scanned for them, raw and base64/URL-encoded: Prefect logs (through the API), artifacts,
the ledger, provenance manifests, build pointers, failure records, CLI output and exception messages."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, quote_plus

import pytest


TAG = uuid.uuid4().hex[:10]
SECRETS = {
    "aws secret key": f"AwsSecret/{TAG}+Key=",  # '/', '+' and '=' change under URL and base64 encodings
    "git token": f"ghp_{TAG}GitToken",
    "registry password": f"RegPass-{TAG}!",
}


def encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value, "base64": base64.b64encode(raw).decode().rstrip("="), "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "url": quote(value, safe=""), "url+": quote_plus(value),
    }


def find_secrets(text: str) -> list[str]:
    return [f"{name} ({form})" for name, value in SECRETS.items() for form, enc in encodings(value).items() if enc in text]


def test_the_scanner_finds_every_form():
    """The scan itself can fail: each form of each secret, embedded in other text, is found."""
    for value in SECRETS.values():
        for enc in encodings(value).values():
            assert find_secrets(f"prefix {enc} suffix")


@pytest.fixture
def secretive_blocks(prefect_api):
    from prefect.blocks.system import Secret
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import ArtifactStoreBlock, LambdaTargetBlock, RegistryBlock

    creds = AwsCredentials(aws_access_key_id="AKIASLIPWAYTEST", aws_secret_access_key=SECRETS["aws secret key"], region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"]))
    ArtifactStoreBlock(bucket=prefect_api["bucket"], prefix="slipway", credentials=creds).save("secretive", overwrite=True)
    LambdaTargetBlock(credentials=creds, role_arn=prefect_api["role_arn"], metrics_period_s=1, metrics_delay_s=0).save("secretive", overwrite=True)
    Secret(value=SECRETS["git token"]).save("secretive-git-token", overwrite=True)
    if prefect_api.get("registry"):
        RegistryBlock(kind="oci", url=prefect_api["registry"], username="slipway", password=SECRETS["registry password"]).save(
            "secretive", overwrite=True)
    return prefect_api


def _everything_written(prefect_api, app: str, since: datetime) -> dict[str, str]:
    """Where → text, for every place Slipway writes to."""
    import boto3
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp

    out: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            logs = client.read_logs(log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)), limit=200, offset=offset)
            out.update({f"log {log.id}": log.message for log in logs})
            if len(logs) < 200:
                break
            offset += 200
        offset = 0
        while True:
            artifacts = client.read_artifacts(limit=200, offset=offset)
            out.update({f"artifact {a.key or a.id}": json.dumps(a.data, default=str) + str(a.description) for a in artifacts})
            if len(artifacts) < 200:
                break
            offset += 200
        runs = client.read_flow_runs(limit=200)
        out.update({f"flow run {r.name}": json.dumps(r.parameters, default=str) + str(r.state.message if r.state else "") for r in runs})
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = session.client("s3", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    for prefix in (f"slipway/ledger/{app}/", f"slipway/artifacts/{app}/", f"slipway/builds/{app}/", f"slipway/diagnostics/{app}/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefect_api["bucket"], Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=prefect_api["bucket"], Key=obj["Key"])["Body"].read()
                out[f"s3 {obj['Key']}"] = body.decode("utf-8", errors="replace") if not obj["Key"].endswith(".zip") else ""
    return out


def test_no_secret_value_reaches_anything_slipway_writes(secretive_blocks, app_repo):
    from flows.release import release

    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    repo = app_repo()
    written: dict[str, str] = {}
    common = dict(repo_url=repo.url, only=["dev"], store_block="secretive", git_token_block="secretive-git-token")
    spec = (repo.path / "slipway.yaml").read_text().replace("  - name: dev\n", "  - name: dev\n    target: secretive\n")
    repo.write("slipway.yaml", spec).commit("secretive target", tag="s1")
    ok = release(ref="s1", **common, return_state=True)
    assert ok.is_completed()
    repo.break_health_check().commit("v2", tag="s2")
    failed = release(ref="s2", **common, return_state=True)  # verify fails, rollback, diagnose: the error paths too
    assert failed.is_failed()
    err = failed.result(raise_on_failure=False)
    written["exception"] = f"{err!r} {err} {json.dumps(getattr(err, 'evidence', {}), default=str)}"
    cli_env = {**os.environ, "PREFECT_API_URL": secretive_blocks["env"]["PREFECT_API_URL"]}
    for argv in (["diagnose", repo.app, "--json"], ["history", repo.app, "--json"], ["diagnose", repo.app]):
        proc = subprocess.run([sys.executable, "-m", "slipway.cli", *argv], text=True, capture_output=True, env=cli_env, timeout=120)
        written[f"cli {' '.join(argv)}"] = proc.stdout + proc.stderr
    written.update(_everything_written(secretive_blocks, repo.app, since))
    assert any(k.startswith("s3 slipway/diagnostics/") for k in written) and any(k.startswith("log ") for k in written)
    leaks = {where: found for where, text in written.items() if (found := find_secrets(text))}
    assert not leaks, leaks
    print(f"\nsecret scan: {len(written)} places scanned ({sum(len(t) for t in written.values()):,} characters), "
          f"{len(SECRETS)} secrets × {len(encodings('x'))} forms, 0 found")


@pytest.mark.docker
def test_the_registry_password_of_a_container_release_is_never_written(secretive_blocks, tmp_path, busybox_image, docker_client):
    from conftest import git
    from flows.release import release

    if not secretive_blocks.get("registry"):
        pytest.skip("no local registry on this machine")
    app = f"secret-svc-{TAG[:6]}"
    path = tmp_path / app
    path.mkdir()
    (path / "Dockerfile").write_text(
        'FROM slipway-test/busybox:latest\nCMD ["sh", "-c", "mkdir -p /www && echo ok > /www/health && exec httpd -f -p $HOST:$PORT -h /www"]\n')
    (path / "slipway.yaml").write_text(f"app: {app}\nartifact:\n  type: docker-image\n  health_path: /health\nenvironments:\n  - name: dev\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "v1")
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    try:
        state = release(repo_url=f"file://{path}", ref="main", only=["dev"], registry_block="secretive", return_state=True)
        assert state.is_completed()
        written = _everything_written(secretive_blocks, app, since)
        leaks = {where: found for where, text in written.items() if (found := find_secrets(text))}
        assert not leaks, leaks
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"dev.slipway.app={app}"}):
            c.remove(force=True)

"""End-to-end release flows against the session's local stack (real Prefect server, local AWS)."""

from __future__ import annotations

import pytest



@pytest.fixture(scope="module")
def clients(prefect_api):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    endpoint = prefect_api["env"]["AWS_ENDPOINT_URL"]
    return session.client("lambda", endpoint_url=endpoint), session.client("s3", endpoint_url=endpoint)


def run_release(**params):
    from flows.release import release

    state = release(return_state=True, **params)
    return state, state.result(raise_on_failure=False)


def run_artifacts(flow_run_id) -> dict[str, str]:
    """The markdown/table artifacts a flow run published, by key."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return {a.key: str(a.data) for a in asyncio.run(read()) if a.key}


def alias_version(lam, name: str) -> str | None:
    try:
        return lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"]
    except lam.exceptions.ResourceNotFoundException:
        return None


def versions(lam, name: str) -> list[str]:
    return [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"] if v["Version"] != "$LATEST"]


def store_keys(s3, bucket: str, app: str) -> list[str]:
    keys = []
    for sub in ("artifacts", "builds"):
        resp = s3.list_objects_v2(Bucket=bucket, Prefix=f"slipway/{sub}/{app}/")
        keys += [o["Key"] for o in resp.get("Contents", [])]
    return keys


def test_release_goes_live_everywhere_and_an_unchanged_rerelease_reuses_artifact_and_version(prefect_api, clients, app_repo):
    lam, s3 = clients
    repo = app_repo()
    state, summary = run_release(repo_url=repo.url, ref="v1")
    assert state.is_completed(), summary
    assert [(o["environment"], o["status"]) for o in summary["outcomes"]] == [("dev", "live"), ("staging", "live"), ("prod", "live")]
    assert summary["artifact"]["reused"] is False
    for env in ("dev", "staging", "prod"):
        assert alias_version(lam, f"{repo.app}-{env}") == "1"
    keys_before = store_keys(s3, prefect_api["bucket"], repo.app)
    assert len(keys_before) == 4  # zip, manifest, the release's provenance, build pointer

    state, again = run_release(repo_url=repo.url, ref="v1")
    assert state.is_completed(), again
    assert again["release_id"] == summary["release_id"]
    assert again["artifact"]["reused"] is True
    assert store_keys(s3, prefect_api["bucket"], repo.app) == keys_before
    for env in ("dev", "staging", "prod"):
        assert versions(lam, f"{repo.app}-{env}") == ["1"]


def test_a_failing_smoke_check_rolls_dev_back_and_leaves_staging_and_prod_untouched(prefect_api, clients, app_repo):
    from slipway.core.errors import ReleaseFailed

    lam, _ = clients
    repo = app_repo()
    state, first = run_release(repo_url=repo.url, ref="v1")
    assert state.is_completed(), first
    repo.break_health_check().commit("v2", tag="v2")

    state, err = run_release(repo_url=repo.url, ref="v2")
    assert state.is_failed()
    assert isinstance(err, ReleaseFailed)
    assert err.message.startswith(f"release {err.evidence['release_id']} failed at verify: smoke check 'health' failed in dev: ")
    assert "KeyError: 'GREETING'" in err.message
    assert f"dev rolled back to {first['release_id']} (version 1)" in err.message
    assert err.message.endswith("staging, prod not touched")
    assert alias_version(lam, f"{repo.app}-dev") == "1"
    assert versions(lam, f"{repo.app}-dev") == ["1", "2"]  # v2 was published in dev only
    for env in ("staging", "prod"):
        assert alias_version(lam, f"{repo.app}-{env}") == "1"
        assert versions(lam, f"{repo.app}-{env}") == ["1"]
    statuses = {o["environment"]: o["status"] for o in err.evidence["outcomes"]}
    assert statuses == {"dev": "rolled-back", "staging": "not-reached", "prod": "not-reached"}
    report = run_artifacts(state.state_details.flow_run_id)[f"release-{repo.app}"]
    assert "FAILED" in report and "| dev | rolled-back |" in report
    # each run's entries name that run: the deploy its deploy-environment subflow, the rollback its rollback subflow
    from tasks.wiring import open_store

    entries = open_store("default")[1].entries(repo.app, "dev")
    deploy_run = next(e.run_id for e in reversed(entries) if e.kind == "deploy-started")
    rollback_run = next(e.run_id for e in reversed(entries) if e.kind == "rolled-back")
    assert deploy_run and rollback_run and len({deploy_run, rollback_run, str(state.state_details.flow_run_id)}) == 3


def test_failing_tests_stop_the_release_before_anything_is_published(prefect_api, clients, app_repo):
    from slipway.core.errors import TestsFailed

    lam, s3 = clients
    repo = app_repo()
    repo.write("tests/test_more.py", "def test_breaks():\n    assert 1 == 2\n").commit("a failing test")
    state, err = run_release(repo_url=repo.url, ref="main")
    assert state.is_failed()
    assert isinstance(err, TestsFailed)
    assert "tests/test_more.py::test_breaks" in str(err)
    assert store_keys(s3, prefect_api["bucket"], repo.app) == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{repo.app}-dev")
    report = run_artifacts(state.state_details.flow_run_id)["release-failure"]
    assert "FAILED at test" in report and "- `tests/test_more.py::test_breaks`" in report


def test_a_hostile_repo_url_is_refused_before_anything_runs(prefect_api, tmp_path):
    from slipway.core.errors import InputError

    marker = tmp_path / "pwned"
    state, err = run_release(repo_url=f"ext::sh -c touch% {marker}", ref="main")
    assert state.is_failed()
    assert isinstance(err, InputError)
    assert str(err).startswith("refused repository URL")
    assert not marker.exists()


def test_an_unknown_ref_is_named(prefect_api, app_repo):
    from slipway.core.errors import CloneError

    repo = app_repo()
    state, err = run_release(repo_url=repo.url, ref="no-such-branch")
    assert isinstance(err, CloneError)
    assert str(err) == f"unknown ref 'no-such-branch' in {repo.url}: no branch, tag or commit has that name; check --ref"


def test_a_first_release_that_fails_verification_serves_nothing(prefect_api, clients, app_repo):
    lam, _ = clients
    repo = app_repo()
    repo.break_health_check().commit("broken from the start", tag="bad")
    state, err = run_release(repo_url=repo.url, ref="bad")
    assert state.is_failed()
    assert "nothing verified to return to" in str(err)
    assert alias_version(lam, f"{repo.app}-dev") is None
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{repo.app}-staging")


def test_manual_rollback_returns_to_the_previous_verified_release_and_can_target_one(prefect_api, clients, app_repo):
    from flows.release import rollback

    lam, _ = clients
    repo = app_repo()
    _, first = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    repo.write("src/extra.py", "X = 2\n").commit("v1.1", tag="v11")
    _, second = run_release(repo_url=repo.url, ref="v11", only=["dev"])
    assert alias_version(lam, f"{repo.app}-dev") == "2"

    outcome = rollback(app=repo.app, environment="dev")
    assert outcome["to_release"] == first["release_id"]
    assert alias_version(lam, f"{repo.app}-dev") == "1"

    outcome = rollback(app=repo.app, environment="dev", to=second["release_id"])
    assert outcome["to_version"] == "2"
    assert alias_version(lam, f"{repo.app}-dev") == "2"


def test_a_release_killed_after_moving_the_alias_is_reconciled_by_the_next_run(prefect_api, clients, app_repo):
    """Simulate a run that died between shifting traffic and verifying: the ledger shows it in progress."""
    from slipway.rollout import staged
    from slipway.rollout.staged import EnvRef
    from tasks.wiring import env_context, open_store

    lam, _ = clients
    repo = app_repo()
    run_release(repo_url=repo.url, ref="v1", only=["dev"])
    # a second release, driven by hand up to the point where a killed process would have stopped
    store, _ledger = open_store("default")
    artifact = store.find_build(repo.app, _build_key_of(repo, "v1"))
    ctx = env_context(EnvRef(app=repo.app, environment="dev", location={"function": f"{repo.app}-dev", "alias": "live"}))
    from slipway.core.models import DeployResult

    staged.shift_traffic(ctx, artifact, DeployResult(environment="dev", function=f"{repo.app}-dev", alias="live", version="$LATEST",
                                                      previous_version="1", code_sha256=""))
    assert ctx.head().status == "in-progress"

    state, summary = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    assert state.is_completed(), summary
    kinds = [e.kind for e in ctx.ledger.entries(repo.app, "dev")]
    assert "reconciled" in kinds
    assert ctx.head().status == "live"
    assert alias_version(lam, f"{repo.app}-dev") == "1"


def _build_key_of(repo, ref: str) -> str:
    from conftest import git
    from slipway import BUILDER_VERSION
    from slipway.spec.loading import load_spec

    return load_spec(repo.path).build_key(git(repo.path, "rev-parse", ref), BUILDER_VERSION)


def test_unusable_credentials_stop_the_release_before_the_clone(prefect_api, app_repo):
    from prefect_aws import AwsCredentials

    from blocks import ArtifactStoreBlock
    from slipway.core.errors import CredentialsError

    creds = AwsCredentials(profile_name="slipway-no-such-profile", region_name="us-east-1")
    ArtifactStoreBlock(bucket="slipway-local-artifacts", credentials=creds).save("broken-creds", overwrite=True)
    repo = app_repo()
    state, err = run_release(repo_url=repo.url, ref="v1", store_block="broken-creds")
    assert isinstance(err, CredentialsError)
    assert str(err) == (
        "AWS profile 'slipway-no-such-profile' not found to open an AWS session: "
        "fix profile_name in the aws-credentials block or create the profile (aws configure --profile NAME)"
    )
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def task_names():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            return sorted(r.name.rsplit("-", 1)[0] for r in runs)

    import asyncio

    assert asyncio.run(task_names()) == ["check-artifact-store"]  # nothing after it ran: no clone, no build


def test_spec_environment_values_never_reach_flow_run_parameters_and_a_tampered_recorded_spec_is_refused(prefect_api, clients, app_repo):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from tasks.wiring import open_store

    _, s3 = clients
    repo = app_repo()
    value = "sk-live-4242-not-for-parameters"
    spec = (repo.path / "slipway.yaml").read_text().replace("  runtime: python3.11\n", f"  runtime: python3.11\n  environment:\n    API_TOKEN: {value}\n")
    repo.write("slipway.yaml", spec).commit("a secret in the spec", tag="s1")
    state, summary = run_release(repo_url=repo.url, ref="s1", only=["dev"])
    assert state.is_completed(), summary

    async def subflow_parameters():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])))
            return [r.parameters for r in runs]

    parameters = asyncio.run(subflow_parameters())
    assert parameters and all("spec_digest" in p and "spec" not in p for p in parameters)
    assert value not in repr(parameters)

    store, _ = open_store("default")
    digest = parameters[0]["spec_digest"]
    key = store.spec_key(repo.app, digest)
    body = s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=store.bucket, Key=key, Body=body.replace(value.encode(), b"attacker-value"))
    from slipway.core.errors import DeployError

    with pytest.raises(DeployError) as info:
        store.read_spec(repo.app, digest)
    assert info.value.ref == "artifact-tampered" and "does not hash to its name" in str(info.value)
    s3.put_object(Bucket=store.bucket, Key=key, Body=body)  # leave the store as the release wrote it


def test_a_release_resolves_each_block_once_for_all_its_environments(prefect_api, app_repo, monkeypatch):
    """The environments' subflows share the release's resolution: one request per block (a missing per-environment
    target block included), not one per environment and step."""
    from collections import Counter

    import httpx

    repo = app_repo()
    assert run_release(repo_url=repo.url, ref="v1")[0].is_completed()
    loads: Counter = Counter()
    original = httpx.HTTPTransport.handle_request

    def counting(self, request):
        if request.method == "GET" and "/block_documents/name/" in request.url.path:
            loads[request.url.path.split("/block_types/slug/", 1)[1]] += 1
        return original(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", counting)
    state, summary = run_release(repo_url=repo.url, ref="v1")  # unchanged: three re-verifications
    assert state.is_completed(), summary
    assert loads and max(loads.values()) == 1, loads
    assert "slipway-lambda-target/block_documents/name/dev" in loads  # looked for once, then `default`


def test_a_commit_that_builds_the_same_bytes_is_a_release_of_its_own_reused_promoted_and_rolled_back_to(prefect_api, clients, app_repo):
    """A commit that changes only docs (or slipway.yaml) builds a byte-identical zip: the same artifact, but its own
    release with its own provenance. Re-releasing it, promoting it and rolling back to it use that provenance (the
    artifact's manifest names the first commit that built those bytes)."""
    from flows.maintain import promote
    from tasks.wiring import open_store

    repo = app_repo()
    state, first = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    assert state.is_completed(), first
    repo.write("README.md", "docs only\n").commit("docs", tag="d2")
    state, docs = run_release(repo_url=repo.url, ref="d2", only=["dev"])
    assert state.is_completed(), docs
    assert docs["artifact"]["sha256"] == first["artifact"]["sha256"] and docs["release_id"] != first["release_id"]
    state, again = run_release(repo_url=repo.url, ref="d2", only=["dev"])  # its build pointer is proven against its own record
    assert state.is_completed(), again
    assert again["artifact"]["reused"] is True and again["release_id"] == docs["release_id"]
    promoted = promote(app=repo.app, from_env="dev", to_env="staging")
    assert promoted["release_id"] == docs["release_id"] and promoted["commit"] == docs["commit"]
    repo.break_health_check().commit("v3", tag="v3")
    state, err = run_release(repo_url=repo.url, ref="v3", only=["dev"])
    assert state.is_failed() and f"dev rolled back to {docs['release_id']}" in err.message, err.message
    assert open_store("default")[1].head(repo.app, "dev").live.release_id == docs["release_id"]


def deploy_runs(app: str, env: str) -> int:
    """How many ``deploy-environment`` flow runs Prefect has for APP/ENV."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"deploy {app}/{env}"]))))


def test_an_unchanged_re_release_re_verifies_in_place_and_a_failure_there_takes_the_full_way_and_rolls_back(
        prefect_api, clients, app_repo):
    """Environments already live on the release are re-verified inside the release's own run (no subflow, no lock,
    only a `verified` entry). When the live release fails there, nothing is recorded by that attempt and the
    environment takes the full way under its lock: re-verified again, failed, rolled back to the release before."""
    import json

    from prefect.artifacts import Artifact

    from flows.links import HISTORY_ROWS, artifact_key
    from slipway.record.report import history_rows
    from tasks.wiring import open_store

    lam, _ = clients
    ledger = open_store("default")[1]
    repo = app_repo()
    assert run_release(repo_url=repo.url, ref="v1", only=["dev"])[0].is_completed()
    spec = (repo.path / "slipway.yaml").read_text()
    stricter = spec.replace("expect: {statusCode: 200}\n", "expect: {statusCode: 200, body: {greeting: never}}\n")
    assert stricter != spec
    repo.write("src/extra.py", "X = 2\n").write("slipway-strict.yaml", stricter).commit("v2", tag="v2")
    state, v2 = run_release(repo_url=repo.url, ref="v2")
    assert state.is_completed(), v2
    runs = {env: deploy_runs(repo.app, env) for env in ("dev", "staging", "prod")}

    state, again = run_release(repo_url=repo.url, ref="v2")  # unchanged everywhere
    assert state.is_completed(), again
    assert [(o["environment"], o["status"], o["message"]) for o in again["outcomes"]] == [
        (env, "live", "re-verified") for env in ("dev", "staging", "prod")]
    assert {env: deploy_runs(repo.app, env) for env in runs} == runs  # no deploy-environment run: nothing to lock
    for env in runs:
        newest = ledger.entries(repo.app, env)[-2:]
        assert [e.kind for e in newest] == ["verified", "verified"] and newest[-1].detail["reverified"] is True
        # the UI's history table, extended without reading the ledger, is the ledger's newest entries
        table = json.loads(Artifact.get(artifact_key("history", repo.app, env)).data)
        assert table == history_rows(ledger.history(repo.app, env, limit=HISTORY_ROWS)) and table[0]["seq"] == newest[-1].seq

    # the same commit with stricter smoke checks: the live release fails them
    seq = ledger.head(repo.app, "dev").last_seq
    state, err = run_release(repo_url=repo.url, ref="v2", spec_path="slipway-strict.yaml")
    assert state.is_failed()
    assert f"dev rolled back to {ledger.head(repo.app, 'dev').live.release_id}" in str(err)
    assert ledger.head(repo.app, "dev").live.commit != v2["commit"] and alias_version(lam, f"{repo.app}-dev") == "1"
    assert [e.kind for e in ledger.entries_after(repo.app, "dev", seq)][:3] == ["deploy-started", "verify-failed", "rollback-started"]
    assert deploy_runs(repo.app, "dev") == runs["dev"] + 1  # the full way, once
    assert ledger.head(repo.app, "staging").live.commit == v2["commit"] and ledger.entries(repo.app, "staging")[-1].kind == "verified"  # not reached

"""Secret references in slipway.yaml's environment values: read at deploy time from a Prefect Secret block, SSM
(SecureString) and Secrets Manager; the values reach the function's configuration and nothing else — not the ledger,
not the recorded spec, not the artifact store, not a flow run's parameters, logs or artifacts. An unreadable one stops
the release at preflight, in one line naming the reference, before anything is built or deployed."""

from __future__ import annotations

import json
import uuid

import pytest


def _aws(prefect_api, service: str):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client(service, endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def _with_environment(repo, environment: str) -> None:
    spec = (repo.path / "slipway.yaml").read_text()
    spec = spec.replace("  runtime: python3.11\n", f"  runtime: python3.11\n  environment: {environment}\n")
    spec = spec[: spec.index("environments:")] + "environments:\n  - name: dev\n"
    repo.write("slipway.yaml", spec).commit("secrets", tag="secrets")


def _everything_prefect_holds(run_ids: list) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(r) for r in run_ids]
        runs += client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=run_ids)))
        ids = [r.id for r in runs]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)
        artifacts = client.read_artifacts(limit=200)
        return json.dumps([r.model_dump(mode="json") for r in runs] + [entry.message for entry in logs]
                          + [a.model_dump(mode="json") for a in artifacts], default=str)


def test_secret_references_reach_the_function_and_nothing_else(prefect_api, app_repo):
    from prefect.blocks.system import Secret

    from flows.release import release

    repo = app_repo()
    values = {name: f"{name}-{uuid.uuid4().hex}" for name in ("ssm", "sm", "prefect")}
    _aws(prefect_api, "ssm").put_parameter(Name=f"/{repo.app}/api-key", Value=values["ssm"], Type="SecureString")
    _aws(prefect_api, "secretsmanager").create_secret(Name=f"{repo.app}/token", SecretString=values["sm"])
    Secret(value=values["prefect"]).save(f"{repo.app}-db", overwrite=True)
    _with_environment(repo, f'{{API_KEY: {{secret: "ssm:/{repo.app}/api-key"}}, TOKEN: {{secret: "secretsmanager:{repo.app}/token"}}, '
                            f'DB_PASSWORD: {{secret: "prefect:{repo.app}-db"}}, GREETING: hello}}')

    state = release(repo_url=repo.url, ref="secrets", return_state=True)

    assert state.is_completed(), state.message
    config = _aws(prefect_api, "lambda").get_function_configuration(FunctionName=f"{repo.app}-dev", Qualifier="live")
    assert config["Environment"]["Variables"] == {"API_KEY": values["ssm"], "TOKEN": values["sm"], "DB_PASSWORD": values["prefect"],
                                                  "GREETING": "hello"}
    s3 = _aws(prefect_api, "s3")
    stored = "".join(s3.get_object(Bucket=prefect_api["bucket"], Key=o["Key"])["Body"].read().decode("utf-8", "replace")
                     for o in s3.list_objects_v2(Bucket=prefect_api["bucket"], Prefix="slipway/")["Contents"]
                     if repo.app in o["Key"] and not o["Key"].endswith(".zip"))
    assert "ssm:/" in stored  # the references are recorded (the spec), the values are not
    held = _everything_prefect_holds([state.state_details.flow_run_id])
    for value in values.values():
        assert value not in stored and value not in held


def test_an_unreadable_secret_stops_the_release_at_preflight_before_anything_is_deployed(prefect_api, app_repo):
    from flows.release import release

    repo = app_repo()
    _with_environment(repo, '{API_KEY: {secret: "ssm:/nowhere/api-key"}}')

    state = release(repo_url=repo.url, ref="secrets", return_state=True)

    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert "could not read secret ssm:/nowhere/api-key for API_KEY in dev: ParameterNotFound" in err.message
    assert "\n" not in err.one_line()
    lam = _aws(prefect_api, "lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{repo.app}-dev")

"""Preflight in the release flow: a module the tests have but the zip does not stops the release before anything
is published or deployed."""

from __future__ import annotations

import pytest



def test_an_unpackaged_import_stops_the_release_before_anything_is_published(prefect_api, app_repo):
    import boto3

    from flows.release import release
    from slipway.artifact.preflight import PreflightFailed

    repo = app_repo()
    # pluggy is in the test venv (pytest needs it), so the app's tests pass; nothing packages it into the zip
    app = (repo.path / "src/app.py").read_text().replace("import json\n", "import json\n\nimport pluggy  # noqa: F401\n", 1)
    repo.write("src/app.py", app).commit("use pluggy", tag="p1")
    state = release(repo_url=repo.url, ref="p1", return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, PreflightFailed)
    assert "preflight check 'imports resolve' failed: imported but not packaged: pluggy (app.py:5: import pluggy)" in err.message
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    endpoint = prefect_api["env"]["AWS_ENDPOINT_URL"]
    listed = session.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=prefect_api["bucket"], Prefix=f"slipway/artifacts/{repo.app}/")
    assert listed.get("KeyCount", 0) == 0  # nothing published
    with pytest.raises(session.client("lambda", endpoint_url=endpoint).exceptions.ResourceNotFoundException):
        session.client("lambda", endpoint_url=endpoint).get_function(FunctionName=f"{repo.app}-dev")  # nothing deployed


def test_the_release_report_lists_the_preflight_checks(prefect_api, app_repo):
    from flows.release import release
    from test_progressive_flow import latest_artifact

    repo = app_repo()
    assert release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).is_completed()
    report = latest_artifact(f"release-{repo.app}")
    assert "## Preflight" in report and "✅ imports resolve" in report and "✅ handler imports: app.handler imports" in report


def test_an_alarm_already_firing_is_in_the_report_and_does_not_block(prefect_api, app_repo):
    import uuid

    import boto3

    from flows.release import release
    from test_progressive_flow import latest_artifact

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    cw = session.client("cloudwatch", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    alarm = f"pf-{uuid.uuid4().hex[:8]}-5xx"
    cw.put_metric_alarm(AlarmName=alarm, Namespace="Slipway/Test", MetricName="5xx", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="already noisy")
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text().replace("  - name: dev\n", f"  - name: dev\n    alarms: [{alarm}]\n")
    repo.write("slipway.yaml", spec).commit("alarm on dev", tag="a1")
    assert release(repo_url=repo.url, ref="a1", only=["dev"], return_state=True).is_completed()
    report = latest_artifact(f"release-{repo.app}")
    assert f"✅ dev: alarms: ALREADY IN ALARM before the release (reported, not blocking" in report and "already noisy" in report
    assert "✅ dev: credentials usable: AWS account 123456789012" in report and "✅ dev: target: function" in report

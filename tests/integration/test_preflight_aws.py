"""Preflight against an environment's account (the in-process local AWS): read-only checks of the credentials, the
role and function, and the alarms (one already firing is reported, not blocking)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest

from slipway.rollout.preflight_account import check_alarms, check_identity, check_lambda_target


@pytest.fixture
def clients(aws_endpoint, boto_session):
    return {name: boto_session.client(name, endpoint_url=aws_endpoint) for name in ("sts", "lambda", "iam", "cloudwatch")}


@pytest.fixture
def role_arn(clients):
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}
    return clients["iam"].create_role(RoleName=f"pf-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_usable_credentials_name_the_account_and_caller(clients):
    check = check_identity(clients["sts"], "dev")
    assert check.passed and check.detail.startswith("AWS account 123456789012 as arn:aws:")


def test_a_missing_role_fails_and_a_missing_function_will_be_created(clients, role_arn):
    missing = role_arn.rsplit("/", 1)[0] + "/nobody-" + uuid.uuid4().hex[:6]
    check = check_lambda_target(clients["lambda"], clients["iam"], "dev", "fn-" + uuid.uuid4().hex[:6], missing)
    assert not check.passed and check.ref == "role-missing" and "does not exist" in check.detail
    check = check_lambda_target(clients["lambda"], clients["iam"], "dev", "fn-new", role_arn)
    assert check.passed and "function fn-new will be created" in check.detail


def test_an_existing_function_is_described(clients, role_arn):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
    name = "fn-" + uuid.uuid4().hex[:6]
    clients["lambda"].create_function(FunctionName=name, Runtime="python3.11", Role=role_arn, Handler="app.handler",
                                      Code={"ZipFile": buf.getvalue()})
    check = check_lambda_target(clients["lambda"], clients["iam"], "dev", name, role_arn)
    assert check.passed and f"function {name} exists" in check.detail and "python3.11" in check.detail


def test_an_alarm_already_firing_is_reported_not_blocking_and_a_missing_one_fails(clients):
    cw = clients["cloudwatch"]
    names = [f"pf-{uuid.uuid4().hex[:8]}-{label}" for label in ("errors", "latency")]
    for name in names:
        cw.put_metric_alarm(AlarmName=name, Namespace="Slipway/Test", MetricName="m", Statistic="Sum", Period=60,
                            EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="fine")
    assert check_alarms(cw, "prod", names).detail == "2 alarm(s) exist, none in ALARM"
    cw.set_alarm_state(AlarmName=names[0], StateValue="ALARM", StateReason="5xx above 1")
    check = check_alarms(cw, "prod", names)
    assert check.passed and "ALREADY IN ALARM" in check.detail and f"{names[0]} (5xx above 1)" in check.detail
    check = check_alarms(cw, "prod", names + ["pf-nope"])
    assert not check.passed and check.ref == "alarm-missing"

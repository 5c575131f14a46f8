"""Synthetic traffic through a weighted Lambda alias, read back per version from CloudWatch, judged as a canary.

Runs against the in-process local AWS: invokes run each version's real code, alias weights are applied and
metrics land in moto's CloudWatch under [FunctionName, Resource, ExecutedVersion].
"""

from __future__ import annotations

import io
import uuid
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from slipway.verify.canary import judge
from slipway.verify.lambda_metrics import version_sample
from slipway.spec.schema import parse_rate
from slipway.verify.traffic import drive_lambda
from fakes import FakeClock

STABLE = "def handler(event, context):\n    return {'statusCode': 200}\n"
CANARY = (
    "def handler(event, context):\n"
    "    if event['i'] % 10 < 3:\n"
    "        raise RuntimeError('canary broken for %s' % event['i'])\n"
    "    return {'statusCode': 200}\n"
)



def zipped(code: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", code)
    return buf.getvalue()


@pytest.fixture
def split_alias(aws_endpoint, boto_session):
    """A function with v1 (always 200) and v2 (fails for i % 10 < 3); alias ``live`` on v1 with 50% to v2."""
    lam = boto_session.client("lambda", endpoint_url=aws_endpoint)
    iam = boto_session.client("iam", endpoint_url=aws_endpoint)
    try:
        role = iam.create_role(RoleName="canary-inputs-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="canary-inputs-role")["Role"]["Arn"]
    name = f"ci{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler",
                        Code={"ZipFile": zipped(STABLE)})
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=zipped(CANARY))
    v2 = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1,
                     RoutingConfig={"AdditionalVersionWeights": {v2: 0.5}})
    return lam, boto_session.client("cloudwatch", endpoint_url=aws_endpoint), name, v1, v2


def test_traffic_through_a_split_alias_feeds_a_failing_canary_verdict(split_alias):
    lam, cw, name, v1, v2 = split_alias
    clock = FakeClock()
    start = datetime.now(timezone.utc) - timedelta(seconds=2)
    events = [{"i": i} for i in range(10)]

    result = drive_lambda(lam, name, "live", events, rate_per_s=parse_rate("1000/s"), duration_s=0.2,
                          clock=clock, sleep=clock.sleep)
    end = datetime.now(timezone.utc) + timedelta(seconds=2)

    assert result.sent == 200
    assert set(result.by_version) == {v1, v2} and sum(result.by_version.values()) == 200
    assert result.errors > 0 and result.errors_by_version == {v2: result.errors}
    assert result.duration_s == pytest.approx(0.199)  # the last request was due at 199 ms on the fake clock

    stable = version_sample(cw, name, f"{name}:live", v1, start, end, period_s=1)
    canary = version_sample(cw, name, f"{name}:live", v2, start, end, period_s=1)
    assert (stable.requests, stable.errors) == (result.by_version[v1], 0)
    assert (canary.requests, canary.errors) == (result.by_version[v2], result.errors)
    assert stable.latencies_ms and canary.latencies_ms  # one per-second Average Duration per period with invokes

    verdict = judge(stable, canary)
    assert verdict.verdict == "FAIL"
    assert [m.metric for m in verdict.metrics if m.verdict == "FAIL"] == ["error_rate"]


def test_traffic_stops_at_max_requests_before_the_time_is_up(split_alias):
    lam, _, name, v1, v2 = split_alias
    clock = FakeClock()
    result = drive_lambda(lam, name, "live", [{"i": 9}], rate_per_s=10, duration_s=60, max_requests=3,
                          clock=clock, sleep=clock.sleep)
    assert result.sent == 3 and result.errors == 0
    assert clock.slept == pytest.approx([0.1, 0.1])  # paced at the rate, never all at once


def test_version_sample_of_a_version_without_traffic_is_empty(split_alias):
    _, cw, name, _, _ = split_alias
    now = datetime.now(timezone.utc)
    sample = version_sample(cw, name, f"{name}:live", "99", now - timedelta(minutes=5), now)
    assert (sample.requests, sample.errors, sample.latencies_ms) == (0, 0, [])


@pytest.mark.parametrize("text, per_s", [("20/s", 20.0), ("30/m", 0.5), (" 2.5 / s ", 2.5), ("1/m", 1 / 60)])
def test_parse_rate_reads_requests_per_second_or_minute(text, per_s):
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["20", "20/h", "0/s", "-1/s", "fast", ""])
def test_parse_rate_rejects_anything_else_in_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_rate(text)
    assert str(info.value) == f"traffic rate {text!r} is not N/s or N/m with N > 0 (for example '20/s' or '30/m')"

"""Alarm gates against the in-process local AWS (moto's CloudWatch).

moto stores alarms but never evaluates them, so these tests drive the states with set_alarm_state, as an
operator or AWS's evaluator would. What moto does differently from AWS, and how the tests cope:
- a new alarm starts in OK (AWS: INSUFFICIENT_DATA), so every test sets the starting state explicitly;
- StateTransitionedTimestamp is never returned, so the gate falls back to StateUpdatedTimestamp, which moto
  reports at millisecond resolution and moves on every set_alarm_state;
- AlarmNames is not limited to 100 and there are no pages (the unit tests cover both with a fake);
- PutCompositeAlarm is not implemented (HTTP 500), so the composite test skips itself while that lasts.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from slipway.verify.alarms import AlarmGate, snapshot
from slipway.core.errors import VerificationFailed


@pytest.fixture
def cw(aws_endpoint, boto_session):
    return boto_session.client("cloudwatch", endpoint_url=aws_endpoint)


@pytest.fixture
def make_alarm(cw):
    """Factory: ``make_alarm("api-5xx", "ALARM")`` → a unique alarm name, created and set to that state."""
    prefix = f"al{uuid.uuid4().hex[:8]}"

    def make(label: str, value: str = "OK") -> str:
        name = f"{prefix}-{label}"
        cw.put_metric_alarm(AlarmName=name, Namespace="Slipway/Test", MetricName=label, Statistic="Sum", Period=60,
                            EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        cw.set_alarm_state(AlarmName=name, StateValue=value, StateReason=f"test set {value}")
        return name

    return make


def set_state(cw, name: str, value: str, reason: str | None = None) -> datetime:
    cw.set_alarm_state(AlarmName=name, StateValue=value, StateReason=reason or f"test set {value}")
    return cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateUpdatedTimestamp"]


def set_state_after(cw, name: str, value: str, after: datetime, reason: str | None = None) -> None:
    """Set a state whose StateUpdatedTimestamp is strictly later than ``after``. moto stamps at millisecond
    resolution and every set_alarm_state takes a round trip of a few ms, so the first attempt almost always
    suffices; repeating (never sleeping) keeps the test exact on a machine fast enough to land in the same ms."""
    for _ in range(100):
        if set_state(cw, name, value, reason) > after:
            return
    raise AssertionError(f"StateUpdatedTimestamp of {name} did not move past {after}")


def test_an_alarm_already_in_alarm_before_the_release_does_not_fail_the_gate(cw, make_alarm):
    db_cpu = make_alarm("db-cpu", "ALARM")
    api = make_alarm("api-5xx", "OK")

    gate = AlarmGate.open(cw, [api, db_cpu])

    assert gate.check() == []
    assert gate.describe() == f"alarms: {api} OK; {db_cpu} ALARM (already before the release: ignored)"


def test_an_alarm_that_goes_from_ok_to_alarm_fails_the_gate(cw, make_alarm):
    api = make_alarm("api-5xx", "OK")
    gate = AlarmGate.open(cw, [api])
    set_state(cw, api, "ALARM", "Threshold Crossed: 1 datapoint [7.0] was greater than the threshold (1.0).")

    changes = gate.check()

    assert [(c.name, c.was, c.now, c.reason) for c in changes] == [
        (api, "OK", "ALARM", "Threshold Crossed: 1 datapoint [7.0] was greater than the threshold (1.0).")]
    assert changes[0].at == gate.last[api].updated_at
    assert gate.describe() == f"alarms: {api} OK→ALARM (new)"


def test_an_alarm_that_leaves_alarm_and_comes_back_after_the_snapshot_fails_the_gate(cw, make_alarm):
    db_cpu = make_alarm("db-cpu", "ALARM")
    gate = AlarmGate.open(cw, [db_cpu])
    snapped_at = gate.before[db_cpu].updated_at

    set_state_after(cw, db_cpu, "OK", snapped_at)
    assert gate.check() == []  # recovered during the bake: nothing to fail
    set_state_after(cw, db_cpu, "ALARM", gate.last[db_cpu].updated_at, "back again")

    changes = gate.check()
    assert [(c.was, c.now, c.reason, c.reentered) for c in changes] == [("ALARM", "ALARM", "back again", True)]
    assert changes[0].at > snapped_at


def test_insufficient_data_never_fails_but_insufficient_data_then_alarm_does(cw, make_alarm):
    quiet = make_alarm("quiet", "OK")
    fresh = make_alarm("fresh", "INSUFFICIENT_DATA")
    gate = AlarmGate.open(cw, [quiet, fresh])
    set_state(cw, quiet, "INSUFFICIENT_DATA")
    assert gate.check() == []

    set_state(cw, fresh, "ALARM")
    assert [(c.name, c.was, c.now) for c in gate.check()] == [(fresh, "INSUFFICIENT_DATA", "ALARM")]
    assert gate.describe() == f"alarms: {quiet} OK→INSUFFICIENT_DATA (no data: not judged); {fresh} INSUFFICIENT_DATA→ALARM (new)"


def test_a_missing_alarm_fails_the_gate_before_it_opens(cw, make_alarm):
    api = make_alarm("api-5xx", "ALARM")
    typo = api.replace("api-5xx", "api-5xxx")

    with pytest.raises(VerificationFailed) as info:
        AlarmGate.open(cw, [api, typo])

    assert str(info.value) == f"CloudWatch alarm(s) {typo} not found in us-east-1: create them or remove them from alarms in slipway.yaml"
    assert info.value.ref == "alarm-missing"


def test_more_than_100_alarms_are_read_in_batches_and_all_judged(cw, make_alarm):
    names = [make_alarm(f"a{i:03}", "OK") for i in range(120)]
    gate = AlarmGate.open(cw, names)
    assert list(gate.before) == names and {s.state for s in gate.before.values()} == {"OK"}

    set_state(cw, names[110], "ALARM")  # in the second batch

    assert [c.name for c in gate.check()] == [names[110]]
    assert list(gate.last) == names


def test_a_gate_reads_composite_alarms(aws_endpoint, boto_session, cw, make_alarm):
    child = make_alarm("child", "OK")
    composite = child.replace("child", "service-health")
    once = boto_session.client("cloudwatch", endpoint_url=aws_endpoint, config=Config(retries={"total_max_attempts": 1}))
    try:
        once.put_composite_alarm(AlarmName=composite, AlarmRule=f'ALARM("{child}")')
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 500:
            pytest.skip("moto does not implement PutCompositeAlarm (HTTP 500 NotImplementedError); "
                        "composite alarms are read as CompositeAlarms, covered with a fake in tests/unit/test_alarm_gate.py")
        raise
    cw.set_alarm_state(AlarmName=composite, StateValue="OK", StateReason="test set OK")  # no rule is evaluated
    gate = AlarmGate.open(cw, [child, composite])
    assert gate.before[composite].kind == "composite"
    cw.set_alarm_state(AlarmName=composite, StateValue="ALARM", StateReason="child in ALARM")
    assert [c.name for c in gate.check()] == [composite]


def test_snapshot_of_no_alarms_is_empty(cw):
    assert snapshot(cw, []) == {}

"""Alarm gates without AWS: the gate rule on hand-made states, and DescribeAlarms behaviour moto lacks
(the 100-name limit, pages, composite alarms only on request) through an in-memory fake."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from slipway.verify.alarms import AlarmGate, AlarmState, describe_gate, newly_alarming, snapshot
from slipway.core.errors import CredentialsError, VerificationFailed

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def state(name: str, value: str, at: datetime = T0, reason: str = "", transitioned: datetime | None = None) -> AlarmState:
    return AlarmState(name=name, state=value, updated_at=at, reason=reason, transitioned_at=transitioned)


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "DescribeAlarms")


class FakeCloudWatch:
    """DescribeAlarms as AWS documents it, where moto differs: at most 100 AlarmNames per call, results in
    pages (``page_size`` here, to force several), composite alarms only when AlarmTypes asks for them."""

    def __init__(self, region: str = "eu-west-1", page_size: int = 100) -> None:
        self.meta = SimpleNamespace(region_name=region)
        self.page_size = page_size
        self.alarms: dict[str, dict] = {}
        self.calls: list[dict] = []
        self.fail_with: Exception | None = None

    def declare(self, name: str, value: str = "OK", *, at: datetime = T0, kind: str = "MetricAlarm",
                reason: str = "Threshold Crossed", transitioned: datetime | None = None) -> "FakeCloudWatch":
        alarm = {"AlarmName": name, "StateValue": value, "StateUpdatedTimestamp": at, "StateReason": reason, "_type": kind}
        if transitioned:
            alarm["StateTransitionedTimestamp"] = transitioned
        self.alarms[name] = alarm
        return self

    def describe_alarms(self, **request) -> dict:
        self.calls.append(request)
        if self.fail_with:
            raise self.fail_with
        names = request["AlarmNames"]
        if len(names) > 100:
            raise client_error("ValidationError")
        types = request.get("AlarmTypes", ["MetricAlarm"])
        matching = [a for n, a in self.alarms.items() if n in names and a["_type"] in types]
        start = int(request.get("NextToken", 0))
        end = start + min(request.get("MaxRecords", 50), self.page_size)
        page = matching[start:end]
        reply = {
            "MetricAlarms": [_public(a) for a in page if a["_type"] == "MetricAlarm"],
            "CompositeAlarms": [_public(a) for a in page if a["_type"] == "CompositeAlarm"],
        }
        if end < len(matching):
            reply["NextToken"] = str(end)
        return reply


def _public(alarm: dict) -> dict:
    return {k: v for k, v in alarm.items() if k != "_type"}


# ---- the gate rule -----------------------------------------------------------------------------------------
def test_an_alarm_that_stayed_in_alarm_since_the_snapshot_does_not_fail():
    before = {"db-cpu": state("db-cpu", "ALARM")}
    assert newly_alarming(before, {"db-cpu": state("db-cpu", "ALARM")}) == []


def test_an_alarm_that_went_from_ok_to_alarm_fails():
    later = T0 + timedelta(minutes=3)
    changes = newly_alarming({"api-5xx": state("api-5xx", "OK")}, {"api-5xx": state("api-5xx", "ALARM", later, "5xx > 5")})
    assert [(c.name, c.was, c.now, c.reason, c.at, c.reentered) for c in changes] == [
        ("api-5xx", "OK", "ALARM", "5xx > 5", later, False)]


def test_an_alarm_that_left_alarm_and_came_back_after_the_snapshot_fails():
    later = T0 + timedelta(milliseconds=1)
    changes = newly_alarming({"db-cpu": state("db-cpu", "ALARM")}, {"db-cpu": state("db-cpu", "ALARM", later)})
    assert [(c.was, c.now, c.reentered) for c in changes] == [("ALARM", "ALARM", True)]


def test_the_transition_time_wins_over_the_update_time_when_cloudwatch_reports_both():
    # AWS moves StateUpdatedTimestamp when only the EvaluationState changes (e.g. PARTIAL_DATA) while the alarm
    # stays in ALARM: that must not look like a new ALARM episode.
    before = {"a": state("a", "ALARM", T0, transitioned=T0)}
    same_episode = {"a": state("a", "ALARM", T0 + timedelta(minutes=1), transitioned=T0)}
    new_episode = {"a": state("a", "ALARM", T0 + timedelta(minutes=2), transitioned=T0 + timedelta(minutes=2))}
    assert newly_alarming(before, same_episode) == []
    assert [c.at for c in newly_alarming(before, new_episode)] == [T0 + timedelta(minutes=2)]


def test_insufficient_data_never_fails_the_gate():
    before = {"a": state("a", "OK"), "b": state("b", "ALARM")}
    now = {"a": state("a", "INSUFFICIENT_DATA", T0 + timedelta(minutes=1)), "b": state("b", "INSUFFICIENT_DATA", T0 + timedelta(minutes=1))}
    assert newly_alarming(before, now) == []


def test_insufficient_data_then_alarm_fails_the_gate():
    changes = newly_alarming({"a": state("a", "INSUFFICIENT_DATA")}, {"a": state("a", "ALARM", T0 + timedelta(minutes=1))})
    assert [(c.was, c.now) for c in changes] == [("INSUFFICIENT_DATA", "ALARM")]


def test_an_alarm_missing_from_the_snapshot_fails_when_it_is_in_alarm():
    changes = newly_alarming({}, {"a": state("a", "ALARM")})
    assert [(c.name, c.was) for c in changes] == [("a", None)]


def test_describe_gate_gives_every_alarm_and_its_verdict_on_one_line():
    later = T0 + timedelta(minutes=5)
    before = {n: state(n, s) for n, s in [("api-5xx", "OK"), ("db-cpu", "ALARM"), ("queue", "ALARM"),
                                           ("latency", "OK"), ("lag", "OK"), ("disk", "ALARM")]}
    now = {
        "api-5xx": state("api-5xx", "ALARM", later),
        "db-cpu": state("db-cpu", "ALARM"),
        "queue": state("queue", "ALARM", later),
        "latency": state("latency", "OK"),
        "lag": state("lag", "INSUFFICIENT_DATA", later),
        "disk": state("disk", "OK", later),
    }
    assert describe_gate(before, now) == (
        "alarms: api-5xx OK→ALARM (new); db-cpu ALARM (already before the release: ignored); "
        "queue ALARM (re-entered at 2026-03-01T12:05:00Z, after the snapshot); latency OK; "
        "lag OK→INSUFFICIENT_DATA (no data: not judged); disk ALARM→OK"
    )


def test_describe_gate_without_alarms_says_none():
    assert describe_gate({}, {}) == "alarms: none"


# ---- reading CloudWatch ------------------------------------------------------------------------------------
def test_snapshot_asks_in_batches_of_100_names_and_follows_every_page():
    names = [f"alarm-{i:03}" for i in range(250)]
    cw = FakeCloudWatch(page_size=30)
    for name in reversed(names):
        cw.declare(name)
    cw.declare("alarm-042", "ALARM")

    states = snapshot(cw, names)

    assert list(states) == names  # in the order given, not CloudWatch's
    assert states["alarm-042"].state == "ALARM"
    assert [len(c["AlarmNames"]) for c in cw.calls if "NextToken" not in c] == [100, 100, 50]
    assert len(cw.calls) == 4 + 4 + 2  # 100 names in pages of 30, twice; then 50 names in two pages


def test_snapshot_reads_composite_alarms_too():
    cw = FakeCloudWatch().declare("api-5xx").declare("service-health", "ALARM", kind="CompositeAlarm")
    states = snapshot(cw, ["api-5xx", "service-health"])
    assert {n: (s.state, s.kind) for n, s in states.items()} == {"api-5xx": ("OK", "metric"), "service-health": ("ALARM", "composite")}
    assert cw.calls[0]["AlarmTypes"] == ["MetricAlarm", "CompositeAlarm"]


def test_snapshot_names_every_missing_alarm_in_one_line():
    cw = FakeCloudWatch().declare("api-5xx")
    with pytest.raises(VerificationFailed) as info:
        snapshot(cw, ["api-5xx", "api-5xxx", "db-cpu"])
    assert str(info.value) == ("CloudWatch alarm(s) api-5xxx, db-cpu not found in eu-west-1: "
                               "create them or remove them from alarms in slipway.yaml")
    assert info.value.ref == "alarm-missing"
    assert info.value.evidence == {"missing": ["api-5xxx", "db-cpu"], "region": "eu-west-1"}


def test_snapshot_keeps_reasons_on_one_line_and_short():
    cw = FakeCloudWatch().declare("a", "ALARM", reason="Threshold Crossed:\n  " + "x" * 500,
                                  at=datetime(2026, 3, 1, 12, 0))  # a naive timestamp is UTC
    reading = snapshot(cw, ["a"])["a"]
    assert reading.reason.startswith("Threshold Crossed: xxx") and len(reading.reason) == 200 and reading.reason.endswith("…")
    assert reading.updated_at == T0


def test_a_missing_permission_names_cloudwatch_describe_alarms():
    cw = FakeCloudWatch()
    cw.fail_with = client_error("AccessDenied", 403)
    with pytest.raises(VerificationFailed) as info:
        snapshot(cw, ["api-5xx"])
    assert str(info.value) == ("could not read CloudWatch alarms: AccessDenied: AccessDenied happened (alarms api-5xx): "
                               "check the caller may call cloudwatch:DescribeAlarms in this account and region")
    assert (info.value.ref, info.value.transient) == ("alarms-unavailable", False)
    assert isinstance(info.value.__cause__, ClientError)


def test_throttling_that_outlasts_the_retries_is_unavailable_and_transient():
    cw = FakeCloudWatch()
    cw.fail_with = client_error("Throttling", 400)
    with pytest.raises(VerificationFailed) as info:
        snapshot(cw, ["a", "b"])
    assert str(info.value) == ("could not read CloudWatch alarms: Throttling: Throttling happened (alarms a, b): "
                               "check the caller may call cloudwatch:DescribeAlarms in this account and region")
    assert (info.value.ref, info.value.transient) == ("alarms-unavailable", True)


def test_no_credentials_is_a_credentials_error():
    cw = FakeCloudWatch()
    cw.fail_with = NoCredentialsError()
    with pytest.raises(CredentialsError) as info:
        snapshot(cw, ["a"])
    assert info.value.ref == "credentials-missing"


# ---- the gate ----------------------------------------------------------------------------------------------
def test_a_gate_without_alarms_never_calls_cloudwatch():
    cw = FakeCloudWatch()
    gate = AlarmGate.open(cw, [])
    assert gate.check() == [] and gate.check() == []
    assert cw.calls == []
    assert gate.evidence() == {"names": [], "snapshot": {}, "last": None, "newly_alarming": [], "summary": "alarms: none"}


def test_gate_evidence_holds_the_snapshot_and_the_last_reading_as_json():
    cw = FakeCloudWatch().declare("api-5xx").declare("db-cpu", "ALARM")
    gate = AlarmGate.open(cw, ["api-5xx", "db-cpu"])
    assert gate.evidence()["last"] is None
    cw.declare("api-5xx", "ALARM", at=T0 + timedelta(minutes=1), reason="5xx > 5")

    assert [c.name for c in gate.check()] == ["api-5xx"]

    evidence = json.loads(json.dumps(gate.evidence()))
    assert evidence["snapshot"]["api-5xx"]["state"] == "OK"
    assert evidence["last"]["api-5xx"] == {"name": "api-5xx", "state": "ALARM", "updated_at": "2026-03-01T12:01:00+00:00",
                                           "transitioned_at": None, "reason": "5xx > 5", "kind": "metric"}
    assert evidence["newly_alarming"] == [{"name": "api-5xx", "was": "OK", "now": "ALARM", "reason": "5xx > 5",
                                           "at": "2026-03-01T12:01:00+00:00"}]
    assert evidence["summary"] == "alarms: api-5xx OK→ALARM (new); db-cpu ALARM (already before the release: ignored)"

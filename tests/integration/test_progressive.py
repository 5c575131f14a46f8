"""Canary deploys against the local AWS (in this process): real alias weights, real invokes of each version's
code, per-version metrics from CloudWatch, the verdict, the ledger. The bake schedule runs on a fake clock,
so a two-minute bake of synthetic traffic takes a few seconds of real invokes."""

from __future__ import annotations


import pytest

from fakes import FakeClock
from lambda_artifacts import artifact, lambda_context
from slipway.rollout import progressive
from slipway.rollout import staged
from slipway.verify.canary import CanaryThresholds
from slipway.core.errors import CanaryFailed
from slipway.targets.aws_lambda import alias_version
from slipway.core.models import ArtifactRef

GOOD = "def handler(event, context):\n    return {'statusCode': 200, 'v': %r}\n"
THIRTY_PERCENT_ERRORS = (
    "def handler(event, context):\n"
    "    if event.get('i', 0) % 10 < 3:\n"
    "        raise RuntimeError('canary broken for %s' % event.get('i'))\n"
    "    return {'statusCode': 200}\n"
)
SLOW = "import time\ndef handler(event, context):\n    time.sleep(0.25)\n    return {'statusCode': 200}\n"
CHECKS = [{"name": "health", "event": {"i": 5}, "expect": {"statusCode": 200}}]
EVENTS = [{"i": i} for i in range(10)]
# small windows: per side at least 12 requests and 3 one-second latency periods
THRESHOLDS = CanaryThresholds(min_requests=12, min_latency_periods=3)


@pytest.fixture
def env(aws_endpoint, boto_session):
    return lambda_context(aws_endpoint, boto_session, "pg", "run-A", CHECKS)


def release_all_at_once(ctx, art: ArtifactRef) -> str:
    deployed = staged.publish(ctx, art)
    seq = staged.shift_traffic(ctx, art, deployed)
    staged.verify(ctx, art, deployed.version, seq)
    return deployed.version


def settings(duration_s: float = 120, rate: float = 1.0, events=EVENTS, thresholds=THRESHOLDS) -> progressive.BakeSettings:
    return progressive.BakeSettings(duration_s=duration_s, thresholds=thresholds, traffic_items=list(events) if rate else [],
                                    traffic_rate_per_s=rate)


def canary(ctx, art: ArtifactRef, steps: list[int], bake: progressive.BakeSettings, clock: FakeClock, gate=None):
    """Run a canary the way the flow does; returns (version, started_seq, verdicts). FAIL raises."""
    deployed = staged.publish(ctx, art)
    stable = deployed.previous_version
    seq = progressive.begin_progressive(ctx, art, deployed, "canary", steps)
    verdicts = []
    for percent in progressive.bake_schedule(steps):
        progressive.shift(ctx, art, stable_version=stable, version=deployed.version, percent=percent, started_seq=seq)
        verdicts.append(progressive.bake(ctx, art, stable_version=stable, version=deployed.version, percent=percent, started_seq=seq,
                                         settings=bake, alarm_gate=gate, clock=progressive.Clock(clock=clock, sleep=clock.sleep)))
        if verdicts[-1].verdict != "PASS":
            return deployed.version, seq, verdicts
    progressive.promote(ctx, art, deployed.version, seq)
    staged.verify(ctx, art, deployed.version, seq)
    return deployed.version, seq, verdicts


def routing(ctx) -> dict:
    alias = ctx.lam.get_alias(FunctionName=ctx.target.settings.function_name, Name="live")
    return (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def kinds(ctx) -> list[str]:
    return [e.kind for e in ctx.ledger.entries(ctx.app, "prod")]


def test_a_clean_canary_is_promoted_step_by_step(env):
    release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    clock = FakeClock()
    version, _, verdicts = canary(env, artifact(env, "r2", GOOD % "2"), [30, 60, 100], settings(), clock)

    assert [v.verdict for v in verdicts] == ["PASS", "PASS"], [v.reason for v in verdicts]
    assert all(v.metrics[0].stable["requests"] >= 12 and v.metrics[0].canary["requests"] >= 12 for v in verdicts)
    assert sum(clock.slept) == pytest.approx(240, abs=1)  # two 2-minute bakes on the fake clock
    assert alias_version(env.lam, env.target.settings.function_name, "live") == version and routing(env) == {}
    assert kinds(env)[-7:] == ["deploy-started", "traffic-shifted", "canary-verdict", "traffic-shifted", "canary-verdict",
                               "deployed", "verified"]
    head = env.head()
    assert head.live.release_id == "r2" and head.canary is None and head.in_progress is None


def test_a_canary_failing_30_percent_of_requests_is_caught_and_traffic_returns_to_stable_at_once(env):
    stable = release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    clock = FakeClock()
    with pytest.raises(CanaryFailed) as info:
        canary(env, artifact(env, "r2", THIRTY_PERCENT_ERRORS), [50, 100], settings(), clock)

    verdict = info.value.evidence["verdict"]
    assert verdict["verdict"] == "FAIL" and "error_rate" in verdict["reason"]
    error_metric = next(m for m in verdict["metrics"] if m["metric"] == "error_rate")
    assert error_metric["canary"]["error_rate"] > 0.15 and error_metric["stable"]["errors"] == 0
    assert error_metric["p_value"] < 0.05
    assert routing(env) != {}  # still split: the rollback is what puts traffic back
    assert env.head().canary == {"version": "2", "percent": 50, "stable_version": stable}

    outcome = staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A", reason=info.value.message,
                                cause={"verdict": "FAIL", "reason": verdict["reason"]})
    assert outcome.to_release == "r1"
    assert alias_version(env.lam, env.target.settings.function_name, "live") == stable and routing(env) == {}
    last = env.ledger.entries(env.app, "prod")[-1]
    assert last.kind == "rolled-back" and last.detail["cause"]["verdict"] == "FAIL"
    assert last.detail["from_version"] == "2"  # the canary it left, not the stable primary the alias kept
    assert env.head().live.release_id == "r1" and env.head().canary is None


def test_a_latency_regression_is_caught(env):
    release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    clock = FakeClock()
    with pytest.raises(CanaryFailed) as info:
        canary(env, artifact(env, "r2", SLOW), [50, 100], settings(duration_s=40), clock)
    verdict = info.value.evidence["verdict"]
    latency = next(m for m in verdict["metrics"] if m["metric"] == "latency")
    error_rate = next(m for m in verdict["metrics"] if m["metric"] == "error_rate")
    assert latency["verdict"] == "FAIL" and latency["effect"] > 2, latency
    assert error_rate["verdict"] == "PASS"


def test_too_little_traffic_is_inconclusive_never_a_pass(env):
    release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    clock = FakeClock()
    version, _, verdicts = canary(env, artifact(env, "r2", GOOD % "2"), [10, 100], settings(duration_s=300, rate=0), clock)

    assert verdicts[-1].verdict == "INCONCLUSIVE"
    assert "too little traffic" in verdicts[-1].reason and "need ≥ 12 per side" in verdicts[-1].reason
    assert sum(clock.slept) == pytest.approx(300)  # the whole bake waited, on the fake clock
    assert routing(env) == {version: 0.1}  # nothing promoted; the caller decides (extend, pause or fail)
    entry = env.ledger.entries(env.app, "prod")[-1]
    assert entry.kind == "canary-verdict" and entry.detail["verdict"] == "INCONCLUSIVE"
    assert env.head().in_progress is not None


# ---- alarm gates ------------------------------------------------------------------------------------------
@pytest.fixture
def alarms(env):
    from slipway.verify.alarms import AlarmGate

    names = {}
    for role in ("incident", "errors"):
        name = f"{env.app}-{role}"
        env.cw.put_metric_alarm(AlarmName=name, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum", Period=60,
                                EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")
        env.cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="test set-up")
        names[role] = name
    return names, lambda: AlarmGate.open(env.cw, list(names.values()))


def test_an_alarm_already_in_alarm_before_the_release_does_not_block_it(env, alarms):
    names, open_gate = alarms
    release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    env.cw.set_alarm_state(AlarmName=names["incident"], StateValue="ALARM", StateReason="an incident in progress")
    gate = open_gate()  # the snapshot: the incident is already there
    version, _, verdicts = canary(env, artifact(env, "r2", GOOD % "2"), [50, 100], settings(), FakeClock(), gate)

    assert [v.verdict for v in verdicts] == ["PASS"]
    assert env.head().live.release_id == "r2"
    assert "incident ALARM (already before the release: ignored)" in gate.describe().replace(f"{env.app}-", "")


def test_an_alarm_newly_in_alarm_during_the_bake_fails_the_stage(env, alarms):
    names, open_gate = alarms
    stable = release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    gate = open_gate()
    clock = FakeClock()
    fired_at = clock.now + 40  # 40 s into a 2-minute bake the errors alarm goes off

    def fire(now: float) -> None:
        if now >= fired_at:
            env.cw.set_alarm_state(AlarmName=names["errors"], StateValue="ALARM", StateReason="Threshold Crossed")
            clock.on_sleep.clear()

    clock.on_sleep.append(fire)
    with pytest.raises(CanaryFailed) as info:
        canary(env, artifact(env, "r2", GOOD % "2"), [50, 100], settings(), clock, gate)

    assert info.value.ref == "alarm-fired"
    assert f"{names['errors']} (OK→ALARM)" in info.value.message
    assert sum(clock.slept) < 60  # stopped at the first check after the alarm (every 15 s), not at the end of the bake
    last = env.ledger.entries(env.app, "prod")[-1]
    assert last.kind == "alarm-fired" and last.detail["alarms"]["newly_alarming"][0]["name"] == names["errors"]
    staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A", reason=info.value.message)
    assert alias_version(env.lam, env.target.settings.function_name, "live") == stable and routing(env) == {}


def test_a_run_killed_mid_canary_is_reconciled_by_the_next_one_with_the_split_removed(env):
    stable = release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    r2 = artifact(env, "r2", GOOD % "2")
    deployed = staged.publish(env, r2)
    seq = progressive.begin_progressive(env, r2, deployed, "canary", [10, 100])
    progressive.shift(env, r2, stable_version=stable, version=deployed.version, percent=10, started_seq=seq)
    assert routing(env) == {deployed.version: 0.1}
    # ... the run is killed here. The next run (holding the lock) finds the in-progress record:
    env.run_id = "run-B"
    outcome = staged.reconcile(env)
    assert outcome is not None and outcome.to_release == "r1" and outcome.from_version == deployed.version
    assert alias_version(env.lam, env.target.settings.function_name, "live") == stable and routing(env) == {}
    head = env.head()
    assert head.in_progress is None and head.canary is None and head.live.release_id == "r1"
    assert kinds(env)[-2:] == ["rollback-started", "reconciled"]


def test_a_linear_release_moves_in_equal_steps_and_judges_each(env):
    from slipway.spec.schema import LinearStrategy, Strategy

    steps = Strategy(linear=LinearStrategy(step=40, interval=60)).steps()
    assert steps == [40, 80, 100]
    release_all_at_once(env, artifact(env, "r1", GOOD % "1"))
    clock = FakeClock()
    version, _, verdicts = canary(env, artifact(env, "r2", GOOD % "2"), steps, settings(duration_s=60, rate=2, thresholds=CanaryThresholds(min_requests=8, min_latency_periods=3)), clock)
    assert [v.verdict for v in verdicts] == ["PASS", "PASS"], [v.reason for v in verdicts]
    shifted = [e.detail["percent"] for e in env.ledger.entries(env.app, "prod") if e.kind == "traffic-shifted"]
    assert shifted == [40, 80]
    assert alias_version(env.lam, env.target.settings.function_name, "live") == version and routing(env) == {}

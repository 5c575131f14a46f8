"""A canary judged on the app's own metrics (slipway.yaml analysis.metrics) next to the built-in error rate and
latency: a real Prometheus scraping a test service's /metrics, and custom CloudWatch metrics on the local AWS. The
canary's code is healthy, so the built-in checks pass: only the custom metric can fail it. Bakes run on a fake
clock; each metric is read over the bake's real window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeClock
from lambda_artifacts import artifact, lambda_context
from slipway.core.errors import CanaryFailed
from slipway.rollout import progressive, staged
from slipway.spec.schema import CustomMetric
from slipway.verify.canary import CanaryThresholds
from slipway.verify.custom_metrics import CloudWatchSource, CustomCheck, PrometheusSource

GOOD = "def handler(event, context):\n    return {'statusCode': 200, 'v': %r}\n"
EVENTS = [{"i": i} for i in range(10)]
THRESHOLDS = CanaryThresholds(min_requests=12, min_latency_periods=3)


@pytest.fixture
def env(aws_endpoint, boto_session):
    return lambda_context(aws_endpoint, boto_session, "cm", "run-CM")


def two_versions_and_a_canary(ctx) -> tuple[str, str, int]:
    """v1 live and verified, v2 published with 50% of the traffic: (stable, canary, started_seq)."""
    v1 = artifact(ctx, "r1", GOOD % "1")
    deployed = staged.publish(ctx, v1)
    staged.verify(ctx, v1, deployed.version, staged.shift_traffic(ctx, v1, deployed))
    v2 = artifact(ctx, "r2", GOOD % "2")
    ctx.v2 = v2  # type: ignore[attr-defined]
    deployed = staged.publish(ctx, v2)
    seq = progressive.begin_progressive(ctx, v2, deployed, "canary", [50, 100])
    progressive.shift(ctx, v2, stable_version=deployed.previous_version, version=deployed.version, percent=50, started_seq=seq)
    return deployed.previous_version, deployed.version, seq


def bake(ctx, stable: str, canary: str, seq: int, checks: list[CustomCheck], window_start: datetime | None = None):
    settings = progressive.BakeSettings(duration_s=120, thresholds=THRESHOLDS, traffic_items=list(EVENTS), traffic_rate_per_s=1.0,
                                        custom=tuple(checks))
    clock = FakeClock()
    return progressive.bake(ctx, ctx.v2, stable_version=stable, version=canary, percent=50, started_seq=seq, settings=settings,
                            clock=progressive.Clock(clock=clock, sleep=clock.sleep), window_start=window_start)


def metric(**fields) -> CustomMetric:
    return CustomMetric.model_validate(fields)


def by_name(verdict: dict, name: str) -> dict:
    return next(m for m in verdict["metrics"] if m["metric"] == name)


def test_a_canary_is_failed_by_a_prometheus_query_although_its_error_rate_and_latency_pass(env, prometheus):
    stable, canary, seq = two_versions_and_a_canary(env)
    prometheus.service.set("checkout_failure_ratio", {"app": env.app, "version": stable}, 0.01)
    prometheus.service.set("checkout_failure_ratio", {"app": env.app, "version": canary}, 0.3)
    prometheus.wait_for(f'checkout_failure_ratio{{app="{env.app}",version="{canary}"}}', 0.3)
    check = CustomCheck(metric(name="checkout-failures", max_change=0.5, min_delta=0.01,
                               prometheus={"query": 'max(checkout_failure_ratio{app="{{app}}",version="{{version}}"})'}),
                        PrometheusSource(prometheus.url), env.app, "prod")

    with pytest.raises(CanaryFailed) as info:
        bake(env, stable, canary, seq, [check])

    verdict = info.value.evidence["verdict"]
    assert verdict["verdict"] == "FAIL" and "checkout-failures" in verdict["reason"]
    assert all(by_name(verdict, m)["verdict"] != "FAIL" for m in ("error_rate", "latency"))  # the code is healthy
    assert verdict["window"].get("ended_early")  # a custom FAIL ends the bake at the first look, like the built-in checks
    custom = by_name(verdict, "checkout-failures")
    assert custom["verdict"] == "FAIL" and custom["canary"] == {"value": 0.3} and custom["stable"] == {"value": 0.01}
    recorded = env.ledger.entries(env.app, "prod")[-1]
    assert recorded.kind == "canary-verdict" and by_name(recorded.detail, "checkout-failures")["verdict"] == "FAIL"


def test_the_same_prometheus_check_passes_a_canary_within_its_tolerance(env, prometheus):
    stable, canary, seq = two_versions_and_a_canary(env)
    prometheus.service.set("checkout_failure_ratio", {"app": env.app, "version": stable}, 0.02)
    prometheus.service.set("checkout_failure_ratio", {"app": env.app, "version": canary}, 0.025)
    prometheus.wait_for(f'checkout_failure_ratio{{app="{env.app}",version="{canary}"}}', 0.025)
    check = CustomCheck(metric(name="checkout-failures", max_change=0.5, threshold=0.05,
                               prometheus={"query": 'max(checkout_failure_ratio{app="{{app}}",version="{{version}}"})'}),
                        PrometheusSource(prometheus.url), env.app, "prod")

    verdict = bake(env, stable, canary, seq, [check])

    assert verdict.verdict == "PASS", verdict.reason
    assert by_name(verdict.model_dump(), "checkout-failures")["canary"] == {"value": 0.025}


def test_a_canary_is_failed_by_a_cloudwatch_custom_metric(env):
    stable, canary, seq = two_versions_and_a_canary(env)
    now = datetime.now(timezone.utc)
    for version, failures in ((stable, 0.0), (canary, 9.0)):  # what each version's code published while it served
        env.cw.put_metric_data(Namespace="Shop/Checkout", MetricData=[{
            "MetricName": "PaymentFailures", "Value": failures, "Timestamp": now,
            "Dimensions": [{"Name": "App", "Value": env.app}, {"Name": "Version", "Value": version}]}])
    check = CustomCheck(metric(name="payment-failures", threshold=3, cloudwatch={
        "namespace": "Shop/Checkout", "metric": "PaymentFailures", "stat": "Sum", "period": 60,
        "dimensions": {"App": "{{app}}", "Version": "{{version}}"}}), CloudWatchSource(env.cw), env.app, "prod")

    with pytest.raises(CanaryFailed) as info:
        bake(env, stable, canary, seq, [check], window_start=now - timedelta(seconds=30))

    custom = by_name(info.value.evidence["verdict"], "payment-failures")
    assert custom["verdict"] == "FAIL" and custom["canary"] == {"value": 9.0}
    assert "above the threshold 3" in custom["reason"]


def test_missing_custom_data_is_inconclusive_never_a_pass(env, prometheus):
    stable, canary, seq = two_versions_and_a_canary(env)
    checks = [
        CustomCheck(metric(name="no-such-series", threshold=1,
                           prometheus={"query": 'sum(never_exported_total{app="{{app}}",version="{{version}}"})'}),
                    PrometheusSource(prometheus.url), env.app, "prod"),
        CustomCheck(metric(name="no-datapoints", max_change=0.1, cloudwatch={
            "namespace": "Shop/Checkout", "metric": "NeverPublished", "stat": "Average",
            "dimensions": {"Version": "{{version}}"}}), CloudWatchSource(env.cw), env.app, "prod"),
        CustomCheck(metric(name="server-down", threshold=1, prometheus={"query": 'up{version="{{version}}"}'}),
                    PrometheusSource("http://127.0.0.1:9", timeout_s=2), env.app, "prod"),
    ]

    verdict = bake(env, stable, canary, seq, checks)

    assert verdict.verdict == "INCONCLUSIVE", verdict.reason
    found = {m.metric: m for m in verdict.metrics}
    assert [found[m].verdict for m in ("error_rate", "latency")] == ["PASS", "PASS"]
    assert all(found[m].verdict == "INCONCLUSIVE" for m in ("no-such-series", "no-datapoints", "server-down"))
    assert "no data for the canary" in found["no-such-series"].reason and "no data for the canary" in found["no-datapoints"].reason
    assert "could not be read" in found["server-down"].reason

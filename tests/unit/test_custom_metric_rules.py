"""The rules that judge one of the app's own metrics (slipway.verify.custom_metrics.decide) and what slipway.yaml
accepts for them: each rule by itself, in both directions."""

from __future__ import annotations

import pytest

from slipway.core.errors import SpecError
from slipway.spec.loading import parse_spec
from slipway.spec.schema import CustomMetric
from slipway.verify.custom_metrics import _prom_value, MetricUnavailable, decide, fill_placeholders

Q = {"prometheus": {"query": 'sum(rate(x{version="{{version}}"}[{{window}}]))'}}


def m(**fields) -> CustomMetric:
    return CustomMetric.model_validate({"name": "m", **Q, **fields})


def judged(metric: CustomMetric, stable, canary):
    return decide(metric, stable, canary, "1", "2", {})


@pytest.mark.parametrize("direction, canary, expected", [
    ("higher-is-worse", 5.1, "FAIL"), ("higher-is-worse", 5.0, "PASS"), ("higher-is-worse", 0.0, "PASS"),
    ("lower-is-worse", 4.9, "FAIL"), ("lower-is-worse", 5.0, "PASS"), ("lower-is-worse", 99.0, "PASS"),
])
def test_a_threshold_fails_the_canary_only_past_it_in_the_worse_direction(direction, canary, expected):
    assert judged(m(threshold=5, direction=direction), None, canary).verdict == expected


@pytest.mark.parametrize("direction, stable, canary, expected", [
    ("higher-is-worse", 10, 12.1, "FAIL"), ("higher-is-worse", 10, 11.9, "PASS"), ("higher-is-worse", 10, 1, "PASS"),
    ("lower-is-worse", 100, 79, "FAIL"), ("lower-is-worse", 100, 81, "PASS"), ("lower-is-worse", 100, 500, "PASS"),
])
def test_max_change_compares_the_canary_with_stable_in_the_worse_direction(direction, stable, canary, expected):
    verdict = judged(m(max_change=0.2, direction=direction), stable, canary)
    assert verdict.verdict == expected, verdict.reason
    assert verdict.stable == {"value": stable} and verdict.canary == {"value": canary}


def test_min_delta_keeps_noise_near_zero_from_failing_a_canary():
    assert judged(m(max_change=0.2), 0.0, 0.004).verdict == "FAIL"  # anything above zero is "infinitely" worse …
    assert judged(m(max_change=0.2, min_delta=0.01), 0.0, 0.004).verdict == "PASS"  # … unless it is within the noise
    assert judged(m(max_change=0.2, min_delta=0.01), 0.0, 0.05).verdict == "FAIL"


def test_no_data_is_inconclusive_never_a_pass():
    assert judged(m(threshold=5), None, None).verdict == "INCONCLUSIVE"
    assert judged(m(max_change=0.2), None, 1.0).verdict == "INCONCLUSIVE"  # nothing to compare with
    assert judged(m(max_change=0.2, threshold=5), None, 9.0).verdict == "FAIL"  # … but a broken threshold needs no stable


def test_placeholders_are_filled_and_promql_braces_are_left_alone():
    text = 'rate(x{app="{{app}}",version="{{ version }}"}[{{window}}])'
    assert fill_placeholders(text, {"app": "a", "version": "7", "window": "300s"}) == 'rate(x{app="a",version="7"}[300s])'


def test_a_prometheus_answer_of_several_series_or_a_range_is_refused_with_the_fix():
    one = {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.5"]}]}
    assert _prom_value(one) == 0.5
    assert _prom_value({"resultType": "vector", "result": []}) is None
    assert _prom_value({"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}) is None
    with pytest.raises(MetricUnavailable, match="aggregate it to one"):
        _prom_value({"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1, "1"]}, {"metric": {"a": "2"}, "value": [1, "2"]}]})
    with pytest.raises(MetricUnavailable, match="instant query"):
        _prom_value({"resultType": "matrix", "result": []})


BASE = """app: shop
artifact: {type: lambda-zip, source: src, handler: app.handler}
environments:
  - name: prod
"""


@pytest.mark.parametrize("env, message", [
    ("    strategy: {canary: {steps: [50, 100], bake: 1m}}\n    analysis: {metrics: [{name: m, threshold: 1, prometheus: {query: 'sum(x)'}}]}\n",
     "must select one version with {{version}}"),
    ("    strategy: {canary: {steps: [50, 100], bake: 1m}}\n    analysis: {metrics: [{name: m, threshold: 1, prometheus: {query: 'x{v=\"{{verison}}\"}'}}]}\n",
     "unknown placeholder {{verison}}"),
    ("    strategy: {canary: {steps: [50, 100], bake: 1m}}\n    analysis: {metrics: [{name: m, prometheus: {query: 'x{v=\"{{version}}\"}'}}]}\n",
     "give threshold"),
    ("    analysis: {metrics: [{name: m, threshold: 1, prometheus: {query: 'x{v=\"{{version}}\"}'}}]}\n",
     "deploys all-at-once"),
    ("    strategy: {canary: {steps: [50, 100], bake: 1m}}\n    analysis: {metrics: [{name: m, threshold: 1, cloudwatch: {namespace: S, expression: 'a', metrics: {a: {namespace: S, metric: A, dimensions: {V: '{{version}}'}}}}}]}\n",
     "expression names its inputs"),
    ("    hooks: {before_traffic: [{function: f, webhook: {url: 'https://h/x'}}]}\n", "either function"),
    ("    hooks: {after_traffic: [{webhook: {url: 'https://user:pw@h/x'}}]}\n", "url"),
    ("    hooks: {during_bake: [{webhook: {url: 'https://h/x'}}]}\n", "during_bake runs at each canary"),
])
def test_a_malformed_metric_or_hook_is_one_line_naming_the_fix(env, message):
    with pytest.raises(SpecError) as info:
        parse_spec(BASE + env)
    assert message in str(info.value) and "\n" not in str(info.value).strip()

"""The canary verdict: seeded samples only, so every number below is reproducible."""

import numpy as np
import pytest

from slipway.verify.canary import (
    CanaryThresholds,
    SideSample,
    judge,
    judge_error_rate,
    judge_latency,
)

T = CanaryThresholds()


def side(rng, requests, error_rate, median_ms=100.0, slowdown=1.0, latencies=None) -> SideSample:
    """Errors ~ Binomial(requests, error_rate); latencies ~ lognormal around median_ms, one per request."""
    n_lat = requests if latencies is None else latencies
    lat = rng.lognormal(np.log(median_ms), 0.5, n_lat) * slowdown
    return SideSample(requests=requests, errors=int(rng.binomial(requests, error_rate)), latencies_ms=lat.tolist())


def by_metric(verdict):
    return {m.metric: m for m in verdict.metrics}


def test_a_clean_canary_passes():
    rng = np.random.default_rng(1)
    v = judge(side(rng, 2000, 0.01), side(rng, 2000, 0.01))
    assert v.verdict == "PASS"
    assert [m.verdict for m in v.metrics] == ["PASS", "PASS"]
    assert v.reason.startswith("passed on all: error_rate: canary error rate ")


def test_a_thirty_percent_error_canary_fails_on_error_rate():
    rng = np.random.default_rng(2)
    v = judge(side(rng, 2000, 0.01), side(rng, 2000, 0.30))
    err = by_metric(v)["error_rate"]
    assert v.verdict == "FAIL" and err.verdict == "FAIL"
    assert by_metric(v)["latency"].verdict == "PASS"
    assert v.reason.startswith("failed on error_rate: canary error rate ")
    assert err.p_value < 1e-6
    assert err.effect > 0.25
    assert err.threshold["test"] == "two-proportion z-test (pooled, one-sided)"


def test_a_latency_regression_fails_on_latency():
    rng = np.random.default_rng(3)
    v = judge(side(rng, 2000, 0.01), side(rng, 2000, 0.01, slowdown=1.6))
    lat = by_metric(v)["latency"]
    assert v.verdict == "FAIL" and lat.verdict == "FAIL"
    assert v.reason.startswith("failed on latency: canary median ")
    assert lat.p_value < 1e-6
    assert 1.5 < lat.effect < 1.7
    assert lat.canary["samples"] == 2000 and lat.canary["p95_ms"] > lat.canary["median_ms"]


@pytest.mark.parametrize("canary_error_rate", [0.01, 1.0])
def test_too_little_traffic_is_inconclusive_even_for_a_bad_canary(canary_error_rate):
    rng = np.random.default_rng(4)
    v = judge(side(rng, 30, 0.01), side(rng, 30, canary_error_rate))
    assert v.verdict == "INCONCLUSIVE"
    assert [m.verdict for m in v.metrics] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert by_metric(v)["error_rate"].reason == (
        "too little traffic: stable 30 requests, canary 30 requests (need ≥ 50 per side)"
    )
    assert by_metric(v)["latency"].reason == "too few latency samples: stable 30, canary 30 (need ≥ 50 per side)"
    assert v.reason.startswith("inconclusive on error_rate: too little traffic: stable 30 requests, ")
    assert "; latency: too few latency samples: stable 30, canary 30" in v.reason


def test_a_significant_but_tiny_increase_on_huge_traffic_passes():
    rng = np.random.default_rng(5)
    stable = SideSample(requests=200_000, errors=2_000, latencies_ms=side(rng, 2000, 0).latencies_ms)
    canary = SideSample(requests=200_000, errors=2_400, latencies_ms=side(rng, 2000, 0).latencies_ms)
    err = judge_error_rate(stable, canary, T)
    assert err.verdict == "PASS"
    assert err.p_value < 1e-6  # real and significant...
    assert err.reason.endswith("but the increase +0.20 pp is within the +1.00 pp threshold")  # ...but small
    assert judge(stable, canary).verdict == "PASS"


def test_a_large_but_noisy_increase_passes_as_not_significant():
    """The documented choice: with enough requests, an increase we can't tell from noise is a PASS."""
    stable = SideSample(requests=60, errors=0, latencies_ms=[])
    canary = SideSample(requests=60, errors=3, latencies_ms=[])
    err = judge_error_rate(stable, canary, T)
    assert err.verdict == "PASS"
    assert err.threshold["test"] == "Fisher exact (one-sided)"  # expected error counts are < 5
    assert err.effect == pytest.approx(0.05)
    assert err.reason == (
        "canary error rate 5.00% vs stable 0.00% (+5.00 pp, tolerated +1.00 pp): not significant (p=0.122 ≥ 0.05)"
    )


def test_zero_errors_on_both_sides_pass_with_p_one():
    empty = SideSample(requests=500, errors=0, latencies_ms=[])
    err = judge_error_rate(empty, empty, T)
    assert (err.verdict, err.p_value, err.effect) == ("PASS", 1.0, 0.0)
    assert err.reason == "no errors on either side (stable 0/500, canary 0/500)"


@pytest.mark.parametrize("missing", ["canary", "both"])
def test_missing_latency_data_is_inconclusive(missing):
    rng = np.random.default_rng(6)
    stable = side(rng, 2000, 0.01, latencies=0 if missing == "both" else None)
    canary = side(rng, 2000, 0.01, latencies=0)
    v = judge(stable, canary)
    assert v.verdict == "INCONCLUSIVE"
    assert by_metric(v)["error_rate"].verdict == "PASS"
    lat = by_metric(v)["latency"]
    assert lat.verdict == "INCONCLUSIVE" and lat.p_value is None
    assert lat.reason.startswith("no latency data: stable ")
    assert v.reason.startswith("inconclusive on latency: no latency data: stable ")


def test_a_failing_metric_outranks_an_inconclusive_one():
    rng = np.random.default_rng(7)
    v = judge(side(rng, 2000, 0.01), side(rng, 2000, 0.30, latencies=0))
    assert [m.verdict for m in v.metrics] == ["FAIL", "INCONCLUSIVE"]
    assert v.verdict == "FAIL" and v.reason.startswith("failed on error_rate: canary error rate ")


def test_identical_latencies_do_not_fail():
    flat = SideSample(requests=100, errors=0, latencies_ms=[5.0] * 100)
    lat = judge_latency(flat, flat, T)
    assert (lat.verdict, lat.p_value, lat.effect) == ("PASS", 1.0, 1.0)


@pytest.mark.parametrize(
    "sample, message",
    [
        (SideSample(requests=10, errors=11, latencies_ms=[]), "canary sample: errors (11) exceed requests (10)"),
        (SideSample(requests=-1, errors=0, latencies_ms=[]), "canary sample: requests must be >= 0, got -1"),
        (SideSample(requests=5, errors=-2, latencies_ms=[]), "canary sample: errors must be >= 0, got -2"),
        (SideSample(requests=5, errors=0, latencies_ms=[1.0, float("nan")]),
         "canary sample: latencies must be finite and >= 0 ms, got nan"),
        (SideSample(requests=5, errors=0, latencies_ms=[float("inf")]),
         "canary sample: latencies must be finite and >= 0 ms, got inf"),
        (SideSample(requests=5, errors=0, latencies_ms=[-3.0]),
         "canary sample: latencies must be finite and >= 0 ms, got -3.0"),
    ],
)
def test_invalid_samples_are_refused_with_a_one_line_message(sample, message):
    good = SideSample(requests=100, errors=1, latencies_ms=[1.0] * 100)
    for check in (judge_error_rate, judge_latency):
        with pytest.raises(ValueError) as info:
            check(good, sample, T)
        assert str(info.value) == message


def test_thresholds_are_range_checked():
    with pytest.raises(ValueError):
        CanaryThresholds(error_alpha=1.5)
    with pytest.raises(ValueError):
        CanaryThresholds(min_requests=0)


def test_markdown_shows_samples_p_values_effects_and_the_reason():
    rng = np.random.default_rng(2)
    v = judge(side(rng, 2000, 0.01), side(rng, 1800, 0.30), window={"start": "12:00", "end": "12:10"})
    md = v.markdown()
    err, lat = v.metrics
    assert md.startswith("## Canary verdict: **FAIL**\n")
    assert v.reason in md
    assert "Window: start=12:00, end=12:10" in md
    assert "| Metric | Verdict | Stable | Canary | p-value | Effect | Threshold | Reason |" in md
    assert f"requests=2000, errors={err.stable['errors']}" in md
    assert f"requests=1800, errors={err.canary['errors']}" in md
    assert f"samples=2000, median_ms={lat.stable['median_ms']:.4g}" in md
    for m in v.metrics:
        assert f"| {m.p_value:.3g} | {m.effect:.4g} |" in md
    assert "alpha=0.05, max_increase=0.01" in md
    assert md.count("\n| ") == 1 + 2  # header + one row per metric


def _trials(canary_error_rate, t, seed, n=200):
    rng = np.random.default_rng(seed)
    return [judge(side(rng, 2000, 0.01), side(rng, 2000, canary_error_rate), t) for _ in range(n)]


def test_good_versus_good_fails_at_most_about_alpha():
    fails = sum(v.verdict == "FAIL" for v in _trials(0.01, T, seed=10))
    assert fails <= 10  # 5% of 200; with the effect-size gates it should be ~0
    # The tests themselves are calibrated: with no effect tolerance, each metric fails ≈ alpha of the time.
    strict = CanaryThresholds(max_error_rate_increase=0.0, max_latency_increase_ratio=1.0)
    runs = _trials(0.01, strict, seed=11)
    for metric in ("error_rate", "latency"):
        assert sum(by_metric(v)[metric].verdict == "FAIL" for v in runs) <= 16  # ≤ 8% of 200


def test_a_thirty_percent_error_canary_fails_at_least_99_percent_of_the_time():
    runs = _trials(0.30, T, seed=12)
    fails = sum(v.verdict == "FAIL" and by_metric(v)["error_rate"].verdict == "FAIL" for v in runs)
    assert fails >= 198

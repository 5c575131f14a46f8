"""The canary verdict: compare the canary with stable over the same window → PASS, FAIL or INCONCLUSIVE.

Plain functions over counts and latency samples; no Prefect, no clock, no I/O. The evidence (samples per
side, rates, medians/p95, p-values, effect sizes, thresholds) travels with every verdict.

Decision rules, per metric. Like Kayenta's NetflixACAJudge (Mann-Whitney, then an ``effectSize``
``allowedIncrease`` check), a metric FAILs only when the canary is worse *significantly* (one-sided
p < alpha) AND *by more than the tolerated effect size*:

1. Missing or thin data is INCONCLUSIVE, never PASS: fewer than ``min_requests`` requests on either side
   (error rate) or fewer than ``min_requests`` latency observations (latency; none at all is reported as
   "no latency data"). The reason carries the counts. Unlike Kayenta, where NODATA can pass a non-critical
   metric, both metrics here are critical. INCONCLUSIVE maps to Argo Rollouts' "Inconclusive" phase: pause
   and gather more traffic; don't promote, don't roll back yet.
2. Significant and above the tolerated effect → FAIL.
3. Significant but the effect is within the tolerance → PASS. On huge traffic a tiny real difference
   (1.0% vs 1.2%) is significant but not worth a rollback.
4. Not significant → PASS, whatever the point estimate, with "not significant" and the p-value in the
   reason. With at least ``min_requests`` per side, "we can't tell them apart" counts as a pass (Kayenta
   does the same). ``min_requests`` guards against noise, so raise it to get more power. A canary that is
   broken everywhere still fails, because its effect is both large and significant.

Error rate: one-sided test of "canary error rate > stable error rate". Zero errors on both sides → PASS,
p = 1. Otherwise a pooled two-proportion z-test (p = ``norm.sf(z)``) when every expected cell of the 2x2
table is ≥ 5, the usual validity condition for the normal approximation. Below that we use Fisher's
exact test (``fisher_exact(alternative="greater")``): it is exact at any size and costs O(n). Boschloo's
test is more powerful but builds an (n1+1) x (n2+1) table grid. That took ~0.2 s at 2,000 requests per
side in our tests, and it is out of reach on heavy traffic with rare errors, which is exactly where
expected counts are small. Fisher is conservative at small counts, so an "is it significant" call leans
towards PASS there. Effect = canary rate − stable rate (absolute).

Latency: one-sided Mann-Whitney U against the tolerance, ``mannwhitneyu(canary, stable * max_ratio,
alternative="greater")``: "is the canary slower than stable by more than the tolerated ratio?" (with
max_ratio 1.0 this is the plain test). Effect = median(canary) / median(stable). Latencies are per request
(proxy logs) or per-period averages (CloudWatch); per-period samples need ``min_latency_periods`` per side.

Overall: FAIL if any metric FAILs; else INCONCLUSIVE if any is INCONCLUSIVE; else PASS. The reason names
the metrics that decided it and their numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
MIN_EXPECTED_FOR_Z = 5.0  # textbook validity condition for the normal approximation of a 2x2 table


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class CanaryThresholds(_Model):
    """When a canary fails. Later configurable per environment from slipway.yaml."""

    min_requests: int = Field(50, ge=1, description="Per side; fewer → INCONCLUSIVE.")
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="Tolerated absolute increase.")
    error_alpha: float = Field(0.05, gt=0, lt=1, description="One-sided significance, error rate.")
    latency_alpha: float = Field(0.05, gt=0, lt=1, description="One-sided significance, Mann-Whitney U.")
    max_latency_increase_ratio: float = Field(1.2, gt=0, description="Tolerated canary/stable median ratio.")
    min_latency_periods: int = Field(5, ge=1, description="Per side, when latencies are per-period aggregates (CloudWatch).")


class SideSample(_Model):
    """One side (stable or canary) over the window. Validated by the judge_* functions, with a one-line message."""

    requests: int
    errors: int
    latencies_ms: list[float]
    latency_unit: Literal["request", "period"] = "request"  # per request (proxy logs) or per-period averages (CloudWatch)


class MetricVerdict(_Model):
    metric: str
    verdict: Verdict
    reason: str
    stable: dict
    canary: dict
    p_value: float | None
    effect: float | None
    threshold: dict


class CanaryVerdict(_Model):
    verdict: Verdict
    reason: str
    metrics: list[MetricVerdict]
    window: dict | None = None

    def markdown(self) -> str:
        """The evidence as a markdown table (for a Prefect markdown artifact)."""
        lines = [f"## Canary verdict: **{self.verdict}**", "", self.reason, ""]
        if self.window:
            lines += [f"Window: {_fmt_dict(self.window)}", ""]
        lines += [
            "| Metric | Verdict | Stable | Canary | p-value | Effect | Threshold | Reason |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in self.metrics:
            cells = [m.metric, f"**{m.verdict}**", _fmt_dict(m.stable), _fmt_dict(m.canary), _p(m.p_value),
                     _fmt(m.effect), _fmt_dict(m.threshold), m.reason]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"


def judge_error_rate(stable: SideSample, canary: SideSample, t: CanaryThresholds) -> MetricVerdict:
    _validate(stable, "stable")
    _validate(canary, "canary")
    s_rate = stable.errors / stable.requests if stable.requests else None
    c_rate = canary.errors / canary.requests if canary.requests else None
    evidence = dict(
        metric="error_rate",
        stable={"requests": stable.requests, "errors": stable.errors, "error_rate": s_rate},
        canary={"requests": canary.requests, "errors": canary.errors, "error_rate": c_rate},
        threshold={"alpha": t.error_alpha, "max_increase": t.max_error_rate_increase, "test": "none"},
    )
    if min(stable.requests, canary.requests) < t.min_requests:
        why = (f"too little traffic: stable {stable.requests} requests, canary {canary.requests} requests "
               f"(need ≥ {t.min_requests} per side)")
        return MetricVerdict(verdict="INCONCLUSIVE", reason=why, p_value=None, effect=None, **evidence)
    effect = c_rate - s_rate
    if stable.errors == 0 and canary.errors == 0:
        why = f"no errors on either side (stable 0/{stable.requests}, canary 0/{canary.requests})"
        return MetricVerdict(verdict="PASS", reason=why, p_value=1.0, effect=0.0, **evidence)
    p, test = _error_p_value(stable, canary)
    evidence["threshold"]["test"] = test
    seen = (f"canary error rate {c_rate:.2%} vs stable {s_rate:.2%} "
            f"({_pp(effect)}, tolerated {_pp(t.max_error_rate_increase)})")
    verdict, why = _decide(seen, p, t.error_alpha, effect > t.max_error_rate_increase,
                           f"the increase {_pp(effect)} is within the {_pp(t.max_error_rate_increase)} threshold")
    return MetricVerdict(verdict=verdict, reason=why, p_value=p, effect=effect, **evidence)


def judge_latency(stable: SideSample, canary: SideSample, t: CanaryThresholds) -> MetricVerdict:
    _validate(stable, "stable")
    _validate(canary, "canary")
    import numpy as np  # numpy (and scipy) only when a canary is judged

    s, c = np.asarray(stable.latencies_ms, dtype=float), np.asarray(canary.latencies_ms, dtype=float)
    evidence = dict(
        metric="latency",
        stable=_latency_summary(s),
        canary=_latency_summary(c),
        threshold={"alpha": t.latency_alpha, "max_ratio": t.max_latency_increase_ratio,
                   "test": "Mann-Whitney U (one-sided: canary greater than stable × max_ratio)",
                   "unit": "per-period average" if "period" in (stable.latency_unit, canary.latency_unit) else "per request"},
    )
    if min(s.size, c.size) == 0:
        why = f"no latency data: stable {s.size} samples, canary {c.size} samples"
        return MetricVerdict(verdict="INCONCLUSIVE", reason=why, p_value=None, effect=None, **evidence)
    periods = "period" in (stable.latency_unit, canary.latency_unit)
    needed = t.min_latency_periods if periods else t.min_requests
    if min(s.size, c.size) < needed:
        unit = "per-period averages" if periods else "latency samples"
        why = f"too few {unit}: stable {s.size}, canary {c.size} (need ≥ {needed} per side)"
        return MetricVerdict(verdict="INCONCLUSIVE", reason=why, p_value=None, effect=None, **evidence)
    # Tested against the tolerance itself: is the canary slower than stable *times the tolerated ratio*?
    # Testing against plain stable fails a canary that is really ×1.1 (within a ×1.2 tolerance) whenever its
    # noisy sample median lands above ×1.2: 10% of windows at 120 canary requests (bench/canary_bench.py).
    from scipy import stats  # imported when a canary is judged: it costs ~0.5 s, and most commands never judge one

    p = float(stats.mannwhitneyu(c, s * t.max_latency_increase_ratio, alternative="greater").pvalue)
    p = 1.0 if math.isnan(p) else p  # all observations tied: no evidence either way
    s_med, c_med = float(np.median(s)), float(np.median(c))
    ratio = c_med / s_med if s_med > 0 else (1.0 if c_med == 0 else math.inf)
    limit = t.max_latency_increase_ratio
    seen = f"canary median {c_med:.1f} ms vs stable {s_med:.1f} ms (×{ratio:.2f}, tolerated ×{limit:.2f})"
    verdict, why = _decide(seen, p, t.latency_alpha, ratio > limit,
                           f"the ratio ×{ratio:.2f} is within the ×{limit:.2f} threshold")
    return MetricVerdict(verdict=verdict, reason=why, p_value=p, effect=ratio, **evidence)


def judge(
    stable: SideSample,
    canary: SideSample,
    t: CanaryThresholds = CanaryThresholds(),
    window: dict | None = None,
    extra: list[MetricVerdict] | None = None,
) -> CanaryVerdict:
    """``extra``: verdicts of the app's own metrics (slipway.verify.custom_metrics), judged with the built-in two."""
    metrics = [judge_error_rate(stable, canary, t), judge_latency(stable, canary, t), *(extra or [])]
    for verdict, word in (("FAIL", "failed on "), ("INCONCLUSIVE", "inconclusive on "), ("PASS", "passed on all: ")):
        deciding = [m for m in metrics if m.verdict == verdict]
        if deciding:
            reason = word + "; ".join(f"{m.metric}: {m.reason}" for m in deciding)
            return CanaryVerdict(verdict=verdict, reason=reason, metrics=metrics, window=window)
    raise AssertionError("unreachable: every metric has a verdict")


def _decide(seen: str, p: float, alpha: float, effect_too_big: bool, within: str) -> tuple[Verdict, str]:
    if p >= alpha:
        return "PASS", f"{seen}: not significant (p={p:.3g} ≥ {alpha:g})"
    if effect_too_big:
        return "FAIL", f"{seen}: significant (p={p:.3g} < {alpha:g}) and above the threshold"
    return "PASS", f"{seen}: significant (p={p:.3g} < {alpha:g}) but {within}"


def _error_p_value(stable: SideSample, canary: SideSample) -> tuple[float, str]:
    """One-sided p-value for "canary error rate > stable error rate"; at least one error exists."""
    from scipy import stats
    n_s, n_c = stable.requests, canary.requests
    pooled = (stable.errors + canary.errors) / (n_s + n_c)
    expected = min(pooled * n_s, pooled * n_c, (1 - pooled) * n_s, (1 - pooled) * n_c)
    if expected >= MIN_EXPECTED_FOR_Z:
        z = (canary.errors / n_c - stable.errors / n_s) / math.sqrt(pooled * (1 - pooled) * (1 / n_s + 1 / n_c))
        return float(stats.norm.sf(z)), "two-proportion z-test (pooled, one-sided)"
    table = [[canary.errors, n_c - canary.errors], [stable.errors, n_s - stable.errors]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue), "Fisher exact (one-sided)"


def _validate(side: SideSample, name: str) -> None:
    if side.requests < 0:
        raise ValueError(f"{name} sample: requests must be >= 0, got {side.requests}")
    if side.errors < 0:
        raise ValueError(f"{name} sample: errors must be >= 0, got {side.errors}")
    if side.errors > side.requests:
        raise ValueError(f"{name} sample: errors ({side.errors}) exceed requests ({side.requests})")
    import numpy as np

    lat = np.asarray(side.latencies_ms, dtype=float)
    bad = ~np.isfinite(lat) | (lat < 0)
    if bad.any():
        raise ValueError(f"{name} sample: latencies must be finite and >= 0 ms, got {lat[bad][0]}")


def _latency_summary(lat: np.ndarray) -> dict:
    if lat.size == 0:
        return {"samples": 0, "median_ms": None, "p95_ms": None}
    import numpy as np

    return {"samples": int(lat.size), "median_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95))}


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"  # the same digits as in the reasons


def _fmt(x: object) -> str:
    if x is None:
        return "—"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _fmt_dict(d: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items())

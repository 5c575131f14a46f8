"""Canary verdict benchmark: how often slipway.verify.canary.judge is wrong. Run: .venv/bin/python bench/canary_bench.py

Prints figures and ratios (add --json for machine-readable results on stdout). Simulates many canary windows
with numpy's seeded Generator and judges each one with the real ``judge()``; then reports, per scenario, the
PASS / FAIL / INCONCLUSIVE rates and the headline figures:
  - false-fail rate = P(FAIL | the canary is as good as stable), and P(FAIL | the canary is worse but by less than
    the tolerated effect): the thresholds say both should PASS;
  - false-pass rate = P(PASS | the canary is bad), for several bad versions;
  - the inconclusive rate, and on thin traffic (fewer than min_requests canary requests) the PASS rate, which the
    verdict promises is 0;
and the time per judge() call at the simulated sizes and at 10k / 100k requests per side.

The model of one window. Stable: 1% errors, latency lognormal with a 40 ms median (sigma 0.5 in log space: p95
≈ 90 ms). Traffic as a canary bake with synthetic traffic would give it: ``rate × bake`` requests through a
weighted alias, each routed to the canary with probability ``weight`` (so the split varies from run to run, as
Lambda's routing does), e.g. 20/s for 60 s with a 10% canary → ~1080 stable / ~120 canary. Errors are binomial
per side; every request, failed or not, has one latency (Lambda's Duration counts failed invokes too). A bad
canary has a higher error rate or its latencies multiplied by a factor (the median moves by that factor).

What this does not model: on Lambda, ``slipway.verify.lambda_metrics.version_sample`` feeds the judge one latency per
CloudWatch period (a per-period average), not one per request, so there the latency test sees far fewer, much
less noisy observations. The latency rows here are for per-request latencies (what a proxy access log gives),
the SideSample default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slipway.verify.canary import CanaryThresholds, SideSample, judge  # noqa: E402

STABLE_ERROR_RATE = 0.01
STABLE_MEDIAN_MS = 40.0
LATENCY_SIGMA = 0.5  # log-space spread of the lognormal; p95 = median × e^(1.645 σ) ≈ 2.3 × median
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")


@dataclass(frozen=True)
class Traffic:
    """A canary bake: ``rate_per_s`` requests per second for ``bake_s`` seconds, ``weight`` of them to the canary."""

    name: str
    rate_per_s: float
    bake_s: float
    weight: float

    @property
    def total(self) -> int:
        return round(self.rate_per_s * self.bake_s)

    @property
    def sizes(self) -> str:
        c = round(self.total * self.weight)
        return f"~{c} vs ~{self.total - c} req"


@dataclass(frozen=True)
class Canary:
    """How the canary behaves; ``expect`` is what a correct verdict says about it."""

    name: str
    error_rate: float = STABLE_ERROR_RATE
    latency_factor: float = 1.0
    expect: str = "PASS"  # PASS (good or within tolerance), FAIL (bad), INCONCLUSIVE (thin traffic)
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    traffic: Traffic
    canary: Canary

    @property
    def label(self) -> str:
        return f"{self.canary.name}, {self.traffic.name}"


SPLIT_10 = Traffic("10% canary, 20/s × 60 s", 20, 60, 0.10)
SPLIT_50 = Traffic("50/50, 20/s × 60 s", 20, 60, 0.50)
THIN = Traffic("10% canary, 4/s × 60 s (thin)", 4, 60, 0.10)  # ~24 canary requests, 50 is > 5 sd away
THIN_NOTE = "fewer than min_requests canary requests: never PASS"

GOOD = Canary("good (same as stable)")
BAD_30 = Canary("bad: 30% errors, the demo's v2", error_rate=0.30, expect="FAIL")
BAD_5 = Canary("bad: 5% errors", error_rate=0.05, expect="FAIL")
SLOW_15 = Canary("bad: latency ×1.5", latency_factor=1.5, expect="FAIL")
SLOW_11 = Canary("tolerated: latency ×1.1", latency_factor=1.1, expect="PASS",
                 note=f"within the ×{CanaryThresholds().max_latency_increase_ratio:g} tolerance")

SCENARIOS = [
    *(Scenario(t, c) for t in (SPLIT_10, SPLIT_50) for c in (GOOD, BAD_30, BAD_5, SLOW_15, SLOW_11)),
    Scenario(THIN, Canary("good (same as stable)", expect="INCONCLUSIVE", note=THIN_NOTE)),
    Scenario(THIN, Canary("bad: 30% errors, the demo's v2", error_rate=0.30, expect="INCONCLUSIVE", note=THIN_NOTE)),
]


def side(rng: np.random.Generator, n: int, error_rate: float, latency_factor: float) -> SideSample:
    errors = int(rng.binomial(n, error_rate))
    latencies = rng.lognormal(math.log(STABLE_MEDIAN_MS * latency_factor), LATENCY_SIGMA, n)
    return SideSample(requests=n, errors=errors, latencies_ms=latencies.tolist())


def window(rng: np.random.Generator, traffic: Traffic, canary: Canary) -> tuple[SideSample, SideSample]:
    n_canary = int(rng.binomial(traffic.total, traffic.weight))
    return (side(rng, traffic.total - n_canary, STABLE_ERROR_RATE, 1.0),
            side(rng, n_canary, canary.error_rate, canary.latency_factor))


def rate(k: int, n: int) -> dict:
    """k/n with a Clopper-Pearson 95% interval: at 2,000 runs a 0.5% rate is known to about ±0.3 pp."""
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None}
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    return {"k": k, "n": n, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def run_scenario(rng: np.random.Generator, sc: Scenario, runs: int, t: CanaryThresholds) -> dict:
    counts = dict.fromkeys(VERDICTS, 0)
    metric_fails = {"error_rate": 0, "latency": 0}
    thin = thin_pass = 0
    canary_sizes = []
    for _ in range(runs):
        stable, canary = window(rng, sc.traffic, sc.canary)
        v = judge(stable, canary, t)
        counts[v.verdict] += 1
        for m in v.metrics:
            if m.verdict == "FAIL":
                metric_fails[m.metric] += 1
        canary_sizes.append(canary.requests)
        if min(canary.requests, stable.requests) < t.min_requests:
            thin += 1
            thin_pass += v.verdict == "PASS"
    return {
        "scenario": sc.label,
        "canary": sc.canary.name,
        "traffic": sc.traffic.name,
        "sizes": sc.traffic.sizes,
        "canary_error_rate": sc.canary.error_rate,
        "canary_latency_factor": sc.canary.latency_factor,
        "expect": sc.canary.expect,
        "note": sc.canary.note,
        "runs": runs,
        "canary_requests_median": statistics.median(canary_sizes),
        "canary_requests_min_max": [min(canary_sizes), max(canary_sizes)],
        "counts": counts,
        "rates": {k: counts[k] / runs for k in VERDICTS},
        "metric_fails": metric_fails,
        "runs_below_min_requests": thin,
        "pass_below_min_requests": thin_pass,
    }


def run_with_interim_looks(rng: np.random.Generator, sc: Scenario, runs: int, t: CanaryThresholds, looks: int = 4) -> dict:
    """A bake as slipway.rollout.progressive runs it: ``looks - 1`` interim looks on the data so far, each at alpha / looks
    (an interim FAIL ends the bake), then the final look at alpha. Default: a 60 s bake looked at every 15 s."""
    interim_t = t.model_copy(update={"error_alpha": t.error_alpha / looks, "latency_alpha": t.latency_alpha / looks})
    fails = early = 0
    for _ in range(runs):
        stable, canary = window(rng, sc.traffic, sc.canary)  # the whole bake; a look at k/looks sees a prefix
        verdict = None
        for k in range(1, looks + 1):
            def prefix(side: SideSample) -> SideSample:
                n = side.requests * k // looks
                # errors are exchangeable within a side: the prefix's errors are hypergeometric from the whole
                errs = int(rng.hypergeometric(side.errors, side.requests - side.errors, n)) if n and side.errors else 0
                return SideSample(requests=n, errors=errs, latencies_ms=side.latencies_ms[:n])
            v = judge(prefix(stable), prefix(canary), t if k == looks else interim_t)
            if v.verdict == "FAIL":
                verdict = v.verdict
                early += k < looks
                break
        fails += verdict == "FAIL"
    return {"scenario": f"{sc.label}, {looks - 1} interim looks", "runs": runs, "fail": rate(fails, runs),
            "ended_early": rate(early, runs)}


def time_judge(rng: np.random.Generator, t: CanaryThresholds) -> list[dict]:
    """Median time per judge() call on ready-built SideSamples (and, apart, the time to build the two samples)."""
    sizes = [(120, 1080), (600, 600), (10_000, 10_000), (100_000, 100_000)]
    rows = []
    for n_c, n_s in sizes:
        reps = 200 if max(n_c, n_s) <= 2_000 else (30 if max(n_c, n_s) <= 10_000 else 7)
        s_err = int(rng.binomial(n_s, STABLE_ERROR_RATE))
        c_err = int(rng.binomial(n_c, STABLE_ERROR_RATE))
        s_lat = rng.lognormal(math.log(STABLE_MEDIAN_MS), LATENCY_SIGMA, n_s).tolist()
        c_lat = rng.lognormal(math.log(STABLE_MEDIAN_MS), LATENCY_SIGMA, n_c).tolist()
        builds, calls = [], []
        verdict = None
        for _ in range(reps):
            start = time.perf_counter()
            stable = SideSample(requests=n_s, errors=s_err, latencies_ms=s_lat)
            canary = SideSample(requests=n_c, errors=c_err, latencies_ms=c_lat)
            builds.append(time.perf_counter() - start)
            start = time.perf_counter()
            verdict = judge(stable, canary, t)
            calls.append(time.perf_counter() - start)
        rows.append({
            "canary_requests": n_c,
            "stable_requests": n_s,
            "calls": reps,
            "judge_us_median": round(statistics.median(calls) * 1e6, 1),
            "judge_us_min": round(min(calls) * 1e6, 1),
            "build_samples_us_median": round(statistics.median(builds) * 1e6, 1),
            "error_test": verdict.metrics[0].threshold["test"],
        })
    return rows


def pct(r: dict) -> str:
    if r["rate"] is None:
        return "n/a (0 runs)"
    lo, hi = r["ci95"]
    return f"{_pc(r['rate'])} ({r['k']}/{r['n']}; 95% CI {_pc(lo)}–{_pc(hi)})"


def _pc(x: float) -> str:
    return f"{x:.2%}" if 0 < x < 0.01 else f"{x:.1%}"  # 0.04% would print as 0.0%


def headlines(results: list[dict], t: CanaryThresholds) -> list[tuple[str, dict]]:
    lines = []
    for r in results:
        c = r["counts"]
        if r["expect"] == "PASS" and r["note"]:
            lines.append((f"false-fail rate ({r['canary']}, {r['note']}, {r['sizes']})", rate(c["FAIL"], r["runs"])))
        elif r["expect"] == "PASS":
            lines.append((f"false-fail rate (good canary, {r['sizes']})", rate(c["FAIL"], r["runs"])))
        elif r["expect"] == "FAIL":
            lines.append((f"false-pass rate ({r['canary']}, {r['sizes']})", rate(c["PASS"], r["runs"])))
    for sizes in dict.fromkeys(r["sizes"] for r in results if r["expect"] != "INCONCLUSIVE"):
        rows = [r for r in results if r["sizes"] == sizes and r["expect"] != "INCONCLUSIVE"]
        lines.append((f"inconclusive rate (all {len(rows)} canaries, {sizes})",
                      rate(sum(r["counts"]["INCONCLUSIVE"] for r in rows), sum(r["runs"] for r in rows))))
    for r in results:
        if r["expect"] == "INCONCLUSIVE":
            lines.append((f"inconclusive rate (thin traffic, {r['canary']}, {r['sizes']})",
                          rate(r["counts"]["INCONCLUSIVE"], r["runs"])))
            lines.append((f"PASS rate when the canary has < {t.min_requests} requests (thin traffic, {r['canary']}; must be 0)",
                          rate(r["pass_below_min_requests"], r["runs_below_min_requests"])))
    return lines


def print_table(results: list[dict], timings: list[dict], t: CanaryThresholds, runs: int, seed: int) -> None:
    print(f"canary verdict over {runs} simulated windows per scenario (seed {seed}); thresholds: "
          f"min_requests={t.min_requests}, error_alpha={t.error_alpha:g}, latency_alpha={t.latency_alpha:g}, "
          f"max_error_rate_increase={t.max_error_rate_increase:g}, max_latency_increase_ratio={t.max_latency_increase_ratio:g}")
    print(f"stable: {STABLE_ERROR_RATE:.0%} errors, latency lognormal median {STABLE_MEDIAN_MS:g} ms (sigma {LATENCY_SIGMA})")
    print()
    print("| canary | traffic | canary req (median, min–max) | expected | PASS | FAIL | INCONCLUSIVE | FAILs by error rate / latency |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rt, mf = r["rates"], r["metric_fails"]
        lo, hi = r["canary_requests_min_max"]
        expected = r["expect"] + (f" ({r['note']})" if r["note"] else "")
        if r["expect"] == "INCONCLUSIVE":
            expected += f"; {r['runs_below_min_requests']}/{r['runs']} runs had < {t.min_requests}"
        print(f"| {r['canary']} | {r['traffic']} | {r['canary_requests_median']:g} ({lo}–{hi}) | {expected} | "
              f"{rt['PASS']:.1%} | {rt['FAIL']:.1%} | {rt['INCONCLUSIVE']:.1%} | {mf['error_rate']} / {mf['latency']} |")
    print()
    print("| judge() per call: canary vs stable requests (latency arrays of that length) | median µs | min µs | error-rate test | building the two SideSamples, median µs |")
    print("|---|---|---|---|---|")
    for row in timings:
        print(f"| {row['canary_requests']:,} vs {row['stable_requests']:,} ({row['calls']} calls) | {row['judge_us_median']:,.0f} | "
              f"{row['judge_us_min']:,.0f} | {row['error_test']} | {row['build_samples_us_median']:,.0f} |")
    base = timings[0]["judge_us_median"]
    print(f"ratio 100k-per-side call / {timings[0]['canary_requests']} vs {timings[0]['stable_requests']} call: "
          f"{timings[-1]['judge_us_median'] / base:.0f}×")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated windows per scenario (default 2000)")
    parser.add_argument("--seed", type=int, default=20240601, help="numpy Generator seed")
    parser.add_argument("--min-requests", type=int, default=None, help="override CanaryThresholds.min_requests")
    parser.add_argument("--alpha", type=float, default=None, help="override error_alpha and latency_alpha")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON (last, on stdout)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    overrides = {}
    if args.min_requests is not None:
        overrides["min_requests"] = args.min_requests
    if args.alpha is not None:
        overrides.update(error_alpha=args.alpha, latency_alpha=args.alpha)
    try:
        t = CanaryThresholds(**overrides)  # the model's own bounds: min_requests ≥ 1, 0 < alpha < 1
    except ValidationError as exc:
        parser.error("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()))

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    results = [run_scenario(rng, sc, args.runs, t) for sc in SCENARIOS]
    looked = [run_with_interim_looks(rng, Scenario(tr, c), max(200, args.runs // 4), t)
              for tr in (SPLIT_10, SPLIT_50) for c in (GOOD, BAD_30)]
    simulated = time.perf_counter() - started
    timings = time_judge(rng, t)
    elapsed = time.perf_counter() - started

    print_table(results, timings, t, args.runs, args.seed)
    lines = headlines(results, t)
    for text, r in lines:
        print(f"{text}: {pct(r)}")
    print("\nwith interim looks (a 60 s bake looked at every 15 s, interim looks at alpha/4, final at alpha):")
    for r in looked:
        print(f"  {r['scenario']}: FAIL {pct(r['fail'])}, of which ended early {pct(r['ended_early'])}")
    print(f"\nsimulation {simulated:.1f} s ({len(SCENARIOS) * args.runs:,} judge() calls), total {elapsed:.1f} s")
    if args.json:
        print(json.dumps({
            "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
            "seed": args.seed,
            "runs": args.runs,
            "thresholds": t.model_dump(),
            "stable": {"error_rate": STABLE_ERROR_RATE, "latency_median_ms": STABLE_MEDIAN_MS, "latency_sigma": LATENCY_SIGMA},
            "scenarios": results,
            "headlines": [{"figure": text, **r} for text, r in lines],
            "interim_looks": looked,
            "judge_timing": timings,
            "elapsed_s": round(elapsed, 1),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

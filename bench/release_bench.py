"""Release benchmarks on the embedded local stack. Run: `make bench` (or .venv/bin/python bench/release_bench.py).

Prints figures and ratios; writes them to bench/out/release_bench.json. Measures:
  1. release of examples/hello-lambda (dev → staging → prod): cold (new commit, empty caches) vs an unchanged
     re-release of the same commit;
  2. the build step vs a plain `pip install -t` + zip of the same app (hello-lambda plus requests and PyYAML,
     the small app Lambda packaging is usually compared on), with Slipway's dependency cache cold and warm;
  3. time from a failed verification to the previous version live again (ledger timestamps), over N runs.
Uses its own SLIPWAY_HOME and local stack (ports chosen at run time) and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchenv import DEPS, EXAMPLE, isolate, make_example_repo  # noqa: E402  (bench/ is sys.path[0] when the script runs)

WORK = isolate("slipway-bench-")

from slipway import localstack  # noqa: E402



def make_repo(app: str, broken: bool = False) -> Path:
    return make_example_repo(WORK / f"repo-{app}", app, broken=broken)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_release(release) -> dict:
    repo = make_repo("bench-rel")
    cold, state = timed(release, repo_url=f"file://{repo}", ref="v1", return_state=True)
    assert state.is_completed(), state.message
    warm = []
    for _ in range(3):
        t, state = timed(release, repo_url=f"file://{repo}", ref="v1", return_state=True)
        assert state.is_completed(), state.message
        assert state.result()["artifact"]["reused"] is True
        warm.append(t)
    w = statistics.median(warm)
    return {"cold_s": round(cold, 2), "rerelease_s": round(w, 2), "ratio_cold_over_rerelease": round(cold / w, 2)}


def bench_build() -> dict:
    from slipway.artifact.lambda_zip import build_lambda_zip

    app = WORK / "build-app"
    shutil.copytree(EXAMPLE / "src", app / "src")
    (app / "requirements.txt").write_text(DEPS)
    deps_cache = WORK / "deps-cache"
    cold, built = timed(build_lambda_zip, app / "src", WORK / "out1", requirements=app / "requirements.txt", deps_cache=deps_cache)
    warm_runs = [timed(build_lambda_zip, app / "src", WORK / f"out-w{i}", requirements=app / "requirements.txt", deps_cache=deps_cache)[0] for i in range(3)]

    def plain() -> Path:
        target = WORK / f"plain-{time.monotonic_ns()}"
        shutil.copytree(app / "src", target)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-t", str(target), "-r",
                        str(app / "requirements.txt")], check=True, capture_output=True)
        return Path(shutil.make_archive(str(target), "zip", target))

    plain_runs = [timed(plain)[0] for _ in range(2)]
    warm, pl = statistics.median(warm_runs), statistics.median(plain_runs)
    return {
        "slipway_build_cold_s": round(cold, 2),
        "slipway_build_warm_s": round(warm, 3),
        "plain_pip_t_zip_s": round(pl, 2),
        "ratio_plain_over_slipway_warm": round(pl / warm, 1),
        "ratio_plain_over_slipway_cold": round(pl / cold, 2),
        "zip_bytes": built.size,
        "same_sha_every_build": len({build_lambda_zip(app / "src", WORK / f"o{i}", requirements=app / "requirements.txt", deps_cache=deps_cache).sha256 for i in range(2)} | {built.sha256}) == 1,
    }


def bench_rollback(release, runs: int) -> dict:
    from tasks.wiring import open_store

    _, ledger = open_store("default")
    gaps, alias_gaps = [], []
    for i in range(runs):
        app = f"bench-rb{i}"
        repo = make_repo(app, broken=True)
        state = release(repo_url=f"file://{repo}", ref="v1", only=["dev"], return_state=True)
        assert state.is_completed(), state.message
        state = release(repo_url=f"file://{repo}", ref="v2", only=["dev"], return_state=True)
        assert state.is_failed()
        entries = {e.kind: e for e in ledger.entries(app, "dev")}
        t = lambda kind: datetime.fromisoformat(entries[kind].at)  # noqa: E731
        gaps.append((t("rolled-back") - t("verify-failed")).total_seconds())
        alias_gaps.append((t("rollback-started") - t("verify-failed")).total_seconds())
    return {
        "runs": runs,
        "failed_verify_to_previous_live_and_reverified_s_median": round(statistics.median(gaps), 3),
        "failed_verify_to_previous_live_and_reverified_s_max": round(max(gaps), 3),
        "failed_verify_to_rollback_start_s_median": round(statistics.median(alias_gaps), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollback-runs", type=int, default=5)
    args = parser.parse_args()
    print(f"bench work dir: {WORK}")
    t_up, info = timed(localstack.up)
    print(f"local stack up in {t_up:.1f}s")
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            from deployments.local_blocks import save_local_blocks
            from deployments.runner import flush_prefect_workers, quiet_console_tracebacks
            from flows.release import release

            quiet_console_tracebacks()

            save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"])
            results["release"] = bench_release(release)
            results["build"] = bench_build()
            results["rollback"] = bench_rollback(release, args.rollback_runs)
            flush_prefect_workers()
    finally:
        localstack.down()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "release_bench.json").write_text(json.dumps(results, indent=2))
    r, b, rb = results["release"], results["build"], results["rollback"]
    print()
    print("| measure | figure |")
    print("|---|---|")
    print(f"| release dev→staging→prod, cold (new commit: test venv, build, publish, 3 deploys) | {r['cold_s']} s |")
    print(f"| unchanged re-release (artifact + versions reused, 3 re-verifications) | {r['rerelease_s']} s |")
    print(f"| ratio cold / re-release | {r['ratio_cold_over_rerelease']}× |")
    print(f"| build, Slipway, dependency cache cold (requests + PyYAML) | {b['slipway_build_cold_s']} s |")
    print(f"| build, Slipway, dependency cache warm | {b['slipway_build_warm_s']} s |")
    print(f"| plain `pip install -t` + zip of the same app | {b['plain_pip_t_zip_s']} s |")
    print(f"| ratio plain / Slipway warm | {b['ratio_plain_over_slipway_warm']}× |")
    print(f"| same sha256 across builds | {b['same_sha_every_build']} |")
    print(f"| failed verification → previous version live and re-verified (median of {rb['runs']}) | {rb['failed_verify_to_previous_live_and_reverified_s_median']} s (max {rb['failed_verify_to_previous_live_and_reverified_s_max']} s) |")
    print(f"| failed verification → rollback started | {rb['failed_verify_to_rollback_start_s_median']} s |")
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

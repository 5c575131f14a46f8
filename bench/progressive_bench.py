"""Canary benchmark on the embedded local stack. Run: `make bench` (or .venv/bin/python bench/progressive_bench.py).

Measures, with synthetic traffic (20/s, 20% canary) and the real flow (Prefect server, local AWS running each
version's code, CloudWatch metrics, the verdict, the rollback hook):
  1. a bad canary (examples/hello-lambda/demo/app_v3_flaky.py: ~30% of requests fail): time from the start of
     the canary (the ``traffic-shifted`` ledger entry) to 100% back on stable (``rolled-back``), over N runs,
     against the configured bake (60 s): interim looks every 15 s let a clearly bad canary stop early;
  2. a good canary (a new version of the same code): verdicts over M runs (should all PASS) and the time
     from the first shift to ``verified``.
The false-fail / false-pass rates of the verdict itself over thousands of windows: bench/canary_bench.py.
Uses its own SLIPWAY_HOME and local stack and stops it at the end; writes bench/out/progressive_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello-lambda"
from benchenv import git, isolate  # noqa: E402  (bench/ is sys.path[0] when the script runs)

WORK = isolate("slipway-bench-canary-")

from slipway import localstack  # noqa: E402

BAKE = "60s"


def make_repo(app: str, bad: bool) -> Path:
    """v1, then v2: the flaky v3 of the demo (bad) or the same code with a new VERSION (good)."""
    repo = WORK / f"repo-{app}"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    spec = (repo / "slipway.canary.yaml").read_text().replace("app: hello-canary", f"app: {app}").replace("bake: 20s", f"bake: {BAKE}")
    (repo / "slipway.yaml").write_text(spec)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    app_py = repo / "src" / "app.py"
    if bad:
        shutil.copy(EXAMPLE / "demo" / "app_v3_flaky.py", app_py)
    else:
        app_py.write_text(app_py.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    git(repo, "commit", "-qam", "v2")
    git(repo, "tag", "v2")
    return repo


def run(release, ledger, app: str, bad: bool) -> dict:
    repo = make_repo(app, bad)
    state = release(repo_url=f"file://{repo}", ref="v1", return_state=True)
    assert state.is_completed(), state.message
    state = release(repo_url=f"file://{repo}", ref="v2", return_state=True)
    entries = ledger.entries(app, "prod")
    start = next(e for e in entries if e.kind == "traffic-shifted")
    end = next(e for e in reversed(entries) if e.kind in ("rolled-back", "verified"))
    verdict = next(e for e in reversed(entries) if e.kind == "canary-verdict")
    at = lambda e: datetime.fromisoformat(e.at)  # noqa: E731
    return {
        "completed": state.is_completed(), "verdict": verdict.detail["verdict"], "ended": end.kind,
        "ended_early": bool((verdict.detail.get("window") or {}).get("ended_early")),
        "shift_to_end_s": round((at(end) - at(start)).total_seconds(), 2),
        "canary_requests": next(m for m in verdict.detail["metrics"] if m["metric"] == "error_rate")["canary"]["requests"],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bad-runs", type=int, default=3)
    parser.add_argument("--good-runs", type=int, default=2)
    args = parser.parse_args()
    print(f"bench work dir: {WORK}")
    info = localstack.up()
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}, "bake": BAKE}
    try:
        with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            from deployments.local_blocks import save_local_blocks
            from deployments.runner import flush_prefect_workers, quiet_console_tracebacks
            from flows.release import release
            from tasks.wiring import open_store

            quiet_console_tracebacks()
            save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"])
            _, ledger = open_store("default")
            results["bad"] = [run(release, ledger, f"bench-bad{i}", bad=True) for i in range(args.bad_runs)]
            results["good"] = [run(release, ledger, f"bench-good{i}", bad=False) for i in range(args.good_runs)]
            flush_prefect_workers()
    finally:
        localstack.down()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "progressive_bench.json").write_text(json.dumps(results, indent=2))
    bad, good = results["bad"], results["good"]
    bad_t = [r["shift_to_end_s"] for r in bad]
    print()
    print("| measure | figure |")
    print("|---|---|")
    print(f"| bad canary (~30% errors) judged FAIL | {sum(r['verdict'] == 'FAIL' for r in bad)}/{len(bad)} runs |")
    print(f"| bad canary: start of canary → 100% on stable (median, max) | {statistics.median(bad_t):.1f} s, {max(bad_t):.1f} s |")
    print(f"| configured bake | {BAKE} |")
    print(f"| ratio bake / time to stable (early FAIL at an interim look) | {60 / statistics.median(bad_t):.1f}× |")
    print(f"| bad canary stopped before the end of the bake | {sum(r['ended_early'] for r in bad)}/{len(bad)} runs |")
    if good:
        good_t = [r["shift_to_end_s"] for r in good]
        print(f"| good canary judged PASS and promoted | {sum(r['verdict'] == 'PASS' and r['ended'] == 'verified' for r in good)}/{len(good)} runs |")
        print(f"| good canary: first shift → verified (median) | {statistics.median(good_t):.1f} s |")
        print(f"| canary requests per verdict (good, median) | {statistics.median(r['canary_requests'] for r in good)} |")
    return 0 if all(r["verdict"] == "FAIL" and r["ended"] == "rolled-back" for r in bad) else 1


if __name__ == "__main__":
    sys.exit(main())

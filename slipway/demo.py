"""``make demo``: release examples/hello-lambda v1 through dev → staging → prod, then a broken v2.

Drives the real ``slipway`` CLI (each command is printed before it runs) against the embedded local stack,
then checks the outcome from the ledger: v1 live everywhere; v2 failed verification in dev, dev rolled back
to v1, staging and prod untouched. Exit 0 only when the demo behaved as designed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from slipway.home import slipway_home

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello-lambda"
ENVS = ("dev", "staging", "prod")


def _slipway(*args: str, check: bool = True, show: bool = True) -> subprocess.CompletedProcess:
    if show:
        print(f"\n$ slipway {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "slipway.cli", *args], text=True, capture_output=True)
    if proc.stdout and show:
        print(proc.stdout.rstrip())
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for line in err_lines:
        print(line)
    if check and proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"demo: `slipway {' '.join(args)}` exited {proc.returncode}")
    return proc


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, text=True, capture_output=True).stdout.strip()


def make_repo(workdir: Path) -> Path:
    """A real git repository: v1 tagged, then v2 (the broken one) tagged on top."""
    repo = workdir / "hello-lambda"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=Demo", "-c", "user.email=demo@example.com", "add", "-A")
    _git(repo, "-c", "user.name=Demo", "-c", "user.email=demo@example.com", "commit", "-qm", "hello v1")
    _git(repo, "tag", "v1")
    shutil.copy(EXAMPLE / "demo" / "app_v2.py", repo / "src" / "app.py")
    shutil.copy(EXAMPLE / "demo" / "test_app_v2.py", repo / "tests" / "test_app.py")
    _git(repo, "-c", "user.name=Demo", "-c", "user.email=demo@example.com", "commit", "-qam", "hello v2: configurable greeting")
    _git(repo, "tag", "v2")
    return repo


def main() -> int:
    os.environ.setdefault("SLIPWAY_HOME", str(slipway_home()))
    _slipway("local", "up")
    status = json.loads(_slipway("local", "status", "--json", show=False).stdout)
    os.environ.update(status["env"])
    workdir = Path(tempfile.mkdtemp(prefix="slipway-demo-"))
    repo = make_repo(workdir)
    url = f"file://{repo}"
    v1_commit = _git(repo, "rev-parse", "v1")
    v2_commit = _git(repo, "rev-parse", "v2")

    first = _slipway("release", url, "--ref", "v1")
    second = _slipway("release", url, "--ref", "v2", check=False)
    history = json.loads(_slipway("history", "hello", "--json", show=False).stdout)
    _slipway("history", "hello", "--env", "dev")

    heads = history["heads"]
    problems = []
    if first.returncode != 0:
        problems.append("v1 release did not succeed")
    if second.returncode == 0:
        problems.append("v2 release succeeded but should have failed verification in dev")
    for env in ENVS:
        live = (heads.get(env) or {}).get("live") or {}
        if live.get("commit") != v1_commit:
            problems.append(f"{env} is not live on v1 (live: {live.get('release_id')})")
    # the ledger may hold earlier demo runs: look at this run's commits only
    dev_v2 = [e["kind"] for e in history["entries"] if e["environment"] == "dev" and e["commit"] == v2_commit]
    if "verify-failed" not in dev_v2:
        problems.append("dev has no verify-failed record for v2")
    dev_live = (heads.get("dev") or {}).get("live") or {}
    if dev_live.get("commit") != v1_commit:
        problems.append("dev was not rolled back to v1")
    for env in ("staging", "prod"):
        if any(e["environment"] == env and e["commit"] == v2_commit for e in history["entries"]):
            problems.append(f"{env} was touched by v2")

    print("\n=== demo outcome ===")
    for env in ENVS:
        live = (heads.get(env) or {}).get("live") or {}
        what = {
            "dev": "v2 failed verification here and was rolled back to v1",
            "staging": "untouched by v2",
            "prod": "untouched by v2",
        }[env]
        print(f"  {env:<8} live: {live.get('release_id')} (v1, Lambda version {live.get('version')})  — {what}")
    print(f"\nPrefect UI (runs, logs, artifacts): {status['ui_url']}")
    print(f"demo repository: {repo}   stop the stack with: slipway local down")
    if problems:
        print("\nDEMO DID NOT BEHAVE AS DESIGNED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\ndemo behaved as designed: v1 live everywhere; v2 stopped in dev and rolled back; staging and prod untouched.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

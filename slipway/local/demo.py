"""``make demo``: release examples/hello-lambda v1 through dev → staging → prod, then a broken v2; a canary
release of a v3 that fails ~30% of requests (judged FAIL at 20% of prod's traffic, rolled back); and, when a
Docker engine is there, the same with examples/hello-service (a container image, blue/green through nginx).

Drives the real ``slipway`` CLI (each command is printed before it runs) against the embedded local stack,
then checks the outcome from the ledger: v1 live everywhere; v2 stopped in dev (rolled back, or never took
traffic), staging and prod untouched. Exit 0 only when the demo behaved as designed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from slipway.core.home import slipway_home

ROOT = Path(__file__).resolve().parents[2]  # slipway/local/demo.py → the repository
EXAMPLES = ROOT / "examples"
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


def make_repo(workdir: Path, example: Path, v2_files: dict[str, str], tag: str = "v2") -> Path:
    """A real git repository: v1 tagged, then the broken version tagged ``tag`` on top."""
    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / example.name
    shutil.copytree(example, repo, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    ident = ["-c", "user.name=Demo", "-c", "user.email=demo@example.com"]
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, *ident, "add", "-A")
    _git(repo, *ident, "commit", "-qm", f"{example.name} v1")
    _git(repo, "tag", "v1")
    for source, target in v2_files.items():
        shutil.copy(example / "demo" / source, repo / target)
    _git(repo, *ident, "commit", "-qam", f"{example.name} {tag}")
    _git(repo, "tag", tag)
    return repo


def check_outcome(app: str, repo: Path, first, second, history: dict) -> list[str]:
    """v1 live everywhere; v2 stopped in dev (never live there); staging and prod untouched by v2."""
    v1, v2 = _git(repo, "rev-parse", "v1"), _git(repo, "rev-parse", "v2")
    heads, problems = history["heads"], []
    if first.returncode != 0:
        problems.append(f"{app}: v1 release did not succeed")
    if second.returncode == 0:
        problems.append(f"{app}: v2 release succeeded but should have failed in dev")
    for env in ENVS:
        live = (heads.get(env) or {}).get("live") or {}
        if live.get("commit") != v1:
            problems.append(f"{app}: {env} is not live on v1 (live: {live.get('release_id')})")
    for env in ("staging", "prod"):  # the ledger may hold earlier demo runs: look at this run's commits only
        if any(e["environment"] == env and e["commit"] == v2 for e in history["entries"]):
            problems.append(f"{app}: {env} was touched by v2")
    return problems


def demo_lambda(workdir: Path) -> tuple[list[str], list[str]]:
    print("\n=== 1. examples/hello-lambda: a Lambda zip ===", flush=True)
    repo = make_repo(workdir, EXAMPLES / "hello-lambda", {"app_v2.py": "src/app.py", "test_app_v2.py": "tests/test_app.py"})
    url = f"file://{repo}"
    first = _slipway("release", url, "--ref", "v1")
    second = _slipway("release", url, "--ref", "v2", check=False)
    history = json.loads(_slipway("history", "hello", "--json", show=False).stdout)
    _slipway("history", "hello", "--env", "dev")
    problems = check_outcome("hello", repo, first, second, history)
    v2 = _git(repo, "rev-parse", "v2")
    if "verify-failed" not in [e["kind"] for e in history["entries"] if e["environment"] == "dev" and e["commit"] == v2]:
        problems.append("hello: dev has no verify-failed record for v2")
    lines = []
    for env in ENVS:
        live = (history["heads"].get(env) or {}).get("live") or {}
        what = "v2 failed its smoke checks here; rolled back to v1" if env == "dev" else "untouched by v2"
        lines.append(f"  hello          {env:<8} live: {live.get('release_id')} (v1, Lambda version {live.get('version')})  — {what}")
    return problems, lines


def demo_canary(workdir: Path) -> tuple[list[str], list[str]]:
    print("\n=== 2. a canary: v3 of hello-lambda fails ~30% of real requests; 20% of prod's traffic tries it ===", flush=True)
    from slipway.verify.canary import CanaryVerdict

    example = EXAMPLES / "hello-lambda"
    repo = make_repo(workdir / "canary", example, {"app_v3_flaky.py": "src/app.py"}, tag="v3")
    url = f"file://{repo}"
    spec = ("--spec", "slipway.canary.yaml")
    _slipway("release", url, "--ref", "v1", *spec)  # the first release has nothing to compare with: all-at-once
    started = time.monotonic()
    bad = _slipway("release", url, "--ref", "v3", *spec, check=False)
    elapsed = time.monotonic() - started
    history = json.loads(_slipway("history", "hello-canary", "--json", show=False).stdout)
    v1, v3 = _git(repo, "rev-parse", "v1"), _git(repo, "rev-parse", "v3")
    entries = [e for e in history["entries"] if e["environment"] == "prod"]  # newest first
    problems = []
    if bad.returncode == 0:
        problems.append("hello-canary: the flaky v3 was promoted")
    verdict = next((e for e in entries if e["kind"] == "canary-verdict" and e["commit"] == v3), None)
    rolled = next((e for e in entries if e["kind"] == "rolled-back"), None)
    live = (history["heads"].get("prod") or {}).get("live") or {}
    if verdict is None or verdict["detail"].get("verdict") != "FAIL":
        problems.append(f"hello-canary: expected a FAIL verdict for v3, got {verdict and verdict['detail'].get('verdict')}")
    if rolled is None or live.get("commit") != v1 or (history["heads"]["prod"].get("canary") is not None):
        problems.append("hello-canary: prod is not back on v1 with 100% of the traffic")
    if verdict is not None:
        print("\nthe verdict and its evidence (also a Prefect artifact `canary-hello-canary-prod`, and in the ledger):\n")
        print(CanaryVerdict.model_validate({k: v for k, v in verdict["detail"].items() if k != "percent"}).markdown())
    _slipway("history", "hello-canary", "--env", "prod")
    lines = [f"  hello-canary   prod     live: {live.get('release_id')} (v1, Lambda version {live.get('version')})  — "
             f"v3 judged FAIL at 20%, 100% back on v1; {elapsed:.0f} s from `slipway release` to stable"]
    return problems, lines


def _base_image_ready() -> str | None:
    """None when python:3.11-slim is on the engine (built locally if needed), else why not."""
    if subprocess.run(["docker", "image", "inspect", "python:3.11-slim"], capture_output=True).returncode == 0:
        return None
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        return "base image python:3.11-slim is missing; build it with `sudo bash .ci/base-image.sh` (needs debootstrap)"
    print("\nbuilding the base image python:3.11-slim locally (no registry can be reached; about 50 s)...", flush=True)
    done = subprocess.run(["bash", str(ROOT / ".ci" / "base-image.sh"), "python:3.11-slim"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"could not build python:3.11-slim: {done.stderr.strip()[-200:]}"


def demo_container(workdir: Path) -> tuple[list[str], list[str]]:
    print("\n=== 3. examples/hello-service: a container image on the Docker host, blue/green through nginx ===", flush=True)
    repo = make_repo(workdir, EXAMPLES / "hello-service", {"app_v2.py": "app.py", "test_app_v2.py": "tests/test_app.py"})
    url = f"file://{repo}"
    first = _slipway("release", url, "--ref", "v1")
    history = json.loads(_slipway("history", "hello-service", "--json", show=False).stdout)
    dev_url = (history["heads"].get("dev") or {}).get("location", {}).get("endpoint")
    polled = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def poll() -> None:  # a client on dev's stable port while v2 is tried: bounded in count and time
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline and sum(polled.values()) < 5000:
            try:
                with urllib.request.urlopen(dev_url + "/", timeout=5) as resp:
                    polled["ok" if resp.status == 200 else "failed"] += 1
            except Exception:  # noqa: BLE001 - a failed request is what we count
                polled["failed"] += 1
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    if dev_url:
        poller.start()
    second = _slipway("release", url, "--ref", "v2", check=False)
    stop.set()
    if dev_url:
        poller.join(10)
    history = json.loads(_slipway("history", "hello-service", "--json", show=False).stdout)
    problems = check_outcome("hello-service", repo, first, second, history)
    if polled["failed"]:
        problems.append(f"hello-service: {polled['failed']} requests to dev failed while v2 was tried")
    lines = []
    for env in ENVS:
        head = history["heads"].get(env) or {}
        live = head.get("live") or {}
        what = (f"v2 never became healthy; v1 served throughout ({polled['ok']} requests polled, {polled['failed']} failed)"
                if env == "dev" else "untouched by v2")
        lines.append(f"  hello-service  {env:<8} live: {live.get('release_id')} (v1) at {head.get('location', {}).get('endpoint')}  — {what}")
    return problems, lines


def _sandbox_or_say_so() -> None:
    """The demo's repositories are the examples shipped here: where bubblewrap is missing they run unsandboxed, and
    the demo says so (a real release refuses instead, see docs/security.md)."""
    from slipway.core import sandbox
    from slipway.core.errors import SandboxUnavailable

    try:
        sandbox.require()
    except SandboxUnavailable as exc:
        os.environ["SLIPWAY_SANDBOX"] = "off"
        print(f"note: {exc.message}; the demo runs its own example repositories unsandboxed (SLIPWAY_SANDBOX=off). "
              "Install bubblewrap before releasing repositories you do not trust.", flush=True)


def demo_diagnose() -> list[str]:
    print("\n=== 4. why did hello's v2 fail? `slipway diagnose` on the failed release ===", flush=True)
    proc = _slipway("diagnose", "hello", "--env", "dev", check=False)
    problems = []
    for expected in ("cause:       CONFIGURATION", "environment variable GREETING", "commits (1):", "M src/app.py"):
        if expected not in proc.stdout:
            problems.append(f"diagnose: {expected!r} not in its report")
    return problems


def demo_stats() -> list[str]:
    """Whether releases fail less: the DORA figures the releases above left in the ledger."""
    print("\n=== 6. whether releases fail less: `slipway stats` from the ledger ===", flush=True)
    proc = _slipway("stats", "--since", "1d", check=False)
    problems = []
    if proc.returncode != 0 or "hello/dev" not in proc.stdout or "DORA figures" not in proc.stdout:
        problems.append(f"stats: exit {proc.returncode}, no figures for hello/dev")
    return problems


def demo_restart(status: dict) -> list[str]:
    """The stack keeps what it held across `local down` / `local up`: the ledger (and the artifacts, functions and
    flags behind it) and the Prefect UI on the same port, so `slipway history` and the UI agree."""
    print("\n=== 5. the stack keeps its state: `slipway local down`, `slipway local up`, the same history ===", flush=True)
    before = json.loads(_slipway("history", "hello", "--json", show=False).stdout)
    _slipway("local", "down")
    _slipway("local", "up")
    after_status = json.loads(_slipway("local", "status", "--json", show=False).stdout)
    after = json.loads(_slipway("history", "hello", "--json", show=False).stdout)
    problems = []
    if after != before:
        problems.append(f"restart: `slipway history hello` had {len(before['entries'])} entries before `local down`, "
                        f"{len(after['entries'])} after `local up`")
    if after_status.get("ui_url") != status.get("ui_url"):
        problems.append(f"restart: the Prefect UI moved from {status.get('ui_url')} to {after_status.get('ui_url')}")
    print(f"  hello's ledger: {len(before['entries'])} entries before, {len(after['entries'])} after (the same); "
          f"Prefect UI still at {after_status.get('ui_url')}")
    return problems


def main() -> int:
    os.environ.setdefault("SLIPWAY_HOME", str(slipway_home()))
    _sandbox_or_say_so()
    _slipway("local", "up")
    status = json.loads(_slipway("local", "status", "--json", show=False).stdout)
    os.environ.update(status["env"])
    workdir = Path(tempfile.mkdtemp(prefix="slipway-demo-"))
    problems, lines = demo_lambda(workdir)
    more_problems, more_lines = demo_canary(workdir)
    problems += more_problems
    lines += more_lines
    skipped = status.get("docker") if not status.get("registry") else _base_image_ready()
    if skipped:
        print(f"\n=== 3. examples/hello-service: skipped — {skipped} ===")
    else:
        more_problems, more_lines = demo_container(workdir)
        problems += more_problems
        lines += more_lines

    problems += demo_diagnose()
    problems += demo_restart(status)
    problems += demo_stats()

    print("\n=== demo outcome ===")
    print("\n".join(lines))
    print(f"\nPrefect UI (runs, logs, artifacts): {status['ui_url']}")
    print(f"demo repositories: {workdir}   stop the stack with: slipway local down")
    if problems:
        print("\nDEMO DID NOT BEHAVE AS DESIGNED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\ndemo behaved as designed: v1 live everywhere; each v2 stopped in dev (rolled back, or never took traffic);"
          " staging and prod untouched; the flaky canary judged FAIL and prod back on v1.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

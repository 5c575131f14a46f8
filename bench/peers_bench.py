"""Slipway against its peers, side by side, in one run. Run: `.venv/bin/python bench/peers_bench.py [--quick]`.

Prints one markdown table (after a short header of environment facts) and writes every figure to
bench/out/peers_bench.json. The sample app is examples/hello-lambda plus two dependencies (requests, PyYAML, as in
release_bench.py: the small app that Lambda packaging is usually compared on).

1. Build: slipway.artifact.lambda_zip.build_lambda_zip (dependency cache cold, then warm) vs `sam build --cached` (aws-sam-cli, then
   SAM's own Lambda zip function, the one `sam package`/`sam deploy` upload) and `chalice package` (cold project, then
   again with chalice's .chalice/deployments cache). Each peer is installed into its own venv under the bench work
   dir (`python -m venv` + `pip install`; the install is timed apart and never counted). Zip sizes, and whether
   the builds are byte-for-byte reproducible (sha256 of every build compared). A peer that cannot be installed or
   run says why in its cells; no figure is ever made up.
2. Release dev → staging → prod on the local stack: cold (empty caches), a new commit with warm caches, and an
   unchanged re-release.
3. Failure to stable: a broken v2 released to dev; verify-failed → rolled-back (ledger timestamps) and release
   start → dev back on v1.
4. Orchestration overhead: the release flow (dev only) vs the same steps called as plain functions in this process
   (clone, tests, build, preflight of the zip, publish, prepare a Lambda version, shift the alias, verify), each on a
   fresh app so nothing is reused.
5. Scaling: 1, 5 and 20 distinct apps released to dev at once, each flow in its own thread of this process, through
   the one Prefect server of the local stack.

Uses its own SLIPWAY_HOME and local stack (benchenv.isolate; ports chosen at run time), never ~/.slipway, and
stops the stack at the end, also on failure. `--quick`: one repetition, no 20-app row.
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import DEPS, EXAMPLE, isolate, make_example_repo  # noqa: E402

PEERS = {"sam": "aws-sam-cli", "chalice": "chalice"}
WORK: Path = Path()  # set by main() (isolate): nothing happens at import time
LOG = print


# ---- small helpers -----------------------------------------------------------------------------------------
def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "all": [round(v, 3) for v in values]} if values else {"n": 0}


def fmt(s: dict | None, unit: str = "s", digits: int = 2) -> str:
    if not s or not s.get("n"):
        return "n/a"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f} {unit} (N=1)"
    return f"{s['median']:.{digits}f} {unit} (N={s['n']}, {s['min']:.{digits}f}–{s['max']:.{digits}f})"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def zip_facts(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        stamps = {zi.date_time for zi in zf.infolist()}
    return {"bytes": path.stat().st_size, "entries": len(names), "sha256": sha256_file(path),
            "has_requests": "requests/__init__.py" in names, "has_yaml": "yaml/__init__.py" in names,
            "sorted_entries": names == sorted(names), "distinct_timestamps": len(stamps)}


def reproducibility(shas: list[str]) -> dict:
    return {"builds": len(shas), "distinct_sha256": len(set(shas)), "reproducible": len(shas) > 1 and len(set(shas)) == 1}


def short_error(exc: BaseException | str, limit: int = 220) -> str:
    text = exc if isinstance(exc, str) else (exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}")
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def last_lines(output: str, n: int = 3) -> str:
    lines = [line.strip() for line in (output or "").splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    errors = [line for line in lines if "error" in line.lower()]
    return " | ".join((errors or lines)[-n:]) or "no output"


def cpu_stat() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def own_cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def busy_others(limit: int = 4) -> list[str]:
    """The processes (not this one) using the most CPU right now, as `ps` sees them."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=10).stdout
    except Exception:  # noqa: BLE001
        return []
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 4)
        if len(parts) < 5 or int(parts[0]) == os.getpid() or int(parts[1]) == os.getpid() or float(parts[2]) < 5:
            continue
        rows.append(f"{parts[4][:70]} ({parts[2]}% since start)")
        if len(rows) >= limit:
            break
    return rows


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- the sample app ----------------------------------------------------------------------------------------
def make_repo(app: str, broken: bool = False) -> Path:
    """examples/hello-lambda (+ requests, PyYAML) as a git repository, app renamed, v1 tagged (and v2, broken)."""
    return make_example_repo(WORK / "repos" / app, app, broken=broken, requirements=DEPS)


def extra_peer_builds(res: dict, peers: dict, suffix: str, label: str, what: str, **kw) -> dict[str, str]:
    """One more cold build of each peer that built before, in a fresh project: peer name → zip sha256 (errors recorded)."""
    out: dict[str, str] = {}
    for name in PEERS:
        r = res[name]
        if "error" in r or not r["cold"]:
            continue
        maker, runner = (sam_project, sam_build) if name == "sam" else (chalice_project, chalice_package)
        try:
            built = runner(Path(peers[name]["venv"]), maker(WORK / "projects" / f"{name}-{suffix}"), WORK / "peer-homes" / f"{name}-{suffix}",
                           label, **kw)
            out[name] = sha256_file(built["zip"])
        except Exception as exc:  # noqa: BLE001
            r["errors"].append(f"{what}: {short_error(exc, 400)}")
    return out


# ---- 1. build: Slipway vs sam build vs chalice package ---------------------------------------------------------
def peer_env(venv: Path, home: Path) -> dict[str, str]:
    """The peer's venv first on PATH (its python3.11 is what `sam build` looks for), a HOME of its own under the work
    dir (so nothing is written to the user's), the same pip configuration as everyone else, no credentials."""
    from slipway.core.childenv import scrubbed_environ

    env = scrubbed_environ()
    user_pip_conf = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "pip" / "pip.conf"
    if "PIP_CONFIG_FILE" not in env and user_pip_conf.is_file():
        env["PIP_CONFIG_FILE"] = str(user_pip_conf)  # the user-level pip.conf would be lost with HOME moved
    home.mkdir(parents=True, exist_ok=True)
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}", VIRTUAL_ENV=str(venv), HOME=str(home),
               SAM_CLI_TELEMETRY="0", DO_NOT_TRACK="1", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


def install_peer(name: str, package: str, peers_dir: Path) -> dict:
    venv = peers_dir / name
    ready = venv / ".bench-ready"
    if ready.is_file():
        info = json.loads(ready.read_text())
        return {**info, "reused_venv": True}
    shutil.rmtree(venv, ignore_errors=True)
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True, timeout=300)
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", package],
                              capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"`pip install {package}` did not finish in 30 min", "install_s": round(time.perf_counter() - start, 1)}
    except subprocess.CalledProcessError as exc:
        return {"ok": False, "error": f"python -m venv failed: {last_lines(exc.stderr)}", "install_s": round(time.perf_counter() - start, 1)}
    install_s = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        return {"ok": False, "error": f"`pip install {package}` failed: {short_error(last_lines(proc.stdout + proc.stderr))}", "install_s": install_s}
    version = subprocess.run([str(venv / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                             capture_output=True, text=True).stdout.strip()
    info = {"ok": True, "package": package, "version": version, "install_s": install_s, "venv": str(venv)}
    ready.write_text(json.dumps(info))
    return {**info, "reused_venv": False}


def run_peer(argv: list[str], cwd: Path, env: dict, timeout: float = 900, umask: int | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    return time.perf_counter() - start, proc


SAM_TEMPLATE = """AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: examples/hello-lambda for the peers benchmark
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Architectures: [x86_64]
"""

# SAM's own Lambda zip (what `sam package` / `sam deploy` upload), timed inside the process: no import time counted
SAM_ZIP = """import json, sys, time
from samcli.lib.package.utils import make_zip_with_lambda_permissions
start = time.perf_counter()
path = make_zip_with_lambda_permissions(sys.argv[1], sys.argv[2])
print(json.dumps({"zip": path, "zip_s": time.perf_counter() - start}))
"""

CHALICE_APP = '''"""Chalice needs its own app shape: a Chalice app object in app.py; the handler lives in chalicelib/."""
from chalice import Chalice

from chalicelib.hello import handler as _handler

app = Chalice(app_name="hello")


@app.lambda_function(name="hello")
def hello(event, context):
    return _handler(event, context)
'''


def copy_new(src: Path, dest: Path) -> None:
    """A new file with the same bytes (its mode from the current umask, as a fresh checkout's would be)."""
    dest.write_bytes(src.read_bytes())


def sam_project(dest: Path) -> Path:
    (dest / "src").mkdir(parents=True)
    copy_new(EXAMPLE / "src" / "app.py", dest / "src" / "app.py")
    (dest / "src" / "requirements.txt").write_text(DEPS)  # SAM reads the requirements from the CodeUri directory
    (dest / "template.yaml").write_text(SAM_TEMPLATE)
    return dest


def chalice_project(dest: Path) -> Path:
    (dest / "chalicelib").mkdir(parents=True)
    (dest / ".chalice").mkdir()
    copy_new(EXAMPLE / "src" / "app.py", dest / "chalicelib" / "hello.py")
    (dest / "chalicelib" / "__init__.py").write_text("")
    (dest / "app.py").write_text(CHALICE_APP)
    (dest / "requirements.txt").write_text(DEPS)
    (dest / ".chalice" / "config.json").write_text(json.dumps({"version": "2.0", "app_name": "hello", "stages": {"dev": {}}}))
    return dest


def sam_build(venv: Path, project: Path, home: Path, tag: str, umask: int | None = None) -> dict:
    env = peer_env(venv, home)
    t_build, proc = run_peer([str(venv / "bin" / "sam"), "build", "--cached"], project, env, umask=umask)
    if proc.returncode != 0:
        raise RuntimeError(f"sam build exited {proc.returncode}: {last_lines(proc.stdout + proc.stderr)}")
    out = WORK / "zips" / f"sam-{tag}"
    out.parent.mkdir(parents=True, exist_ok=True)
    _, zproc = run_peer([str(venv / "bin" / "python"), "-c", SAM_ZIP, str(out), str(project / ".aws-sam" / "build" / "HelloFunction")], project, env,
                        umask=umask)
    if zproc.returncode != 0:
        raise RuntimeError(f"SAM's make_zip failed: {last_lines(zproc.stdout + zproc.stderr)}")
    z = json.loads(zproc.stdout.strip().splitlines()[-1])
    return {"s": t_build + z["zip_s"], "build_s": t_build, "zip_s": z["zip_s"], "zip": Path(z["zip"]),
            "incremental": "running incremental build" in (proc.stdout + proc.stderr).lower() or "skipping build" in (proc.stdout + proc.stderr).lower()}


def chalice_package(venv: Path, project: Path, home: Path, tag: str, umask: int | None = None) -> dict:
    env = peer_env(venv, home)
    out = WORK / "zips" / f"chalice-{tag}"
    t, proc = run_peer([str(venv / "bin" / "chalice"), "package", str(out)], project, env, umask=umask)
    if proc.returncode != 0:
        raise RuntimeError(f"chalice package exited {proc.returncode}: {last_lines(proc.stdout + proc.stderr)}")
    return {"s": t, "zip": out / "deployment.zip", "reused": "reusing existing deployment package" in (proc.stdout + proc.stderr).lower()}


SLIPWAY_PROCESS = """import json, sys, time
start = time.perf_counter()
from pathlib import Path
from slipway.artifact.lambda_zip import build_lambda_zip
b = build_lambda_zip(Path(sys.argv[1]), Path(sys.argv[2]), requirements=Path(sys.argv[3]), deps_cache=Path(sys.argv[4]))
print(json.dumps({"sha256": b.sha256, "in_process_s": time.perf_counter() - start}))
"""


def bench_build(reps: int, peers: dict) -> dict:
    from slipway.artifact.lambda_zip import build_lambda_zip

    app = WORK / "build-app"
    shutil.copytree(EXAMPLE / "src", app / "src")
    (app / "requirements.txt").write_text(DEPS)
    warm_cache = WORK / "deps-warm"
    res: dict = {"slipway": {"cold": [], "warm": [], "warm_process": [], "shas": []}}
    for name in PEERS:
        res[name] = {"cold": [], "warm": [], "shas": [], "zips": [], "errors": []} if peers[name].get("ok") else {"error": peers[name]["error"]}

    for i in range(reps):
        LOG(f"  build rep {i + 1}/{reps}")
        # Slipway: cold = a dependency cache of its own (pip runs), warm = the cache filled by the first cold build
        cache = warm_cache if i == 0 else WORK / f"deps-cold-{i}"
        t, built = timed(build_lambda_zip, app / "src", WORK / "zips" / f"slipway-cold-{i}", requirements=app / "requirements.txt", deps_cache=cache)
        res["slipway"]["cold"].append(t)
        res["slipway"]["shas"].append(built.sha256)
        res["slipway"]["zip"] = zip_facts(built.path)
        # the peers, cold: a fresh project (and HOME) each time
        for name in PEERS:
            r = res[name]
            if "error" in r:
                continue
            venv = Path(peers[name]["venv"])
            maker, runner = (sam_project, sam_build) if name == "sam" else (chalice_project, chalice_package)
            project = maker(WORK / "projects" / f"{name}-{i}")
            try:
                out = runner(venv, project, WORK / "peer-homes" / f"{name}-{i}", f"cold-{i}")
                r["cold"].append(out["s"])
                r["shas"].append(sha256_file(out["zip"]))
                r["zip"] = zip_facts(out["zip"])
                r.setdefault("cold_detail", []).append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items() if k != "zip"})
            except Exception as exc:  # noqa: BLE001 - a peer that fails says why in its cells
                r["errors"].append(f"cold build: {short_error(exc, 400)}")
        # warm: Slipway's dependency cache / `sam build --cached` again / chalice's deployment-package cache
        t, built = timed(build_lambda_zip, app / "src", WORK / "zips" / f"slipway-warm-{i}", requirements=app / "requirements.txt", deps_cache=warm_cache)
        res["slipway"]["warm"].append(t)
        res["slipway"]["shas"].append(built.sha256)
        t, proc = timed(subprocess.run, [sys.executable, "-c", SLIPWAY_PROCESS, str(app / "src"), str(WORK / "zips" / f"slipway-proc-{i}"),
                                         str(app / "requirements.txt"), str(warm_cache)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode == 0:
            res["slipway"]["warm_process"].append(t)
            res["slipway"]["shas"].append(json.loads(proc.stdout.strip().splitlines()[-1])["sha256"])
        for name in PEERS:
            r = res[name]
            if "error" in r or len(r["cold"]) <= i:
                continue
            venv = Path(peers[name]["venv"])
            runner = sam_build if name == "sam" else chalice_package
            try:
                out = runner(venv, WORK / "projects" / f"{name}-{i}", WORK / "peer-homes" / f"{name}-{i}", f"warm-{i}")
                r["warm"].append(out["s"])
                r["shas"].append(sha256_file(out["zip"]))
                r.setdefault("warm_detail", []).append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items() if k != "zip"})
            except Exception as exc:  # noqa: BLE001
                r["errors"].append(f"warm build: {short_error(exc, 400)}")

    # a second, independent Slipway cold build next to the first (another cache, another output dir) is in "shas" when
    # reps > 1; with --quick, build once more into a new cache so reproducibility is still judged on 2 cold builds
    if reps == 1:
        built = build_lambda_zip(app / "src", WORK / "zips" / "slipway-cold-x", requirements=app / "requirements.txt", deps_cache=WORK / "deps-cold-x")
        res["slipway"]["shas"].append(built.sha256)
        for name, sha in extra_peer_builds(res, peers, "x", "cold-x", "extra cold build").items():
            res[name]["shas"].append(sha)

    # another machine's defaults: one more cold build of each, every file (sources, pip's output, the zip) made under
    # umask 077, compared with the builds above
    old = os.umask(0o077)
    try:
        src = WORK / "build-app-umask" / "src"
        src.mkdir(parents=True)
        copy_new(EXAMPLE / "src" / "app.py", src / "app.py")
        (src.parent / "requirements.txt").write_text(DEPS)
        built = build_lambda_zip(src, WORK / "zips" / "slipway-umask", requirements=src.parent / "requirements.txt", deps_cache=WORK / "deps-umask")
        res["slipway"]["umask077_sha"] = built.sha256
        for name, sha in extra_peer_builds(res, peers, "umask", "umask", "umask 077 build", umask=0o077).items():
            res[name]["umask077_sha"] = sha
    finally:
        os.umask(old)

    for name, r in res.items():
        if "error" in r:
            continue
        if "umask077_sha" in r:
            r["same_sha_under_umask077"] = r["umask077_sha"] in r["shas"]
        for k in ("cold", "warm", "warm_process"):
            if k in r:
                r[k] = summary(r[k])
        r["reproducible"] = reproducibility(r.pop("shas"))
    return res


# ---- 2-5: releases on the local stack --------------------------------------------------------------------------
def release_ok(release, repo: Path, ref: str = "v1", only: list[str] | None = None) -> tuple[float, dict]:
    t, state = timed(release, repo_url=f"file://{repo}", ref=ref, only=only, return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"release of {repo.name}@{ref} ended {state.name}: {short_error(state.message or '')}")
    return t, state.result()


def bench_release(release, reps: int) -> dict:
    """Cold (empty caches: the test venv and the Lambda dependency cache are built), a new commit with warm caches,
    and an unchanged re-release, each through dev → staging → prod."""
    cold, warm, rerelease = [], [], []
    saved_home = os.environ["SLIPWAY_HOME"]
    for i in range(reps):
        LOG(f"  cold release {i + 1}/{reps}")
        repo = make_repo(f"bench-cold-{i}")
        os.environ["SLIPWAY_HOME"] = str(WORK / f"cold-home-{i}")  # caches only: the stack is addressed by its own home
        try:
            t, _ = release_ok(release, repo)
        finally:
            os.environ["SLIPWAY_HOME"] = saved_home
        cold.append(t)
    # untimed: fills the bench home's caches and puts a release live in all three environments
    base = make_repo("bench-base")
    release_ok(release, base)
    for i in range(reps):  # interleaved, so drifts in machine load hit both sides alike
        LOG(f"  new-commit release + unchanged re-release {i + 1}/{reps}")
        t, _ = release_ok(release, make_repo(f"bench-new-{i}"))
        warm.append(t)
        t, result = release_ok(release, base)
        assert result["artifact"]["reused"] is True, "an unchanged re-release must reuse the artifact"
        rerelease.append(t)
    c, w, r = summary(cold), summary(warm), summary(rerelease)
    return {"cold_empty_caches": c, "new_commit_warm_caches": w, "unchanged_rerelease": r,
            "ratio_cold_over_rerelease": round(c["median"] / r["median"], 1),
            "ratio_new_commit_over_rerelease": round(w["median"] / r["median"], 1)}


def bench_rollback(release, reps: int) -> dict:
    from tasks.wiring import open_store

    _, ledger = open_store("default")
    gaps, start_to_stable, totals = [], [], []
    for i in range(reps):
        LOG(f"  rollback {i + 1}/{reps}")
        app = f"bench-rb-{i}"
        repo = make_repo(app, broken=True)
        _, v1 = release_ok(release, repo, "v1", ["dev"])
        started = datetime.now(timezone.utc)
        t, state = timed(release, repo_url=f"file://{repo}", ref="v2", only=["dev"], return_state=True)
        if not state.is_failed():
            raise RuntimeError(f"the broken v2 release ended {state.name}, expected Failed")
        entries = ledger.entries(app, "dev")
        last = {e.kind: e for e in entries}  # the latest entry of each kind
        for kind in ("verify-failed", "rolled-back"):
            if kind not in last:
                raise RuntimeError(f"no {kind} entry in {app}/dev: {[e.kind for e in entries]}")
        back = last["rolled-back"]
        head = ledger.head(app, "dev")
        if back.release_id != v1["release_id"] or head.live is None or head.live.release_id != v1["release_id"]:
            raise RuntimeError(f"dev is not back on v1 ({v1['release_id']}): rolled back to {back.release_id}, live {head.live}")
        at = lambda e: datetime.fromisoformat(e.at)  # noqa: E731
        gaps.append((at(back) - at(last["verify-failed"])).total_seconds())
        start_to_stable.append((at(back) - started).total_seconds())
        totals.append(t)
    return {"verify_failed_to_rolled_back": summary(gaps), "release_start_to_dev_back_on_v1": summary(start_to_stable),
            "broken_release_total": summary(totals)}


def plain_release(repo: Path) -> dict:
    """The release's core steps as plain function calls (no flow, no tasks), on the same stack and blocks:
    clone → tests → build → preflight of the zip → publish → prepare a Lambda version → shift the alias → verify (dev)."""
    import platform as _platform

    import slipway
    from slipway import BUILDER_VERSION
    from slipway.artifact import preflight
    from slipway.rollout import staged
    from slipway.artifact.lambda_zip import build_lambda_zip
    from slipway.source.git import clone_at_ref, discard_checkout
    from slipway.core.models import Provenance
    from slipway.spec.loading import check_spec_against_checkout, load_spec
    from slipway.source.testrun import run_tests
    from tasks.artifact_tasks import release_id_for
    from tasks.wiring import env_context, env_ref, open_store

    steps: dict[str, float] = {}

    def step(name, fn, *a, **kw):
        t, out = timed(fn, *a, **kw)
        steps[name] = round(t, 3)
        return out

    checkout = step("clone", clone_at_ref, f"file://{repo}", "v1")
    try:
        spec = load_spec(checkout.path)
        check_spec_against_checkout(spec, checkout.path)
        reqs = [checkout.path / spec.artifact.requirements] + [checkout.path / r for r in spec.test.requirements]
        step("test", run_tests, checkout.path, spec.test.command, reqs, timeout_s=spec.test.timeout).raise_for_failure()
        out_dir = WORK / "plain-builds" / spec.app
        built = step("build", build_lambda_zip, checkout.path / spec.artifact.source, out_dir,
                     requirements=checkout.path / spec.artifact.requirements, runtime=spec.artifact.runtime)
        source = checkout.path / spec.artifact.source
        checks = step("preflight", preflight.lambda_zip_checks, built.path, handler=spec.artifact.handler,
                      source_files=sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py")),
                      requirements=spec.artifact.requirements, runtime=spec.artifact.runtime)
        preflight.raise_for_failures(checks)
        store, _ = open_store("default")
        build_key = spec.build_key(checkout.commit, BUILDER_VERSION)
        provenance = Provenance(
            app=spec.app, release_id=release_id_for(checkout.commit, built.sha256), artifact_sha256=built.sha256,
            artifact_size=built.size, unzipped_size=built.unzipped_size, file_count=built.file_count, commit=checkout.commit,
            commit_subject=checkout.subject, ref=checkout.ref, repo=checkout.repo_url, spec_digest=spec.digest(),
            build_key=build_key, runtime=spec.artifact.runtime, handler=spec.artifact.handler,
            builder={"slipway": slipway.__version__, "python": _platform.python_version(), "platform": sys.platform},
            tests={"passed": True}, built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        artifact = step("publish", store.publish, built.path, provenance)
        assert not artifact.reused, "the plain run must not reuse an artifact"
        ctx = env_context(env_ref(spec, "dev", "default"))
        deployed = step("prepare_version", staged.publish, ctx, artifact)
        seq = step("shift_alias", staged.shift_traffic, ctx, artifact, deployed)
        result = step("verify", staged.verify, ctx, artifact, deployed.version, seq)
        assert result.passed
    finally:
        discard_checkout(checkout)
        shutil.rmtree(WORK / "plain-builds", ignore_errors=True)
    return steps


def bench_overhead(release, reps: int) -> dict:
    flow_t, plain_t, plain_steps = [], [], []
    for i in range(reps):  # interleaved, so drifts in machine load hit both sides alike
        LOG(f"  overhead {i + 1}/{reps}")
        t, _ = release_ok(release, make_repo(f"bench-ovf-{i}"), only=["dev"])
        flow_t.append(t)
        t, steps = timed(plain_release, make_repo(f"bench-ovp-{i}"))
        plain_t.append(t)
        plain_steps.append(steps)
    f, p = summary(flow_t), summary(plain_t)
    return {"flow": f, "plain": p, "ratio_flow_over_plain": round(f["median"] / p["median"], 2),
            "difference_s": round(f["median"] - p["median"], 2), "plain_steps": plain_steps}


def release_in_parallel(release, repos: list[Path]) -> dict:
    """One thread per app, all started at once; each thread runs the release flow (dev only) in this process."""
    results: list[dict | None] = [None] * len(repos)

    def one(i: int, repo: Path) -> None:
        start = time.perf_counter()
        try:
            state = release(repo_url=f"file://{repo}", ref="v1", only=["dev"], return_state=True)
            results[i] = {"s": time.perf_counter() - start, "ok": state.is_completed(), "state": state.name,
                          "message": None if state.is_completed() else short_error(state.message or "")}
        except Exception as exc:  # noqa: BLE001
            results[i] = {"s": time.perf_counter() - start, "ok": False, "state": "exception", "message": short_error(exc)}

    # each thread gets a copy of this context: the temporary Prefect settings (API URL, no heartbeats) live there
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, i, repo), daemon=True) for i, repo in enumerate(repos)]
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    me2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of this process (all flow threads share one interpreter, so one GIL) and of its finished children (git, pytest, …)
    cpu_self = me2.ru_utime + me2.ru_stime - me.ru_utime - me.ru_stime
    cpu_children = kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime
    return {"wall": wall, "releases": results, "cpu_self_s": cpu_self, "cpu_children_s": cpu_children}


def bench_scaling(release, counts: list[int], reps: int) -> dict:
    from tasks.wiring import open_store

    _, ledger = open_store("default")
    release_ok(release, make_repo("scale-fill"), only=["dev"])  # untimed: the test venv and deps caches are warm for every row
    out: dict = {}
    for count in counts:
        runs = 1 if count >= 20 else reps
        walls, per_release, failures, cpu_self, cpu_kids = [], [], [], [], []
        for r in range(runs):
            LOG(f"  scaling: {count} app(s), run {r + 1}/{runs}")
            repos = [make_repo(f"scale{count}-r{r}-{i:02d}") for i in range(count)]
            got = release_in_parallel(release, repos)
            bad = [(repo.name, x) for repo, x in zip(repos, got["releases"]) if not (x and x["ok"])]
            for repo, x in zip(repos, got["releases"]):
                if x and x["ok"]:
                    kinds = [e.kind for e in ledger.entries(repo.name, "dev")]
                    if kinds[-1:] != ["verified"]:
                        bad.append((repo.name, {"message": f"ledger ends {kinds[-1:]}, not verified"}))
            failures += [f"{name}: {x.get('message') if x else 'no result'}" for name, x in bad]
            walls.append(got["wall"])
            cpu_self.append(got["cpu_self_s"])
            cpu_kids.append(got["cpu_children_s"])
            per_release += [x["s"] for x in got["releases"] if x]
        w = summary(walls)
        out[str(count)] = {"apps": count, "wall": w, "per_app_avg_s": round(w["median"] / count, 2), "per_release": summary(per_release),
                           "failed": len(failures), "failures": failures[:10],
                           "cpu_self_s": summary(cpu_self), "cpu_children_s": summary(cpu_kids),
                           "cpu_self_per_app_s": round(statistics.median(cpu_self) / count, 2),
                           "self_core_share": round(statistics.median(cpu_self) / w["median"], 2)}
    if "1" in out:
        t1 = out["1"]["wall"]["median"]
        for count in counts[1:]:
            out[str(count)]["growth_over_1"] = round(out[str(count)]["wall"]["median"] / t1, 2)
    return out


# ---- the table ------------------------------------------------------------------------------------------------
def peer_cell(r: dict, key: str) -> str:
    if "error" in r:
        return f"not run: {r['error']}"
    s = r.get(key)
    if s and s.get("n"):
        return fmt(s)
    errs = [e for e in r.get("errors", []) if e.startswith(key.split("_")[0])] or r.get("errors", [])
    return f"failed: {errs[0]}" if errs else "n/a"


def repro_cell(r: dict) -> str:
    if "error" in r or "reproducible" not in r:
        return f"not run: {r['error']}" if "error" in r else "n/a"
    x = r["reproducible"]
    verdict = "yes" if x["reproducible"] else "**no**"
    return f"{verdict}: {x['distinct_sha256']} distinct sha256 over {x['builds']} builds"


def umask_cell(r: dict) -> str:
    if "error" in r:
        return f"not run: {r['error']}"
    if "same_sha_under_umask077" not in r:
        return "n/a"
    return "yes: same sha256" if r["same_sha_under_umask077"] else "**no**: another sha256"


def zip_cell(r: dict) -> str:
    z = r.get("zip") if "error" not in r else None
    if not z:
        return "n/a"
    extras = []
    if not (z["has_requests"] and z["has_yaml"]):
        extras.append("MISSING requests/yaml")
    extras.append("entries sorted" if z["sorted_entries"] else "entries unsorted")
    return f"{z['bytes'] / 1e6:.2f} MB, {z['entries']} entries ({', '.join(extras)})"


def section_row(results: dict, key: str, fn) -> list[str]:
    """Rows of one section, or one row naming the error that stopped it."""
    sec = results.get(key)
    if sec is None:
        return []
    if "error" in sec:
        return [f"| {key} | stopped | failed: {sec['error']} | — | — |"]
    return fn(sec)


def render(results: dict, quick: bool) -> str:
    env, peers = results["environment"], results["peers"]
    lines = [
        f"## Slipway vs peers — {env['date']}{' (--quick)' if quick else ''}",
        "",
        f"- machine: {env['cpu']}, {env['cores']} cores, {env['mem_gb']} GB; {env['os']}; Python {env['python']}; "
        f"prefect {env['versions'].get('prefect')}, moto {env['versions'].get('moto')}, pip {env['versions'].get('pip')}",
        f"- load average at start {env['loadavg_start']}, at end {env.get('loadavg_end', '?')}; over the run the machine's CPUs were "
        f"{env.get('machine_busy_pct', '?')}% busy, this benchmark's processes ≈ {env.get('own_pct', '?')}% → other processes ≈ "
        f"{env.get('others_pct', '?')}% (approximate)" + (f"; busiest others at start: {'; '.join(env['busy_at_start'])}" if env.get("busy_at_start") else ""),
        "- peers, each in its own venv under the bench work dir (install not counted): " + "; ".join(
            f"{PEERS[n]} {p['version']} installed in {p['install_s']} s" + (" (venv reused)" if p.get("reused_venv") else "")
            if p.get("ok") else f"{PEERS[n]}: NOT INSTALLED ({p['error']})" for n, p in peers.items()),
        f"- app: examples/hello-lambda (src/app.py) + {', '.join(DEPS.split())}; same code and requirements for every tool. "
        "SAM: template.yaml with one AWS::Serverless::Function (python3.11, CodeUri src/, requirements.txt inside it). "
        "Chalice needs its own app shape: app.py with a `Chalice` app whose `@app.lambda_function` calls the same handler "
        "(chalicelib/hello.py).",
        "- figures: median (min–max) over N repetitions; peers' times include their CLI start-up, Slipway's in-process "
        "figure does not (see the fresh-process row). Local stack: Prefect server + moto-based local AWS, "
        f"up in {results.get('stack_up_s', '?')} s. Total run {results.get('total_s', '?')} s.",
        "",
        f"| # | measure | Slipway | sam build --cached + SAM's zip (aws-sam-cli {peers['sam'].get('version', '—')}) | "
        f"chalice package (chalice {peers['chalice'].get('version', '—')}) |",
        "|---|---|---|---|---|",
    ]
    b = results.get("build")
    if b is not None and "error" in b:
        lines.append(f"| 1 | build | failed: {b['error']} | — | — |")
    elif b is not None:
        s, sam, ch = b["slipway"], b["sam"], b["chalice"]
        lines += [
            f"| 1 | build + zip, dependency cache cold (pip runs; a fresh project per peer) | {fmt(s['cold'])} | {peer_cell(sam, 'cold')} | {peer_cell(ch, 'cold')} |",
            f"| 1 | build + zip, warm (Slipway's deps cache; `sam build --cached` again; chalice's .chalice/deployments cache) | "
            f"{fmt(s['warm'], digits=3)} | {peer_cell(sam, 'warm')} | {peer_cell(ch, 'warm')} |",
            f"| 1 | same warm Slipway build in a fresh Python process (interpreter + imports included, like the peers' CLIs) | "
            f"{fmt(s['warm_process'])} | — | — |",
            f"| 1 | zip size | {zip_cell(s)} | {zip_cell(sam)} | {zip_cell(ch)} |",
            f"| 1 | byte-for-byte reproducible (sha256 of every cold and warm build) | {repro_cell(s)} | {repro_cell(sam)} | {repro_cell(ch)} |",
            f"| 1 | … and built once more under umask 077 (fresh project, files 0600/0700) | {umask_cell(s)} | {umask_cell(sam)} | {umask_cell(ch)} |",
        ]
        peer_errors = [f"{n}: {e}" for n in PEERS for e in b[n].get("errors", [])]
        if peer_errors:
            lines.append(f"| 1 | peer errors | — | {'; '.join(e for e in peer_errors if e.startswith('sam')) or '—'} | "
                         f"{'; '.join(e for e in peer_errors if e.startswith('chalice')) or '—'} |")

    def rel(r):
        return [
            f"| 2 | release dev→staging→prod, cold (empty caches: test venv + Lambda deps built; 3 deploys) | {fmt(r['cold_empty_caches'])} | — | — |",
            f"| 2 | release dev→staging→prod, new commit, warm caches | {fmt(r['new_commit_warm_caches'])} | — | — |",
            f"| 2 | unchanged re-release (artifact + versions reused, 3 re-verifications) | {fmt(r['unchanged_rerelease'])} | — | — |",
            f"| 2 | ratio cold / unchanged (new commit / unchanged) | {r['ratio_cold_over_rerelease']}× ({r['ratio_new_commit_over_rerelease']}×) | — | — |",
        ]

    def rb(r):
        return [
            f"| 3 | broken v2 in dev: verify-failed → rolled-back, v1 re-verified (ledger) | {fmt(r['verify_failed_to_rolled_back'], digits=3)} | — | — |",
            f"| 3 | v2 release start → dev back on v1 (rolled-back entry) | {fmt(r['release_start_to_dev_back_on_v1'])} | — | — |",
            f"| 3 | v2 release, whole run (incl. failure record + diagnosis) | {fmt(r['broken_release_total'])} | — | — |",
        ]

    def ov(r):
        steps = r["plain_steps"][len(r["plain_steps"]) // 2] if r["plain_steps"] else {}
        return [
            f"| 4 | dev release as the Prefect `release` flow (fresh app) | {fmt(r['flow'])} | — | — |",
            f"| 4 | same core steps as plain functions, same process + stack (fresh app): "
            f"{', '.join(f'{k} {v:.2f}' for k, v in steps.items())} s | {fmt(r['plain'])} | — | — |",
            f"| 4 | orchestration overhead: flow / plain (flow − plain) | {r['ratio_flow_over_plain']}× (+{r['difference_s']} s) | — | — |",
        ]

    def sc(r):
        rows = []
        for count, x in r.items():
            fail = f"; **{x['failed']} failed**: {x['failures'][0]}" if x["failed"] else ""
            rows.append(f"| 5 | {count} distinct app(s) released to dev at once (threads, one Prefect server): wall | {fmt(x['wall'])}; "
                        f"per app {x['per_app_avg_s']} s; each release {fmt(x['per_release'])}; this process's CPU "
                        f"{x['cpu_self_per_app_s']} s per app ({x['self_core_share']:.0%} of one core){fail} | — | — |")
        growth = [f"t{c}/t1 = {x['growth_over_1']}×" for c, x in r.items() if "growth_over_1" in x]
        if growth:
            rows.append(f"| 5 | growth of the wall time | {', '.join(growth)} | — | — |")
        return rows

    lines += section_row(results, "release", rel)
    lines += section_row(results, "rollback", rb)
    lines += section_row(results, "overhead", ov)
    lines += section_row(results, "scaling", sc)
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------------
def environment_facts() -> dict:
    import importlib.metadata as md

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    versions = {}
    for pkg in ("prefect", "moto", "boto3", "pip"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    osr = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line) if Path("/etc/os-release").exists() else {}
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
            "mem_gb": round(mem / 1024**2, 1), "os": osr.get("PRETTY_NAME", platform.platform()).strip('"'),
            "python": platform.python_version(), "versions": versions, "loadavg_start": loadavg(), "busy_at_start": busy_others()}


def run_section(results: dict, key: str, fn, *args) -> None:
    start = time.perf_counter()
    LOG(f"[{key}] (load {loadavg()})")
    try:
        results[key] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' figures
        traceback.print_exc()
        results[key] = {"error": short_error(exc, 400)}
    results.setdefault("section_s", {})[key] = round(time.perf_counter() - start, 1)
    LOG(f"[{key}] done in {results['section_s'][key]} s")


def main() -> int:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, no 20-app row")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of the quick measurements (default 3; 1 with --quick)")
    parser.add_argument("--peers-dir", type=Path, default=None,
                        help="keep the peers' venvs here and reuse them across runs (default: a fresh dir under the work dir)")
    parser.add_argument("--keep-work", action="store_true", help="keep the bench work dir")
    parser.add_argument("--only", default="build,release,rollback,overhead,scaling", help="comma-separated sections")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    sections = set(args.only.split(","))

    WORK = isolate("slipway-peers-")
    home = Path(os.environ["SLIPWAY_HOME"])
    t_start, cpu_start = time.perf_counter(), cpu_stat()
    results: dict = {"quick": args.quick, "reps": reps, "work_dir": str(WORK), "environment": environment_facts(), "app_deps": DEPS.split()}
    LOG(f"bench work dir: {WORK}; reps {reps}; load {results['environment']['loadavg_start']}")

    # peers first (their installs are not timed figures; done before anything is measured)
    peers_dir = args.peers_dir.resolve() if args.peers_dir else WORK / "peers"
    results["peers"] = {}
    for name, package in PEERS.items():
        LOG(f"installing {package} into {peers_dir / name} …")
        results["peers"][name] = install_peer(name, package, peers_dir)
        LOG(f"  {results['peers'][name]}")

    from slipway.local import stack as localstack

    rc = 0
    try:
        if "build" in sections:
            run_section(results, "build", bench_build, reps, results["peers"])
        if sections & {"release", "rollback", "overhead", "scaling"}:
            LOG("starting the local stack …")
            t_up, info = timed(localstack.up, home)
            results["stack_up_s"] = round(t_up, 1)
            from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                from deployments.local_blocks import save_local_blocks
                from deployments.runner import flush_prefect_workers, quiet_console_tracebacks
                from flows.release import release

                quiet_console_tracebacks()
                save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"])
                if "release" in sections:
                    run_section(results, "release", bench_release, release, reps)
                if "rollback" in sections:
                    run_section(results, "rollback", bench_rollback, release, reps)
                if "overhead" in sections:
                    run_section(results, "overhead", bench_overhead, release, reps)
                if "scaling" in sections:
                    run_section(results, "scaling", bench_scaling, release, [1, 5] if args.quick else [1, 5, 20], reps)
                flush_prefect_workers()
    except BaseException as exc:
        traceback.print_exc()
        results["error"] = short_error(exc, 400)
        rc = 1
    finally:
        try:
            localstack.down(home)
        except Exception as exc:  # noqa: BLE001
            LOG(f"could not stop the local stack: {exc}")
            rc = 1
        busy, total = cpu_stat()
        wall = time.perf_counter() - t_start
        env = results["environment"]
        env["loadavg_end"] = loadavg()
        machine = 100 * (busy - cpu_start[0]) / max(1, total - cpu_start[1])
        own = 100 * own_cpu_s() / (wall * (os.cpu_count() or 1))
        env.update(machine_busy_pct=round(machine), own_pct=round(own), others_pct=max(0, round(machine - own)))
        results["total_s"] = round(wall, 1)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "peers_bench.json").write_text(json.dumps(results, indent=2, default=str))
        if not args.keep_work:
            shutil.rmtree(WORK, ignore_errors=True)
    print()
    print(render(results, args.quick))
    print(f"\n(figures in {OUT / 'peers_bench.json'}; total {results['total_s']} s)")
    failed = [k for k in ("build", "release", "rollback", "overhead", "scaling") if isinstance(results.get(k), dict) and "error" in results[k]]
    return rc or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())

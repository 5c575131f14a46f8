"""Container release benchmarks on the embedded local stack. Run: `make bench` (or .venv/bin/python bench/container_bench.py).

Prints figures and ratios; writes them to bench/out/container_bench.json. Measures, with examples/hello-service
(a Python service FROM python:3.11-slim) copied into a temporary git repository under a unique app name:
  1. release dev → staging → prod: cold (new commit: tests, docker build, push to the local registry, three
     blue/green deploys) vs an unchanged re-release of the same commit (artifact and containers reused);
  2. build + push alone (slipway.artifact.image.build_image + slipway.artifact.registry.push_image): a cold build (new top
     layer) and push under a fresh tag, to the stack's registry (which holds the base layers by then) and to an
     empty one, vs pushing the same image again (the tag already holds it: reused, nothing pushed);
  3. a broken v2 (demo/app_v2.py: /health answers 503) released to dev while a client polls dev's stable port:
     requests made, requests failed, and the time from the release's start to the failure being reported; then a
     healthy v3 whose smoke check fails: the time from `verify-failed` to `rolled-back` in the ledger and the
     failed requests meanwhile.
The docker-host block is saved with health_timeout=5 (the default is 60 s): the broken v2's figure is dominated by
it. Uses its own SLIPWAY_HOME and local stack (ports chosen at run time; everything binds 127.0.0.1) and stops it
at the end. Needs a Docker engine and the base image python:3.11-slim (`bash .ci/base-image.sh` builds it).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello-service"
from benchenv import git, isolate  # noqa: E402  (bench/ is sys.path[0] when the script runs)

WORK = isolate("slipway-cbench-")

from slipway import localstack  # noqa: E402

NONCE = uuid.uuid4().hex[:6]
APP = f"bench-svc-{NONCE}"  # the released app (containers and images carry dev.slipway.app=APP)
BP_APP = f"bench-bp-{NONCE}"  # the images of the build+push measurement
HEALTH_TIMEOUT_S = 5
BASE_IMAGE = "python:3.11-slim"
POLL_INTERVAL_S, POLL_LIMIT, POLL_SECONDS = 0.02, 5000, 120
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through an HTTP(S)_PROXY


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def stamp_app(path: Path, note: str) -> None:
    """Append a comment to app.py: a new commit changes code, so docker's layer cache holds no layer for it."""
    with open(path / "app.py", "a") as fh:
        fh.write(f"# {note}\n")


def make_repo() -> Path:
    """examples/hello-service as a user has it, under a unique app name; v1 tagged."""
    repo = WORK / "hello-service"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    spec = repo / "slipway.yaml"
    spec.write_text(spec.read_text().replace("app: hello-service", f"app: {APP}"))
    stamp_app(repo, f"bench {NONCE} v1")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    return repo


def commit_v2(repo: Path) -> None:
    """The demo's broken v2: /health answers 503 (no DATABASE_URL); its unit tests set one, so they pass."""
    shutil.copy(EXAMPLE / "demo" / "app_v2.py", repo / "app.py")
    shutil.copy(EXAMPLE / "demo" / "test_app_v2.py", repo / "tests" / "test_app.py")
    stamp_app(repo, f"bench {NONCE} v2")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v2: health needs a database")
    git(repo, "tag", "v2")


def commit_v3(repo: Path) -> None:
    """Healthy v3 (serves version 3) whose spec still expects version 1 from / : the 'greet' smoke check fails."""
    (repo / "app.py").write_text((EXAMPLE / "app.py").read_text().replace('VERSION = "1"', 'VERSION = "3"'))
    stamp_app(repo, f"bench {NONCE} v3")
    shutil.copy(EXAMPLE / "tests" / "test_app.py", repo / "tests" / "test_app.py")
    spec = repo / "slipway.yaml"
    text = spec.read_text()
    old = "expect: {status: 200, body_contains: hello from hello-service}"
    assert old in text, "examples/hello-service/slipway.yaml changed: update commit_v3"
    spec.write_text(text.replace(old, """expect: {status: 200, body_contains: '"version": "1"'}"""))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v3: healthy, but the smoke check expects version 1")
    git(repo, "tag", "v3")


def get(url: str) -> tuple[int, str]:
    with _OPENER.open(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


class Poller:
    """A client polling the stable port during an operation; bounded in count and time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def requests(self) -> int:
        return self.ok + len(self.failures)

    def _run(self) -> None:
        deadline = time.monotonic() + POLL_SECONDS
        while not self._stop.is_set() and self.requests < POLL_LIMIT and time.monotonic() < deadline:
            try:
                status, _ = get(self.url)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {status}")
            except Exception as exc:  # noqa: BLE001 - every failure is evidence
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(POLL_INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def container_ids(client, env: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": [f"dev.slipway.app={APP}", f"dev.slipway.env={env}"]})
    return sorted(c.id for c in found)


def container_releases(client, env: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": [f"dev.slipway.app={APP}", f"dev.slipway.env={env}"]})
    return sorted(c.labels.get("dev.slipway.release", "?") for c in found)


def endpoint(env: str) -> str:
    from tasks.wiring import open_store

    return open_store("default")[1].head(APP, env).location["endpoint"]


def served_version(env: str) -> str | None:
    status, body = get(endpoint(env) + "/")
    return json.loads(body).get("version") if status == 200 else None


# ---- 1. release: cold vs unchanged re-release ----------------------------------------------------------------
def bench_release(release, client, repo: Path) -> dict:
    url = f"file://{repo}"
    cold, state = timed(release, repo_url=url, ref="v1", return_state=True)
    assert state.is_completed(), state.message
    first = state.result()
    assert first["artifact"]["reused"] is False, first["artifact"]
    envs = ("dev", "staging", "prod")
    before = {env: container_ids(client, env) for env in envs}
    assert all(len(ids) == 1 for ids in before.values()), before
    assert all(served_version(env) == "1" for env in envs)
    warm = []
    for _ in range(3):
        t, state = timed(release, repo_url=url, ref="v1", return_state=True)
        assert state.is_completed(), state.message
        again = state.result()
        assert again["artifact"]["reused"] is True and again["release_id"] == first["release_id"], again["artifact"]
        warm.append(t)
    after = {env: container_ids(client, env) for env in envs}
    w = statistics.median(warm)
    return {
        "release_id": first["release_id"],
        "image": first["artifact"].get("image"),
        "cold_s": round(cold, 2),
        "rerelease_s": round(w, 2),
        "rerelease_runs_s": [round(x, 2) for x in warm],
        "ratio_cold_over_rerelease": round(cold / w, 2),
        "containers_reused": after == before,
    }


# ---- 2. build + push alone ----------------------------------------------------------------------------------
class EmptyRegistry:
    """A second docker-registry (loopback, its own empty storage) for one cold push; stopped by its pid."""

    def __init__(self, name: str) -> None:
        self.port = localstack.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = WORK / name
        self.dir.mkdir(parents=True)
        (self.dir / "config.yml").write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}}}}\n"
            f"http: {{addr: {self.address}}}\n"
            "log: {level: warn}\n"
        )
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        with open(self.dir / "registry.log", "ab") as log:
            self.proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(self.dir / "config.yml")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                get(f"http://{self.address}/v2/")
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"a temporary docker-registry did not start on {self.address}: see {self.dir / 'registry.log'}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _layer_counts(lines: list[str]) -> dict:
    return {
        "pushed": sum(line.endswith(": Pushed") for line in lines),
        "mounted": sum("Mounted from" in line for line in lines),
        "already_there": sum(line.endswith(": Layer already exists") for line in lines),
    }


def bench_build_push(client, registry: str, repo: Path, runs: int = 3) -> dict:
    """Each run: a new top layer (as a new commit has), built, then pushed under a fresh repository and tag to
    (a) the stack's registry, which already holds the base image's layers from the release above (the engine
    mounts them), and (b) an empty registry (every layer uploaded). Then the reuse path: the same image again."""
    from slipway.artifact.image import build_image, oci_labels
    from slipway.artifact.registry import push_image, remote_digest

    builds, pushes_warm_base, pushes_empty, layers_warm_base, layers_empty = [], [], [], [], []
    last = None
    for i in range(runs):
        ctx = WORK / f"bp-{i}"
        shutil.copytree(repo, ctx, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache"))
        stamp_app(ctx, f"bench {NONCE} build+push run {i}")
        name, tag = f"{BP_APP}-{i}", f"cold-{NONCE}-{i}"  # a repository and tag the registry has never seen
        labels = oci_labels(app=BP_APP, commit=f"{i:040x}", ref="bench", repo=f"file://{ctx}", spec_digest="bench")
        t_build, built = timed(build_image, client, context=ctx, dockerfile="Dockerfile", local_tag=f"slipway/{name}:{tag}", labels=labels)
        builds.append(t_build)
        lines: list[str] = []
        t, ref = timed(push_image, client, built.image_id, registry=registry, name=name, tag=tag, log=lines.append)
        assert not any("already holds this image" in line for line in lines), lines
        pushes_warm_base.append(t)
        layers_warm_base.append(_layer_counts(lines))
        with EmptyRegistry(f"empty-registry-{i}") as empty:
            lines = []
            t, _ = timed(push_image, client, built.image_id, registry=empty.address, name=name, tag=tag, log=lines.append)
            pushes_empty.append(t)
            layers_empty.append(_layer_counts(lines))
        last = (built, name, tag, ref)

    built, name, tag, ref = last
    reuse, lookups = [], []
    for _ in range(3):
        lines = []
        t, again = timed(push_image, client, built.image_id, registry=registry, name=name, tag=tag, log=lines.append)
        assert again.digest == ref.digest and any("already holds this image" in line for line in lines), lines
        reuse.append(t)
        t, digest = timed(remote_digest, registry, name, tag)  # what the flow's find-pushed-image does
        assert digest == ref.digest
        lookups.append(t)
    b, pw, pe, again = (statistics.median(x) for x in (builds, pushes_warm_base, pushes_empty, reuse))
    return {
        "runs": runs,
        "image_bytes": client.api.inspect_image(built.image_id)["Size"],
        "cold_build_s": round(b, 2),
        "cold_push_registry_has_base_s": round(pw, 2),
        "cold_push_registry_has_base_layers": layers_warm_base[-1],
        "cold_push_empty_registry_s": round(pe, 2),
        "cold_push_empty_registry_layers": layers_empty[-1],
        "cold_build_push_registry_has_base_s": round(b + pw, 2),
        "cold_build_push_empty_registry_s": round(b + pe, 2),
        "runs_s": {"build": [round(x, 2) for x in builds], "push_registry_has_base": [round(x, 2) for x in pushes_warm_base],
                   "push_empty_registry": [round(x, 2) for x in pushes_empty]},
        "reuse_push_same_image_s": round(again, 3),
        "reuse_remote_digest_lookup_s": round(statistics.median(lookups), 3),
        "ratio_cold_registry_has_base_over_reuse": round((b + pw) / again, 1),
        "ratio_cold_empty_registry_over_reuse": round((b + pe) / again, 1),
    }


# ---- 3. failures: a health check that never passes, a smoke check that fails -----------------------------------
def bench_health_failure(release, client, repo: Path, v1_release: str) -> dict:
    commit_v2(repo)
    with Poller(endpoint("dev") + "/") as poller:
        t, state = timed(release, repo_url=f"file://{repo}", ref="v2", only=["dev"], return_state=True)
    assert state.is_failed(), state.message
    err = str(state.result(raise_on_failure=False))
    assert "not healthy after" in err and "dev unchanged (still serving" in err, err
    assert served_version("dev") == "1" and container_releases(client, "dev") == [v1_release]
    return {
        "release_start_to_failure_reported_s": round(t, 2),
        "health_timeout_s": HEALTH_TIMEOUT_S,
        "requests": poller.requests,
        "failed_requests": len(poller.failures),
        "failures_sample": poller.failures[:5],
        "error": err[:300],
    }


def bench_verify_failure(release, client, repo: Path, v1_release: str) -> dict:
    from tasks.wiring import open_store

    commit_v3(repo)
    with Poller(endpoint("dev") + "/") as poller:
        t, state = timed(release, repo_url=f"file://{repo}", ref="v3", only=["dev"], return_state=True)
    assert state.is_failed(), state.message
    err = str(state.result(raise_on_failure=False))
    assert "smoke check 'greet' failed in dev" in err and f"dev rolled back to {v1_release}" in err, err
    assert served_version("dev") == "1" and container_releases(client, "dev") == [v1_release]
    entries = open_store("default")[1].entries(APP, "dev")
    failed = [e for e in entries if e.kind == "verify-failed"][-1]
    back = next(e for e in entries if e.kind == "rolled-back" and e.seq > failed.seq)
    gap = (datetime.fromisoformat(back.at) - datetime.fromisoformat(failed.at)).total_seconds()
    return {
        "verify_failed_to_rolled_back_s": round(gap, 3),
        "release_s": round(t, 2),
        "requests": poller.requests,
        "failed_requests": len(poller.failures),
        "failures_sample": poller.failures[:5],
        "error": err[:300],
    }


# ---- cleanup ------------------------------------------------------------------------------------------------
def cleanup(client) -> None:
    for app in (APP, BP_APP):
        for c in client.containers.list(all=True, filters={"label": f"dev.slipway.app={app}"}):
            try:
                c.remove(force=True)
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning
                print(f"could not remove container {c.name}: {exc}", file=sys.stderr)
        for image in client.images.list(filters={"label": f"dev.slipway.app={app}"}):
            try:
                client.images.remove(image.id, force=True)
            except Exception as exc:  # noqa: BLE001
                print(f"could not remove image {image.short_id}: {exc}", file=sys.stderr)


def reap_children() -> None:
    """Collect this process's exited children (the stack's servers stopped by ``down``): without it one that exited
    after ``down`` stopped waiting stays a zombie once this process ends, where init does not reap."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def print_table(r: dict) -> None:
    rel, bp, hf, vf = r["release"], r["build_push"], r["health_failure"], r["verify_failure"]
    lb, le = bp["cold_push_registry_has_base_layers"], bp["cold_push_empty_registry_layers"]
    print()
    print("| measure | figure |")
    print("|---|---|")
    print(f"| hello-service dev→staging→prod, cold (new commit: test venv + tests, docker build, push to an empty registry, 3 blue/green deploys) | {rel['cold_s']} s |")
    print(f"| unchanged re-release (artifact + containers reused, 3 re-verifications; median of 3) | {rel['rerelease_s']} s |")
    print(f"| ratio cold / re-release | {rel['ratio_cold_over_rerelease']}× |")
    print(f"| containers untouched by the re-releases | {rel['containers_reused']} |")
    print(f"| build_image, new top layer, base image local (median of {bp['runs']}; image {bp['image_bytes'] / 1e6:.0f} MB) | {bp['cold_build_s']} s |")
    print(f"| push_image, fresh repository + tag, registry already holds the base ({lb['pushed']} layer pushed, {lb['mounted']} mounted) | {bp['cold_push_registry_has_base_s']} s |")
    print(f"| push_image, fresh tag, empty registry ({le['pushed']} layers pushed) | {bp['cold_push_empty_registry_s']} s |")
    print(f"| cold build + push: registry holds the base / empty registry | {bp['cold_build_push_registry_has_base_s']} s / {bp['cold_build_push_empty_registry_s']} s |")
    print(f"| push of the same image again (reused: the tag already holds it, nothing pushed; median of 3) | {bp['reuse_push_same_image_s']} s |")
    print(f"| registry digest lookup (the flow's find-pushed-image) | {bp['reuse_remote_digest_lookup_s']} s |")
    print(f"| ratio cold build+push / reused push: registry holds the base / empty registry | {bp['ratio_cold_registry_has_base_over_reuse']}× / {bp['ratio_cold_empty_registry_over_reuse']}× |")
    print(f"| broken v2 (/health 503) to dev: release start → failure reported (health_timeout={hf['health_timeout_s']} s; default 60) | {hf['release_start_to_failure_reported_s']} s |")
    print(f"| … requests to dev's stable port meanwhile / failed | {hf['requests']} / {hf['failed_requests']} |")
    print(f"| healthy v3, smoke check fails: `verify-failed` → `rolled-back` (ledger) | {vf['verify_failed_to_rolled_back_s']} s |")
    print(f"| … whole v3 release call | {vf['release_s']} s |")
    print(f"| … requests to dev's stable port meanwhile / failed | {vf['requests']} / {vf['failed_requests']} |")


def main() -> int:
    problem = localstack.docker_available()
    if problem:
        print(f"container bench skipped: {problem}")
        shutil.rmtree(WORK, ignore_errors=True)
        return 0
    import docker

    client = docker.from_env(timeout=120)
    try:
        client.images.get(BASE_IMAGE)
    except Exception:  # noqa: BLE001
        print(f"container bench skipped: base image {BASE_IMAGE} is not on the engine (bash .ci/base-image.sh builds it)")
        shutil.rmtree(WORK, ignore_errors=True)
        return 0

    print(f"bench work dir: {WORK}  (app {APP})")
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}, "app": APP,
                     "notes": [f"docker-host block saved with health_timeout={HEALTH_TIMEOUT_S} (default 60 s)"]}
    try:
        t_up, info = timed(localstack.up)
        print(f"local stack up in {t_up:.1f}s (registry {info['registry']})")
        if not info.get("registry"):
            print(f"container bench skipped: the local registry did not start ({info.get('docker')})")
            return 0
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            from deployments.local_blocks import save_local_blocks
            from deployments.runner import flush_prefect_workers, quiet_console_tracebacks
            from flows.release import release

            quiet_console_tracebacks()
            save_local_blocks(
                info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"], registry=info["registry"],
                proxy_root=info["proxy_root"], health_timeout=HEALTH_TIMEOUT_S,
            )
            try:
                repo = make_repo()
                results["release"] = bench_release(release, client, repo)
                results["build_push"] = bench_build_push(client, info["registry"], repo)
                v1 = results["release"]["release_id"]
                results["health_failure"] = bench_health_failure(release, client, repo, v1)
                results["verify_failure"] = bench_verify_failure(release, client, repo, v1)
            finally:
                flush_prefect_workers()
    finally:
        try:
            cleanup(client)
        finally:
            localstack.down()
            reap_children()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "container_bench.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    failed = results["health_failure"]["failed_requests"] + results["verify_failure"]["failed_requests"]
    shutil.rmtree(WORK, ignore_errors=True)
    if failed:
        print(f"\n{failed} requests to dev's stable port failed during the failed releases (should be 0): "
              f"{results['health_failure']['failures_sample'] + results['verify_failure']['failures_sample']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fault-injection matrix: for each step of a release, inject a real fault, then check the invariants:

- the environment serves a verified release at 100% (the alias is on the ledger's live version, no weights) and that
  version runs the release's code (CodeSha256);
- the ledger agrees with the live state and has nothing in progress; its sequence numbers have no gaps;
- no artifact was lost or overwritten (every stored zip still hashes to its name);
- the next release succeeds (the next cell's release when it completes, else a clean release at the end of the row).

How each step's fault is made (nothing in Slipway is patched):

- AWS steps (publish, create version, shift alias, verify, canary bake and promote, ledger write, the rollback): a
  proxy in front of the local AWS answers one chosen request with throttling, a 5xx or access denied, drops the
  connection, holds the answer past the client's read timeout (after forwarding it: the call took effect), or
  SIGKILLs the release process when the request arrives.
- clone: the repository is cloned over ssh through a fake ``ssh`` on PATH (as git's own tests do) that answers like a
  failing server: permission denied, connection reset, a server that never answers, or SIGKILL of the release.
- test: the repository's tests hang past ``test.timeout``, or the release process is SIGKILLed while they run.
- build: the Lambda dependencies come from a package index behind the same kind of proxy.

A rollback that cannot complete (its own calls denied) leaves the environment for a human, reported as such; the
check is then that `slipway rollback` (the rollback flow) restores it once the fault is gone. The matrix is printed.
CI runs two fault columns: access denied (persistent) and timeout (transient, and the call took effect);
``SLIPWAY_FAULT_MATRIX=full`` adds throttling, 5xx, connection reset and SIGKILL of the release process. The harness then marks the killed
run Crashed, as a worker does, so the next run takes its lock at once (``tasks.locks``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faultproxy import FaultProxy, Rule


STEPS = {  # step → how its fault is injected: ("aws", operation, path filter, skip, app) | ("git",) | ("test",) | ("pip",)
    "clone": ("git",),
    "test": ("test",),
    "build (dependencies)": ("pip",),
    "publish artifact": ("aws", "S3Put", "/artifacts/", 0, "plain"),
    "create version": ("aws", "PublishVersion", "", 0, "plain"),
    "shift alias": ("aws", "UpdateAlias", "", 0, "plain"),
    "verify (invoke)": ("aws", "Invoke", "", 0, "plain"),
    "bake (canary metrics)": ("aws", "GetMetricStatistics", "", 0, "canary"),
    "promote (canary)": ("aws", "UpdateAlias", "", 1, "canary"),  # the 50% shift passes; the promotion is faulted
    "ledger write": ("aws", "S3Put", "/ledger/", 0, "plain"),
    "rollback itself": ("aws", "UpdateAlias", "", 1, "broken"),  # the release's own shift passes; the rollback's is faulted
}
FAULTS = {  # column → (kind, times: -1 = every matching request)
    "throttled": ("throttle", 1),
    "5xx": ("5xx", 1),
    "access denied": ("denied", -1),
    "timeout": ("timeout", 1),
    "connection reset": ("reset", 1),
    "SIGKILL": ("kill", 1),
}
if os.environ.get("SLIPWAY_FAULT_MATRIX") != "full":  # CI: a persistent answer, and a lost one (then retried)
    FAULTS = {name: FAULTS[name] for name in ("access denied", "timeout")}
NOT_APPLICABLE = {  # (step kind, fault kind) → why the cell is empty
    **{("git", k): "— (ssh has no such answer)" for k in ("throttle", "5xx")},
    **{("test", k): "— (no network call)" for k in ("throttle", "5xx", "denied", "reset")},
}
READ_TIMEOUT_S = 3  # the faulty blocks' botocore read timeout; the proxy holds a "timeout" answer longer
RESULTS: dict[tuple[str, str], str] = {}
APPS: dict[str, "App"] = {}


@pytest.fixture(scope="module")
def faulty(prefect_api):
    """A proxy in front of the session's local AWS, and blocks (store `faulty`, lambda target `faulty`) that use it."""
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import ArtifactStoreBlock, LambdaTargetBlock

    proxy = FaultProxy(upstream=prefect_api["env"]["AWS_ENDPOINT_URL"], hold_seconds=READ_TIMEOUT_S + 2)
    url = proxy.start()
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(
                               endpoint_url=url, config={"read_timeout": READ_TIMEOUT_S, "connect_timeout": READ_TIMEOUT_S}))
    ArtifactStoreBlock(bucket=prefect_api["bucket"], prefix="slipway", credentials=creds).save("faulty", overwrite=True)
    LambdaTargetBlock(credentials=creds, role_arn=prefect_api["role_arn"], metrics_period_s=1, metrics_delay_s=0).save("faulty", overwrite=True)
    yield proxy
    proxy.stop()
    if RESULTS:
        print("\n" + render_matrix(RESULTS))


def render_matrix(results: dict[tuple[str, str], str]) -> str:
    faults = list(FAULTS)
    lines = ["| step | " + " | ".join(faults) + " |", "|---|" + "---|" * len(faults)]
    for step in STEPS:
        lines.append(f"| {step} | " + " | ".join(results.get((step, f), "—") for f in faults) + " |")
    return "fault-injection matrix (outcome; invariants checked after each cell):\n" + "\n".join(lines)


def _aws(prefect_api, service: str):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client(service, endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


CANARY_DEV = """  - name: dev
    target: faulty
    strategy:
      canary: {steps: [50, 100], bake: 2s}
    traffic:
      rate: 20/s
      events: [{"queryStringParameters": {"name": "ada"}}]
    analysis: {min_requests: 10, min_latency_periods: 2, max_latency_increase: 5}
"""


class App:
    """The example app in a repository of its own, released to dev through the faulty blocks."""

    def __init__(self, repo, kind: str, tmp: Path):
        self.repo, self.kind, self.tmp = repo, kind, tmp
        self.n = 1
        self.url = repo.url
        spec = (repo.path / "slipway.yaml").read_text()
        spec = spec.replace('test:\n  command: ["python", "-m", "pytest", "-q"]\n', "")  # only the test row runs tests
        spec = spec[: spec.index("environments:")] + "environments:\n" + (
            CANARY_DEV if kind == "canary" else "  - name: dev\n    target: faulty\n")
        if kind == "pip":
            spec = spec.replace("  runtime: python3.11\n", "  runtime: python3.11\n  requirements: requirements.txt\n")
            repo.write("requirements.txt", "slipway-matrix-dep==1.0\n")
        repo.write("slipway.yaml", spec).commit("faulty target", tag="c1")

    def next_commit(self, broken: bool = False, tests: str | None = None) -> str:
        """A new commit (new code: a new artifact); ``tests``: the test section of the spec for this commit."""
        self.n += 1
        app = (self.repo.path / "src/app.py").read_text()
        app = re.sub(r'VERSION = "\d+"', f'VERSION = "{self.n}"', app)
        app = app.replace('        raise RuntimeError("broken")\n', "")
        if broken:
            app = app.replace('    if event.get("path") == "/health":\n', '    if event.get("path") == "/health":\n        raise RuntimeError("broken")\n', 1)
        self.repo.write("src/app.py", app)
        if self.kind == "pip":  # new requirements text: the dependency layer is rebuilt, so pip runs again
            self.repo.write("requirements.txt", f"slipway-matrix-dep==1.0  # commit {self.n}\n")
        spec = re.sub(r"(?ms)^test:\n.*?(?=^\S)", "", (self.repo.path / "slipway.yaml").read_text())
        if tests:
            spec = spec.replace("environments:\n", tests + "environments:\n")
        self.repo.write("slipway.yaml", spec).commit(f"v{self.n}{' (broken)' if broken else ''}", tag=f"c{self.n}")
        return f"c{self.n}"

    def release(self, tag: str):
        from flows.release import release

        return release(repo_url=self.url, ref=tag, only=["dev"], store_block="faulty", return_state=True)

    def release_in_a_process(self, tag: str, prefect_api, on_start) -> int:
        """Run the release in its own process (the fault SIGKILLs it); returns its exit status."""
        from conftest import ROOT

        code = ("from flows.release import release; "
                f"release(repo_url={self.url!r}, ref={tag!r}, only=['dev'], store_block='faulty')")
        env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        on_start(proc)
        try:
            return proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()


# ---- the non-AWS fault sources ------------------------------------------------------------------------------------
FAKE_SSH = """#!/bin/sh
# A fake ssh for git: runs the requested git command on this machine, or fails the way a server or network does.
# The fault file holds "<fault> <pid>"; a one-shot fault removes it. Its last argument is git's remote command.
for last; do :; done
if [ -s "$MATRIX_SSH_FAULT" ]; then
  read -r fault pid < "$MATRIX_SSH_FAULT"
  echo "$fault" >> "$MATRIX_SSH_FAULT.hits"
  case "$fault" in
    denied) echo "git@matrix-git-host: Permission denied (publickey)." >&2; exit 255 ;;
    reset) rm -f "$MATRIX_SSH_FAULT"; echo "kex_exchange_identification: read: Connection reset by peer" >&2; exit 255 ;;
    timeout) rm -f "$MATRIX_SSH_FAULT"; exec sleep 60 ;;
    kill) rm -f "$MATRIX_SSH_FAULT"; kill -9 "$pid"; exit 255 ;;
  esac
fi
exec sh -c "$last"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> Path:
    """``ssh`` on PATH is the fake above; returns the fault file to write."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    fault_file = tmp_path / "ssh-fault"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MATRIX_SSH_FAULT", str(fault_file))
    monkeypatch.setenv("SLIPWAY_CLONE_TIMEOUT", "3")
    return fault_file


def _wheel(dest: Path) -> Path:
    """A pure-Python wheel, slipway-matrix-dep 1.0, written by hand (name, metadata, RECORD with hashes)."""
    name, version = "slipway_matrix_dep", "1.0"
    files = {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: slipway-matrix-dep\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: matrix\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
                     for path, data in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    files[f"{name}-{version}.dist-info/RECORD"] = record.encode()
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


@pytest.fixture
def package_index(tmp_path, monkeypatch):
    """A PEP 503 index holding one wheel, behind a fault proxy; pip (the build's) is pointed at the proxy."""
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    wheel = _wheel(root / "files")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / "slipway-matrix-dep").mkdir(parents=True)
    (root / "simple" / "slipway-matrix-dep" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>\n')

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = FaultProxy(upstream=f"http://127.0.0.1:{server.server_address[1]}", hold_seconds=6)
    url = proxy.start()
    monkeypatch.setenv("PIP_INDEX_URL", f"{url}/simple/")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "3")  # (an inherited PIP_DEFAULT_TIMEOUT would set the same option)
    monkeypatch.setenv("PIP_RETRIES", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    yield proxy
    proxy.stop()
    server.shutdown()
    server.server_close()


def mark_crashed(run_name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))):
            if run.state and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message="the flow-run process was killed"), force=True)


def _process_with(token: str) -> bool:
    """Does a process run whose command line holds ``token`` (the repository's tests, in their sandbox)?"""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


class TestsStarted:
    """Watches, while a release runs, for the repository's test process (``token`` in its command line)."""

    __test__ = False

    def __init__(self, token: str) -> None:
        self.token, self.seen, self._stop = token, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.seen.is_set():
            if _process_with(self.token):
                self.seen.set()
            self._stop.wait(0.05)

    def __enter__(self) -> "TestsStarted":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _kill_when(started: TestsStarted, proc: subprocess.Popen, limit_s: float = 120) -> None:
    """SIGKILL ``proc`` as soon as the repository's tests have started."""
    waited = threading.Event()
    for _ in range(int(limit_s / 0.05)):
        if started.seen.is_set() or proc.poll() is not None:
            break
        waited.wait(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)


# ---- the invariants -----------------------------------------------------------------------------------------------
def invariant_violations(prefect_api, app: str) -> list[str]:
    from tasks.wiring import open_store

    store, ledger = open_store("default")
    head = ledger.head(app, "dev")
    problems = []
    if head.in_progress is not None:
        problems.append(f"ledger: {head.in_progress.kind} in progress")
    if head.live is None:
        return problems + ["ledger: nothing live"]
    lam = _aws(prefect_api, "lambda")
    alias = lam.get_alias(FunctionName=f"{app}-dev", Name="live")
    if alias["FunctionVersion"] != head.live.version:
        problems.append(f"alias on {alias['FunctionVersion']}, ledger says {head.live.version}")
    if (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights"):
        problems.append(f"alias still weighted: {alias['RoutingConfig']}")
    conf = lam.get_function_configuration(FunctionName=f"{app}-dev", Qualifier=head.live.version)
    if conf["CodeSha256"] != base64.b64encode(bytes.fromhex(head.live.artifact_sha256)).decode():
        problems.append("live version runs other code than the ledger's release")
    seqs = [e.seq for e in ledger.entries(app, "dev")]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"ledger sequence has gaps: {seqs}")
    s3 = _aws(prefect_api, "s3")
    listed = s3.list_objects_v2(Bucket=prefect_api["bucket"], Prefix=f"slipway/artifacts/{app}/")
    for obj in listed.get("Contents", []):
        if obj["Key"].endswith(".zip"):
            body = s3.get_object(Bucket=prefect_api["bucket"], Key=obj["Key"])["Body"].read()
            if hashlib.sha256(body).hexdigest() != obj["Key"].rsplit("/", 1)[1].removesuffix(".zip"):
                problems.append(f"artifact {obj['Key']} does not hash to its name")
    return problems


def _outcome(state, app: App) -> str:
    from tasks.wiring import open_store

    from flows.release import rollback

    head = open_store("default")[1].head(app.repo.app, "dev")
    if state.is_completed():
        return "released (retried)"
    if head.in_progress is not None and head.in_progress.kind == "rollback":
        assert rollback(app=app.repo.app, environment="dev", store_block="faulty", reason="matrix: after the fault").get("to_release")
        return "rollback failed → reported; `slipway rollback` restored"
    recorded = [e.kind for e in open_store("default")[1].entries(app.repo.app, "dev")]
    return "failed → rolled back" if recorded and recorded[-1] == "rolled-back" else "failed → untouched"


# The tests run sandboxed (nothing outside their checkout is writable), so they cannot leave a marker where the harness
# looks: the harness watches for their process instead, by a token in its command line.
TEST_SECTION = 'test:\n  command: ["python", "-c", "import time; time.sleep({sleep})  # {marker}"]\n  timeout: {timeout}\n'


@pytest.mark.parametrize("step", list(STEPS))
def test_fault_matrix(step, faulty, prefect_api, app_repo, tmp_path, request):
    """One app per step; one release per fault on it, each followed by the invariants and a clean release."""
    how = STEPS[step]
    kind = how[0]
    pip_proxy = request.getfixturevalue("package_index") if kind == "pip" else None
    ssh_fault = request.getfixturevalue("fake_ssh") if kind == "git" else None
    app_kind = "canary" if kind == "aws" and how[4] == "canary" else "plain" if kind == "aws" else kind
    app = APPS.get(app_kind)
    if app is None:  # one app per kind, shared by its rows (each row starts from a verified release)
        app = APPS[app_kind] = App(app_repo(f"matrix-{app_kind}"), app_kind, tmp_path)
        if kind == "git":
            app.url = f"ssh://matrix-git-host{app.repo.path}"
        assert app.release("c1").is_completed(), f"{step}: the first release (no fault) failed"
    failures = []
    owed: list[tuple[str, str]] = []  # failed cells whose "the next release succeeds" is still to be shown
    for fault, (fkind, times) in FAULTS.items():
        if (kind, fkind) in NOT_APPLICABLE:
            RESULTS[(step, fault)] = NOT_APPLICABLE[(kind, fkind)]
            continue
        marker = f"slipway-matrix-tests-{fault.replace(' ', '-')}-{os.getpid()}"
        started = TestsStarted(marker)
        tests = (TEST_SECTION.format(marker=marker, sleep=60, timeout=2 if fkind == "timeout" else 120)
                 if kind == "test" else None)
        tag = app.next_commit(broken=(kind == "aws" and how[4] == "broken"), tests=tests)
        rule = None
        if kind == "aws":
            _, operation, path, skip, _ = how
            rule = faulty.arm(Rule(operation=operation, fault=fkind, times=times, skip=skip,
                                   path_contains=path + (app.repo.app if path else "")))
        elif kind == "pip":
            rule = pip_proxy.arm(Rule(operation="GET", fault=fkind, times=times, path_contains="/simple/slipway-matrix-dep"))
        elif kind == "git":
            ssh_fault.write_text(f"{fkind} 0\n")

        if fkind == "kill":
            def on_start(proc):
                if kind in ("aws", "pip"):
                    (faulty if kind == "aws" else pip_proxy).kill_pid = proc.pid
                elif kind == "git":
                    ssh_fault.write_text(f"kill {proc.pid}\n")
                else:
                    _kill_when(started, proc)
            with started:
                status = app.release_in_a_process(tag, prefect_api, on_start)
            mark_crashed(f"release {app.url}@{tag}")  # what a worker does when its flow-run process dies
            faulty.clear()
            if pip_proxy:
                pip_proxy.clear()
            assert status == -9, f"{step}/{fault}: the release process was not killed (exit {status})"
            from tasks.wiring import open_store

            left = open_store("default")[1].head(app.repo.app, "dev").in_progress
            state = app.release(app.next_commit())  # the next run: reconciles first (after the dead run's lock lease)
            kinds = [e.kind for e in open_store("default")[1].entries(app.repo.app, "dev")]
            outcome = ("killed → next release reconciled, then released" if left is not None and "reconciled" in kinds
                       else "killed → nothing in progress; next release released")
            problems = ([] if state.is_completed() else ["the next release failed"]) + invariant_violations(prefect_api, app.repo.app)
            if left is not None and "reconciled" not in kinds:
                problems.append("an in-progress record was left and not reconciled")
            if state.is_completed():
                owed.clear()
        else:
            with started:
                state = app.release(tag)
            for proxy in (faulty, pip_proxy):
                if proxy:
                    proxy.clear()
            if kind == "git":
                ssh_fault.unlink(missing_ok=True)
                assert Path(f"{ssh_fault}.hits").exists(), f"{step}/{fault}: the fake ssh never ran"
                Path(f"{ssh_fault}.hits").unlink()
            elif kind == "test":
                assert started.seen.is_set(), f"{step}/{fault}: the tests never started"
            else:
                assert rule.injected >= 1, f"{step}/{fault}: the fault was never injected (no request matched)"
            outcome = _outcome(state, app)
            problems = invariant_violations(prefect_api, app.repo.app)
            if state.is_completed():
                owed.clear()  # this release is "the next release" of the cells before it that failed
            else:
                owed.append((step, fault))
        RESULTS[(step, fault)] = outcome + (" ✗ " + "; ".join(problems) if problems else " ✓")
        if problems:
            failures.append(f"{step} × {fault}: {problems}")
    if owed:  # the last failed cells: the next release (a clean commit) must succeed, and the invariants hold after it
        problems = ([] if app.release(app.next_commit()).is_completed() else ["the next release failed"]) + \
            invariant_violations(prefect_api, app.repo.app)
        for cell in owed:
            if problems:
                RESULTS[cell] = RESULTS[cell].replace(" ✓", "") + " ✗ " + "; ".join(problems)
                failures.append(f"{cell[0]} × {cell[1]}: {problems}")
    assert not failures, "\n".join(failures)

"""A hostile repository's tests, run the way a release runs them (``run_tests``), try what a shared worker must not
allow: poison the shared test environment so every later run passes, write into the caches and outside the
checkout, read another process's environment (a worker's AWS keys) through /proc, reach a service on the host's
127.0.0.1, read a file in the user's home. Each probe is first run with the sandbox switched off, in caches of its
own, to prove the probe works (and that the poisoned cache is then caught by its manifest); then sandboxed, where
each must fail, and another app's failing tests still fail after it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from slipway.core import sandbox
from slipway.core.errors import SandboxUnavailable, TestsFailed
from slipway.source.testrun import ensure_test_env, run_tests
from wheelhouse import offline_pip_args

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

HOSTILE_TEST = '''
import glob, json, os, pathlib, socket, sys

PROBES = json.loads(pathlib.Path(__file__).with_name("probes.json").read_text())
results = {}


def attempt(name, fn):
    try:
        fn()
        results[name] = True
    except Exception as exc:
        results[name] = False
        results[name + ":why"] = f"{type(exc).__name__}: {exc}"


def test_probes():
    site = next(p for p in sys.path if p.endswith("site-packages"))
    attempt("force-pass-pth", lambda: pathlib.Path(site, "zz_force_pass.pth").write_text("import os; os._exit(0)\\n"))
    for i, target in enumerate(PROBES["write"]):
        attempt(f"write-{i}", lambda t=target: pathlib.Path(t).write_text("poisoned"))
    for i, target in enumerate(PROBES["read"]):
        attempt(f"read-{i}", lambda t=target: pathlib.Path(t).read_text())
    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            if PROBES["secret"].encode() in open(path, "rb").read():
                found.append(path)
        except OSError:
            pass
    results["proc-environ"] = bool(found)
    attempt("loopback", lambda: socket.create_connection(("127.0.0.1", PROBES["port"]), timeout=3).close())
    pathlib.Path("probe-results.json").write_text(json.dumps(results))
    assert False, "this repository's own test fails"
'''


@pytest.fixture(scope="module")
def pip_args(tmp_path_factory) -> list[str]:
    return offline_pip_args(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """What a worker has around a release: a process holding credentials, a service on 127.0.0.1, a home with a
    secret in it, SLIPWAY_HOME with a shared cache entry."""
    secret = f"canary-{uuid.uuid4().hex}"
    holder = subprocess.Popen(["sleep", "300"], env={"AWS_SECRET_ACCESS_KEY": secret, "PATH": "/usr/bin:/bin"})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(f"aws_secret_access_key = {secret}\n")
    monkeypatch.setenv("HOME", str(home))
    slipway_home = tmp_path / "slipway-home"
    deps = slipway_home / "cache" / "lambda-deps" / "python3.11-entry" / "requests"
    deps.mkdir(parents=True)
    (deps / "__init__.py").write_text("# vendored\n")
    monkeypatch.setenv("SLIPWAY_HOME", str(slipway_home))
    try:
        yield {"secret": secret, "port": server.getsockname()[1], "home": home, "deps_module": deps / "__init__.py",
               "outside": tmp_path / "outside-the-checkout.txt"}
    finally:
        holder.kill()
        holder.wait()
        server.close()


def _hostile_repo(root: Path, world: dict, env_cache: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_hostile.py").write_text(HOSTILE_TEST)
    probes = {"secret": world["secret"], "port": world["port"],
              "write": [str(world["deps_module"]), str(env_cache / "poison.txt"), str(world["outside"])],
              "read": [str(world["home"] / ".aws" / "credentials")]}
    (root / "tests" / "probes.json").write_text(json.dumps(probes))
    return root


def _failing_repo(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_other_app.py").write_text("def test_broken():\n    assert 1 == 2\n")
    return root


def _requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements-dev.txt"
    path.write_text("# pytest only\n")
    return path


def test_the_probes_work_without_the_sandbox_and_the_poisoned_cache_is_caught(tmp_path, world, pip_args, monkeypatch):
    """The control: unsandboxed, every probe succeeds; the next run finds the test environment modified (the .pth
    the hostile test dropped), discards and rebuilds it, so the other app's failing test still fails."""
    monkeypatch.setenv("SLIPWAY_SANDBOX", "off")
    env_cache, reqs = tmp_path / "envs", _requirements(tmp_path)
    repo = _hostile_repo(tmp_path / "hostile", world, env_cache)

    run_tests(repo, ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache, pip_args=pip_args)

    results = json.loads((repo / "probe-results.json").read_text())
    assert {k: v for k, v in results.items() if not k.endswith(":why")} == {
        "force-pass-pth": True, "write-0": True, "write-1": True, "write-2": True, "read-0": True,
        "proc-environ": True, "loopback": True}
    other = run_tests(_failing_repo(tmp_path / "other"), ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache,
                      pip_args=pip_args)
    assert not other.passed and other.failed_tests == ["tests/test_other_app.py::test_broken"]
    [note] = other.cache_notes
    assert "changed since it was built" in note and "zz_force_pass.pth" in note and "discarded and rebuilt" in note


def test_a_hostile_repository_reaches_nothing_from_the_sandbox(tmp_path, world, pip_args):
    env_cache, reqs = tmp_path / "envs", _requirements(tmp_path)
    repo = _hostile_repo(tmp_path / "hostile", world, env_cache)

    report = run_tests(repo, ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache, pip_args=pip_args)

    assert not report.passed and report.failed_tests == ["tests/test_hostile.py::test_probes"]
    results = json.loads((repo / "probe-results.json").read_text())  # the checkout is writable
    # writes under /tmp land in the sandbox's private /tmp (gone with it): what counts is what they changed outside
    assert {k: v for k, v in results.items() if not k.endswith(":why") and k not in ("write-1", "write-2")} == {
        "force-pass-pth": False, "write-0": False, "read-0": False, "proc-environ": False, "loopback": False}, results
    assert world["deps_module"].read_text() == "# vendored\n"
    assert not (env_cache / "poison.txt").exists() and not world["outside"].exists()
    # the next app's failing tests fail, in the same cached environment, which is intact
    other = run_tests(_failing_repo(tmp_path / "other"), ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache,
                      pip_args=pip_args)
    assert not other.passed and other.failed_tests == ["tests/test_other_app.py::test_broken"]
    assert other.cache_notes == ()


def test_a_build_backend_run_by_pip_cannot_write_the_caches_or_the_checkout(tmp_path, world, pip_args):
    """A requirement that is a local package: its build code (an in-tree PEP 517 backend, as setup.py would be)
    runs while the test environment installs."""
    env_cache = tmp_path / "envs"
    repo = tmp_path / "repo"
    (repo / "localpkg").mkdir(parents=True)
    (repo / "localpkg" / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    (repo / "localpkg" / "backend.py").write_text(
        "import pathlib\n"
        "def get_requires_for_build_wheel(config_settings=None):\n"
        f"    for target in [{str(world['deps_module'])!r}, {str(repo / 'written-by-build.txt')!r}]:\n"
        "        try:\n            pathlib.Path(target).write_text('poisoned')\n        except OSError as exc:\n"
        "            print('refused:', exc)\n"
        "    raise SystemExit('the build backend ran and stopped here')\n"
    )
    reqs = repo / "requirements-dev.txt"
    reqs.write_text("./localpkg\n")

    with pytest.raises(TestsFailed, match="test environment") as caught:
        ensure_test_env([reqs], env_cache, pip_args=pip_args, source_root=repo)

    assert "the build backend ran and stopped here" in caught.value.evidence["output_tail"]  # it did run, sandboxed
    assert world["deps_module"].read_text() == "# vendored\n"
    assert not (repo / "written-by-build.txt").exists()  # the checkout is read-only while pip runs


def test_without_bubblewrap_repository_code_is_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sandbox._probe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable) as caught:
            run_tests(_failing_repo(tmp_path / "repo"), ["python", "-m", "pytest"], [], cache_root=tmp_path / "envs")
    finally:
        sandbox._probe.cache_clear()
    assert "\n" not in str(caught.value)
    assert "bubblewrap" in str(caught.value) and "SLIPWAY_SANDBOX=off" in str(caught.value)
    assert caught.value.ref == "sandbox-unavailable"
    assert not (tmp_path / "envs").exists()  # nothing was installed, nothing ran


def test_the_operator_can_give_tests_the_network_and_a_repository_cannot(tmp_path, monkeypatch, pip_args):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "test_net.py").write_text(
        f"import socket\ndef test_reach():\n    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n")
    reqs = tmp_path / "requirements-dev.txt"
    reqs.write_text("# pytest only\n")
    env_cache = tmp_path / "envs"
    try:
        monkeypatch.setenv("SLIPWAY_SANDBOX_NETWORK", "on")
        assert run_tests(repo, ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache, pip_args=pip_args).passed
        monkeypatch.delenv("SLIPWAY_SANDBOX_NETWORK")
        refused = run_tests(repo, ["python", "-m", "pytest", "-q"], [reqs], cache_root=env_cache, pip_args=pip_args,
                            env_extra={"SLIPWAY_SANDBOX_NETWORK": "on"})  # the test's own environment asks: no effect
        assert not refused.passed and refused.failed_tests == ["tests/test_net.py::test_reach"]
    finally:
        server.close()

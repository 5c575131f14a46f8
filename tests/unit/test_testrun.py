"""Running an app's tests in a cached, isolated virtualenv.

Offline: pytest and its dependencies are repacked into wheels from this interpreter's own installation once per
module, and every test environment installs from that directory with ``--no-index``. One virtualenv is shared
by the module (creating it is the slow part); tests that need a fresh one say so.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slipway.core.errors import SpecError, TestsFailed
from slipway.source.testrun import TestReport, ensure_test_env, parse_failed_tests, run_tests
from wheelhouse import offline_pip_args


@pytest.fixture(scope="module")
def pip_args(tmp_path_factory) -> list[str]:
    """``--no-index --find-links`` to wheels of the pytest installed here and everything it needs."""
    return offline_pip_args(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("test-envs")


@pytest.fixture(scope="module")
def requirements(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reqs") / "requirements-dev.txt"
    path.write_text("# the app needs nothing beyond pytest\n")
    return path


@pytest.fixture
def counting_runner():
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.run(cmd, **kwargs)

    run.calls = calls
    return run


def _repo(root: Path, tests: str) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_app.py").write_text(tests)
    return root


def test_a_failing_test_is_reported_by_its_node_id(tmp_path, requirements, env_cache, pip_args):
    repo = _repo(tmp_path / "repo", "def test_ok():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n")

    report = run_tests(repo, ["python", "-m", "pytest", "-q"], [requirements], cache_root=env_cache,
                       pip_args=pip_args)

    assert report.passed is False
    assert report.exit_code == 1
    assert report.failed_tests == ["tests/test_app.py::test_bad"]
    assert "1 failed, 1 passed" in report.output_tail
    with pytest.raises(TestsFailed) as caught:
        report.raise_for_failure()
    assert str(caught.value) == "tests failed: 1 failed (tests/test_app.py::test_bad)"
    assert caught.value.evidence["failed_tests"] == ["tests/test_app.py::test_bad"]
    assert caught.value.evidence["exit_code"] == 1


def test_an_all_passing_repo_passes_with_the_console_script(tmp_path, requirements, env_cache, pip_args):
    repo = _repo(tmp_path / "repo", "def test_one():\n    pass\n\ndef test_two():\n    pass\n")

    # `pytest` (not `python -m pytest`) runs bin/pytest, whose shebang must point at the cached venv.
    report = run_tests(repo, ["pytest", "-q"], [requirements], cache_root=env_cache, pip_args=pip_args)

    assert report.passed is True, report.output_tail
    assert report.failed_tests == []
    assert report.command[0] == str(ensure_test_env([requirements], env_cache) / "bin" / "pytest")
    assert report.raise_for_failure() is report


def test_the_venv_is_reused_without_calling_pip(requirements, env_cache, pip_args, counting_runner):
    first = ensure_test_env([requirements], env_cache, pip_args=pip_args)

    again = ensure_test_env([requirements], env_cache, pip_args=pip_args, runner=counting_runner)

    assert again == first
    assert counting_runner.calls == []


def test_concurrent_creators_share_one_venv_and_one_install(tmp_path, requirements, pip_args, counting_runner):
    with ThreadPoolExecutor(max_workers=3) as pool:
        venvs = list(pool.map(
            lambda _: ensure_test_env([requirements], tmp_path / "envs", pip_args=pip_args, runner=counting_runner),
            range(3),
        ))

    assert len(set(venvs)) == 1
    assert len(counting_runner.calls) == 2  # one `venv`, one `pip install`, whoever won the lock
    assert (venvs[0] / "bin" / "pytest").is_file()


def test_other_requirements_get_their_own_venv_and_failed_installs_leave_nothing(
    tmp_path, env_cache, pip_args, counting_runner
):
    bad = tmp_path / "requirements-bad.txt"
    bad.write_text("nosuchpkg-slipway==1.0\n")
    before = set(env_cache.iterdir())

    with pytest.raises(TestsFailed) as caught:
        ensure_test_env([bad], env_cache, pip_args=pip_args, runner=counting_runner)

    assert caught.value.ref == "test-env-install-failed"
    message = str(caught.value)
    assert message.startswith(f"could not install the test environment ({bad}): ")
    assert "No matching distribution found for nosuchpkg-slipway" in message
    assert len(counting_runner.calls) == 2  # venv, then pip
    assert "--python" in counting_runner.calls[1]
    assert {p for p in set(env_cache.iterdir()) - before if not p.name.endswith(".lock")} == set()


def test_host_environment_and_site_packages_do_not_leak_into_the_tests(
    tmp_path, requirements, env_cache, pip_args, monkeypatch
):
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "leaky_marker.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(leaky))
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    monkeypatch.setenv("SLIPWAY_HOST_ONLY", "1")
    repo = _repo(tmp_path / "repo", """\
import importlib.util, os, sys

def test_isolated():
    assert sys.prefix == os.environ["EXPECTED_PREFIX"]
    assert importlib.util.find_spec("leaky_marker") is None    # host PYTHONPATH
    assert importlib.util.find_spec("slipway") is None         # host site-packages (editable install)
    assert "SLIPWAY_HOST_ONLY" not in os.environ
    assert os.environ["VIRTUAL_ENV"] == sys.prefix
    assert os.environ["PATH"] == sys.prefix + "/bin:/usr/local/bin:/usr/bin:/bin"
""")
    venv = ensure_test_env([requirements], env_cache, pip_args=pip_args)

    report = run_tests(repo, ["python3", "-m", "pytest", "-q"], [requirements], cache_root=env_cache,
                       env_extra={"EXPECTED_PREFIX": str(venv)})

    assert report.passed is True, report.output_tail
    assert report.command[0] == str(venv / "bin" / "python")


def test_a_hanging_run_times_out_as_a_failed_report(tmp_path, requirements, env_cache, pip_args):
    repo = _repo(tmp_path / "repo", "")

    report = run_tests(repo, ["python", "-c", "import time; print('started', flush=True); time.sleep(60)"],
                       [requirements], cache_root=env_cache, pip_args=pip_args, timeout_s=0.5)

    assert report.passed is False
    assert report.timed_out is True
    assert report.duration_s < 10
    assert report.output_tail.splitlines() == [
        "started", "slipway: timed out after 0.5 s; the test process group was killed"]
    with pytest.raises(TestsFailed, match=r"^tests timed out after \d+ s \(") as caught:
        report.raise_for_failure()
    assert caught.value.ref == "tests-timed-out"


def test_an_unknown_command_is_a_failed_report_not_an_exception(tmp_path, requirements, env_cache, pip_args):
    repo = _repo(tmp_path / "repo", "")

    report = run_tests(repo, ["no-such-test-runner", "-x"], [requirements], cache_root=env_cache,
                       pip_args=pip_args)

    assert (report.passed, report.exit_code) == (False, 127)
    assert report.output_tail.startswith("slipway: command not found: no-such-test-runner (PATH=")


def test_an_empty_command_is_a_spec_error(tmp_path, requirements, env_cache):
    with pytest.raises(SpecError, match=r"^the test command is empty \(test.command\)"):
        run_tests(tmp_path, [], [requirements], cache_root=env_cache)


def test_missing_requirements_file_is_reported_before_any_venv_is_made(tmp_path):
    with pytest.raises(TestsFailed) as caught:
        ensure_test_env([tmp_path / "nope.txt"], tmp_path / "envs")

    assert str(caught.value) == (
        f"requirements file for the test environment does not exist ({tmp_path / 'nope.txt'}): "
        "commit the file or remove it from the spec"
    )
    assert not (tmp_path / "envs").exists()


def test_summary_lines_give_failed_and_errored_node_ids_once_each():
    output = "\n".join([
        "tests/test_a.py::test_x FAILED   [ 50%]",
        "=========================== short test summary info ============================",
        "FAILED tests/test_a.py::test_x - assert 1 == 2",
        "FAILED tests/test_a.py::test_p[a b-1] - ValueError: boom - again",
        "\x1b[31mERROR\x1b[0m tests/test_b.py - ImportError: no module named nope",
        "ERROR tests/test_c.py::test_fixture",
        "FAILED tests/test_a.py::test_x - assert 1 == 2",
        "========================= 2 failed, 1 error in 0.12s =========================",
    ])

    assert parse_failed_tests(output) == [
        "tests/test_a.py::test_x", "tests/test_a.py::test_p[a b-1]", "tests/test_b.py", "tests/test_c.py::test_fixture",
    ]


def test_many_failures_are_summarised_on_one_line():
    failed = [f"tests/test_app.py::test_{i}" for i in range(7)]
    report = TestReport(passed=False, exit_code=1, duration_s=1.0, failed_tests=failed, output_tail="",
                        command=["pytest"])

    with pytest.raises(TestsFailed) as caught:
        report.raise_for_failure()

    assert str(caught.value) == (
        "tests failed: 7 failed (tests/test_app.py::test_0, tests/test_app.py::test_1, tests/test_app.py::test_2, "
        "tests/test_app.py::test_3, tests/test_app.py::test_4, ... (2 more))"
    )

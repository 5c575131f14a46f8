"""Run an application's tests in an isolated virtualenv that is cached on its requirements.

The virtualenv is keyed on sha256(interpreter + extra packages + each requirements file's bytes). It is created
*in place* under a lock file and marked ready by a marker file written last, rather than built elsewhere and
renamed: pip writes the venv's absolute path into the shebang of every console script (``bin/pytest``), so a
renamed venv would hold scripts pointing at a directory that no longer exists. A crash mid-install leaves no
marker, and the next caller (holding the lock) wipes the partial directory and starts again.

Everything from the repository runs sandboxed (``slipway.core.sandbox``): pip installing the test environment
(an sdist's ``setup.py``, a ``-e .`` requirement) sees the package index, the checkout read-only and only the new
virtualenv writable; the tests see no network, the checkout writable and the virtualenv read-only. A ready
virtualenv carries a manifest of its files (``slipway.core.manifest``), checked before each reuse: one changed
since it was built is discarded, rebuilt and reported.

The tests run with a minimal environment: nothing from the host's PYTHONPATH, VIRTUAL_ENV or site-packages.
A failing run is a report (``passed=False``), not an exception; ``TestReport.raise_for_failure()`` turns it
into ``TestsFailed`` when a caller wants to stop the pipeline.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from slipway.core import manifest, sandbox
from slipway.core.childenv import scrubbed_environ
from slipway.core.errors import SpecError, TestsFailed
from slipway.core.home import cache_dir
from slipway.core.layout import repository_modules

OUTPUT_TAIL_LINES = 60
PIP_TIMEOUT_S = 900
_ENV_FORMAT = "slipway-test-env-v1"
_READY_MARKER = ".slipway-ready"
_SKIP = frozenset({_READY_MARKER})
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_PYTHON_NAMES = re.compile(r"python(3(\.\d+)?)?")
_SUMMARY_LINE = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class TestReport:
    passed: bool
    exit_code: int
    duration_s: float
    failed_tests: list[str]  # node ids from pytest's "FAILED ..." / "ERROR ..." summary lines
    output_tail: str  # last ~60 lines of combined stdout + stderr
    command: list[str]  # as executed (``python`` resolved to the venv's interpreter)
    timed_out: bool = False
    cache_notes: tuple[str, ...] = ()  # a cached test environment found modified, discarded and rebuilt
    repo_modules: tuple[str, ...] = ()  # the repository's own top-level module names (to tell its code from a dependency)

    __test__ = False  # not a pytest test class

    def raise_for_failure(self) -> TestReport:
        """Return self when the tests passed; raise ``TestsFailed`` (one line, details in ``evidence``) if not."""
        if self.passed:
            return self
        evidence = {"failed_tests": self.failed_tests, "output_tail": self.output_tail, "exit_code": self.exit_code,
                    "repo_modules": list(self.repo_modules)}
        if self.timed_out:
            raise TestsFailed(
                f"tests timed out after {self.duration_s:.0f} s", target=" ".join(self.command),
                hint="find the hanging test or raise the timeout", ref="tests-timed-out", evidence=evidence,
            )
        if self.failed_tests:
            raise TestsFailed(
                f"tests failed: {len(self.failed_tests)} failed", target=_short_list(self.failed_tests),
                evidence=evidence,
            )
        last = next((line for line in reversed(self.output_tail.splitlines()) if line.strip()), "no output")
        raise TestsFailed(
            f"tests failed: exit code {self.exit_code}", target=" ".join(self.command), hint=last.strip(),
            evidence=evidence,
        )


def ensure_test_env(
    requirement_files: list[Path],
    cache_root: Path | None = None,
    extra_packages: Sequence[str] = ("pytest",),
    *,
    pip_args: Sequence[str] = (),
    runner: Runner = subprocess.run,
    source_root: Path | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Return the directory of a virtualenv holding ``extra_packages`` and the requirements (cached).

    ``pip_args`` says where packages come from (``["--no-index", "--find-links", DIR]``, an index URL); it is
    deliberately not part of the cache key, which covers what is installed, not where it was fetched from.
    ``runner`` is ``subprocess.run`` unless a caller wants to observe the pip calls. ``source_root``: the checkout
    pip may read (requirements may name files or packages beside them; default: the requirements' folders).
    ``report`` hears of a cached environment found modified (discarded and rebuilt).
    """
    files = [Path(f) for f in requirement_files]
    for f in files:
        if not f.is_file():
            raise TestsFailed(
                "requirements file for the test environment does not exist", target=str(f),
                hint="commit the file or remove it from the spec", ref="test-requirements-missing",
            )
    root = Path(cache_root) if cache_root is not None else cache_dir("test-envs")
    venv = root / _env_key(files, extra_packages)[:32]
    proof = root / f"{venv.name}.manifest.json"
    if (venv / _READY_MARKER).is_file() and manifest.differences(venv, proof, _SKIP) is None:
        return venv

    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (venv / _READY_MARKER).is_file():
            changed = manifest.differences(venv, proof, _SKIP)
            if changed is None:
                return venv  # a concurrent caller finished it while we waited
            if report is not None:
                report(f"the cached test environment {venv.name} changed since it was built ({changed}): discarded and rebuilt")
        shutil.rmtree(venv, ignore_errors=True)  # leftovers of a crashed attempt, or a modified entry
        readable = [*([Path(source_root)] if source_root is not None else []), *sorted({f.resolve().parent for f in files})]
        try:
            _create_venv(venv, files, extra_packages, pip_args, runner, readable)
            manifest.write(venv, proof, _SKIP)  # before the marker: a ready environment always has its manifest
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / _READY_MARKER).write_text(_ENV_FORMAT + "\n")
    return venv


def run_tests(
    repo_dir: Path,
    command: list[str],
    requirement_files: list[Path],
    *,
    cache_root: Path | None = None,
    timeout_s: float = 900,
    env_extra: dict[str, str] | None = None,
    pip_args: Sequence[str] = (),
    memory_bytes: int | None = sandbox.DEFAULT_MEMORY_BYTES,
) -> TestReport:
    """Run ``command`` in ``repo_dir`` inside the cached test virtualenv and report; never raises on failing tests."""
    repo_dir = Path(repo_dir)
    if not command:
        raise SpecError("the test command is empty", target="test.command",
                        hint="set it, for example ['python', '-m', 'pytest', '-q']", ref="empty-test-command")
    if not repo_dir.is_dir():
        raise TestsFailed("repository directory does not exist", target=str(repo_dir),
                          hint="clone the repository before running its tests", ref="repo-dir-missing")
    sandbox.require()  # before anything of the repository's runs
    notes: list[str] = []
    venv = ensure_test_env(requirement_files, cache_root, pip_args=pip_args, source_root=repo_dir, report=notes.append)
    with tempfile.TemporaryDirectory(prefix="slipway-test-home-") as home:
        boxed = sandbox.mode() != "off"
        env = _test_env(venv, env_extra, Path(sandbox.SANDBOX_HOME if boxed else home))
        argv = _resolve_command(command, venv, env["PATH"])
        start = time.monotonic()
        if argv is None:
            return TestReport(
                passed=False, exit_code=127, duration_s=0.0, failed_tests=[], command=list(command),
                output_tail=f"slipway: command not found: {command[0]} (PATH={env['PATH']})", cache_notes=tuple(notes),
            )
        # no network, the checkout writable, the test environment read-only, nothing else of this machine's
        box = sandbox.Sandbox(writable=(repo_dir.resolve(),), readonly=(venv,), memory_bytes=memory_bytes,
                              network=sandbox.tests_get_network())
        exit_code, output, timed_out = _run(box.wrap(argv, cwd=repo_dir.resolve()), repo_dir, env, timeout_s)
    duration = time.monotonic() - start
    if timed_out:
        note = f"slipway: timed out after {timeout_s:g} s; the test process group was killed"
        output = f"{output.rstrip(chr(10))}\n{note}" if output else note
    return TestReport(
        passed=exit_code == 0 and not timed_out,
        exit_code=exit_code,
        duration_s=duration,
        failed_tests=parse_failed_tests(output),
        output_tail="\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:]),
        command=argv,
        timed_out=timed_out,
        cache_notes=tuple(notes),
        repo_modules=() if exit_code == 0 and not timed_out else tuple(sorted(repository_modules(repo_dir))),
    )


def parse_failed_tests(output: str) -> list[str]:
    """Node ids from pytest's short test summary (``FAILED id - msg`` / ``ERROR id``), in order, once each."""
    found: dict[str, None] = {}
    for line in output.splitlines():
        match = _SUMMARY_LINE.match(_ANSI.sub("", line).rstrip())
        if match:
            found.setdefault(match.group(1), None)
    return list(found)


def _env_key(files: list[Path], extra_packages: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in (_ENV_FORMAT, sys.version, os.path.realpath(sys.executable), *extra_packages):
        digest.update(part.encode() + b"\0")
    for f in files:
        data = f.read_bytes()
        digest.update(str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def _host_pip_has_python_option() -> bool:
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return False
    match = re.match(r"(\d+)\.(\d+)", version)
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= (22, 3)


def _create_venv(
    venv: Path, files: list[Path], extra_packages: Sequence[str], pip_args: Sequence[str], runner: Runner,
    readable: list[Path],
) -> None:
    python = venv / "bin" / "python"
    install = ["install", "--disable-pip-version-check", "--no-input", *pip_args, *extra_packages]
    for f in files:
        install += ["-r", str(f.resolve())]
    if _host_pip_has_python_option():
        # No pip inside the venv: the host's pip installs into it (pip >= 22.3), which saves ensurepip's seconds.
        create = [sys.executable, "-m", "venv", "--without-pip", str(venv)]
        pip = [sys.executable, "-m", "pip", "--python", str(python), *install]
    else:
        create = [sys.executable, "-m", "venv", str(venv)]
        pip = [str(python), "-m", "pip", *install]
    # pip builds sdists and local requirements (their setup.py runs): sandboxed with the package index reachable,
    # the checkout read-only and only the new virtualenv writable
    venv.mkdir(parents=True, exist_ok=True)
    readable = [*readable, *sandbox.paths_in(pip_args)]  # a wheel directory or a local index named by the caller
    box = sandbox.Sandbox(writable=(venv.resolve(),), readonly=tuple(p.resolve() for p in readable), network=True, pip_config=True)
    boxed_env = {**_pip_env(), "HOME": sandbox.SANDBOX_HOME} if sandbox.mode() != "off" else _pip_env()
    cwd = readable[0].resolve() if readable else None  # a relative path in a requirements file means the checkout's
    for step, env in ((create, _pip_env()), (box.wrap(pip, cwd=cwd), boxed_env)):
        try:
            result = runner(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=PIP_TIMEOUT_S, env=env, cwd=cwd)
        except subprocess.TimeoutExpired as exc:
            raise TestsFailed(
                f"installing the test environment took longer than {PIP_TIMEOUT_S} s",
                target=_short_list([str(f) for f in files]) or "no requirements files",
                hint="check the package index is reachable", ref="test-env-install-failed",
                evidence={"command": step},
            ) from exc
        if result.returncode != 0:
            output = result.stdout or ""
            raise TestsFailed(
                "could not install the test environment",
                target=_short_list([str(f) for f in files]) or "no requirements files",
                hint=_pip_summary(output),
                ref="test-env-install-failed",
                evidence={"command": step, "exit_code": result.returncode,
                          "output_tail": "\n".join(output.splitlines()[-40:])},
            )


def _pip_env() -> dict[str, str]:
    return scrubbed_environ()  # keeps PIP_* (index, proxy, certificates); drops credentials


def _pip_summary(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return "; ".join((errors or lines or ["pip printed nothing"])[-2:])


def _test_env(venv: Path, env_extra: dict[str, str] | None, home: Path) -> dict[str, str]:
    env = {
        "PATH": f"{venv / 'bin'}:{_SYSTEM_PATH}",
        "HOME": str(home),  # an empty home: the tests cannot read ~/.aws, ~/.slipway or ~/.gitconfig
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "VIRTUAL_ENV": str(venv),  # the test venv, as `activate` would set it
        "PYTHONDONTWRITEBYTECODE": "1",  # keep the checkout clean for the build that follows
    }
    env.update(env_extra or {})
    return env


def _resolve_command(command: list[str], venv: Path, path: str) -> list[str] | None:
    program = command[0]
    if _PYTHON_NAMES.fullmatch(program):
        return [str(venv / "bin" / "python"), *command[1:]]
    if "/" in program:
        return list(command)  # relative to repo_dir (the child's cwd)
    found = shutil.which(program, path=path)
    return [found, *command[1:]] if found else None


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> tuple[int, str, bool]:
    # Output goes to a file, not a pipe: a grandchild that outlives the test process cannot block the read.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except (FileNotFoundError, PermissionError) as exc:
            return (127 if isinstance(exc, FileNotFoundError) else 126), f"slipway: cannot run {argv[0]}: {exc}", False
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        # The whole session, also after a normal exit: workers or servers the tests started and left behind.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        out.seek(0)
        return proc.returncode, out.read().decode("utf-8", errors="replace"), timed_out


def _short_list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

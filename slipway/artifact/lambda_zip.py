"""Build a deterministic AWS Lambda zip: the app's source plus its dependencies vendored for Lambda's platform.

Artifact identity is content. The same source tree and requirements give a byte-identical zip whatever the
umask, the file mtimes or the order a directory lists its entries in: entries are sorted by archive path,
dated 1980-01-01, their modes normalised to 0644/0755, directory entries, bytecode and installer bookkeeping
left out (pattern from chalice's ``ChaliceZipFile``, with the nondeterminism it kept removed). The zip is named
by its sha256.

Dependencies are installed once per (requirements bytes, runtime, platform) into a cache directory that
appears atomically (temporary directory + rename), so a rebuild with unchanged requirements does not call pip.
The cache is shared by every app built on this machine, so an entry carries a manifest of its files
(``slipway.core.manifest``) written when it was installed and checked before every reuse: an entry that changed
since (a module edited, a file added) is discarded, installed again and reported, never packaged.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slipway.core import manifest
from slipway.core.manifest import sha256_file
from slipway.core.childenv import scrubbed_environ
from slipway.core.errors import ArtifactTooLarge, BuildError, SpecError
from slipway.core.home import cache_dir

LAMBDA_PLATFORM = "manylinux2014_x86_64"
MAX_ZIPPED = 50 * 1024**2  # direct-upload limit
MAX_UNZIPPED = 250 * 1024**2  # function + layers, unzipped
PIP_TIMEOUT_S = 900
_DEPS_CACHE_FORMAT = b"slipway-lambda-deps-v1"

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_COMPRESSLEVEL = 6
_UNIX = 3  # ZipInfo.create_system: external_attr holds Unix mode bits
_EXCLUDED_DIRS = {"__pycache__", ".git", ".pytest_cache"}
_EXCLUDED_FILES = {".DS_Store", ".git"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class BuiltZip:
    path: Path  # out_dir / f"{sha256}.zip"
    sha256: str  # hex
    size: int  # zipped bytes
    unzipped_size: int
    file_count: int


def build_lambda_zip(
    source_dir: Path,
    out_dir: Path,
    *,
    requirements: Path | None = None,
    runtime: str = "python3.11",
    deps_cache: Path | None = None,
    max_zipped: int = MAX_ZIPPED,
    max_unzipped: int = MAX_UNZIPPED,
    report: Callable[[str], None] | None = None,
) -> BuiltZip:
    """Zip ``source_dir`` (plus vendored ``requirements``) into ``out_dir/<sha256>.zip``.

    Source files win over dependency files with the same archive path. Raises ``BuildError`` for a missing
    source directory, an escaping symlink or a pip failure, and ``ArtifactTooLarge`` over Lambda's limits.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    _python_version(runtime)  # validate before any side effect
    if not source_dir.is_dir():
        what = "is not a directory" if source_dir.exists() else "does not exist"
        raise BuildError(
            f"Lambda source directory {what}",
            target=str(source_dir),
            hint="point the spec's Lambda source path at the directory holding the handler module",
            ref="source-dir-missing",
        )
    if requirements is not None and not Path(requirements).is_file():
        raise BuildError(
            "requirements file does not exist",
            target=str(requirements),
            hint="commit the file or remove it from the spec",
            ref="requirements-missing",
        )

    files: dict[str, Path] = {}
    if requirements is not None:
        cache_root = Path(deps_cache) if deps_cache is not None else cache_dir("lambda-deps")
        deps_dir = install_dependencies(Path(requirements), runtime, cache_root, report=report)
        files.update(_collect(deps_dir, is_deps=True))
    skip = out_dir.resolve() if out_dir.exists() else None
    files.update(_collect(source_dir, is_deps=False, skip=skip))  # source overrides dependencies

    sizes = {arc: path.stat().st_size for arc, path in files.items()}
    unzipped = sum(sizes.values())
    if unzipped > max_unzipped:
        raise _too_large(unzipped, max_unzipped, "unzipped", sizes, "trim dependencies or use a container image")

    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".building-", suffix=".zip")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        compressed = _write_zip(tmp, files)
        size = tmp.stat().st_size
        if size > max_zipped:
            raise _too_large(
                size, max_zipped, "zipped", compressed,
                "upload the zip through S3, trim dependencies or use a container image",
            )
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        final = out_dir / f"{digest}.zip"
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuiltZip(path=final, sha256=digest, size=size, unzipped_size=unzipped, file_count=len(files))


def install_dependencies(
    requirements: Path, runtime: str, cache_root: Path, *, runner: Runner = subprocess.run,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Return a directory of packages installed from ``requirements`` for Lambda's platform (cached).

    The cache key is sha256(requirements bytes + runtime + platform); the directory appears by an atomic
    rename, so a crashed or concurrent install never leaves a half-filled cache entry in use. ``runner`` is
    ``subprocess.run`` unless a caller wants to observe the pip calls.
    """
    requirements = Path(requirements)
    python_version = _python_version(runtime)
    req_bytes = requirements.read_bytes()
    key = hashlib.sha256(
        b"\0".join([_DEPS_CACHE_FORMAT, req_bytes, runtime.encode(), LAMBDA_PLATFORM.encode()])
    ).hexdigest()
    cache_root = Path(cache_root).resolve()  # pip runs next to the requirements file, not in our cwd
    final = cache_root / f"{runtime}-{LAMBDA_PLATFORM}-{key[:32]}"
    proof = cache_root / f"{final.name}.manifest.json"
    if final.is_dir() and manifest.differences(final, proof) is None:
        return final

    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer per entry; released when the file closes
        if final.is_dir():
            changed = manifest.differences(final, proof)
            if changed is None:
                return final  # a concurrent build finished it while we waited
            if report is not None:
                report(f"the cached Lambda dependencies {final.name} changed since they were installed ({changed}): "
                       "discarded and installed again")
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=".installing-"))
        try:
            _pip_install(requirements, python_version, tmp, runner)
            manifest.write(tmp, proof)  # before the entry appears: an entry always has its manifest
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _pip_install(requirements: Path, python_version: str, target: Path, runner: Runner) -> None:
    command = [
        sys.executable, "-m", "pip", "install",
        "--target", str(target),
        "--platform", LAMBDA_PLATFORM,
        "--implementation", "cp",
        "--python-version", python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        "-r", str(requirements.resolve()),
    ]
    try:
        # cwd: relative paths inside the requirements file mean "next to the requirements file"
        result = runner(
            command, cwd=requirements.resolve().parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=PIP_TIMEOUT_S, env=_pip_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"pip did not finish installing the Lambda dependencies within {PIP_TIMEOUT_S} s",
            target=str(requirements), hint="check the package index is reachable", ref="dependency-install-failed",
            evidence={"command": command},
        ) from exc
    if result.returncode != 0:
        output = result.stdout or ""
        error = BuildError(
            "pip could not install the Lambda dependencies",
            target=str(requirements),
            hint=f"{_pip_summary(output)} (only {LAMBDA_PLATFORM} / cp{python_version.replace('.', '')} "
            "or pure-Python wheels can be vendored)",
            ref="dependency-install-failed",
            evidence={"command": command, "exit_code": result.returncode, "output_tail": _tail(output, 40)},
        )
        error.transient = bool(_PIP_TRANSIENT.search(output))  # the index answered 429/5xx or the network failed
        raise error


# pip retries a 5xx and a timeout itself, but not a 429 (it then reports "no matching distribution"): what it
# prints when the index or the network, not the requirements, was the problem. Such a build is retried by its task.
_PIP_TRANSIENT = re.compile(r"(\b(429|5\d\d) (Client|Server) Error|Too Many Requests|Read timed out|Connection (reset|refused|aborted)"
                            r"|Max retries exceeded|Temporary failure in name resolution|ConnectTimeoutError|IncompleteRead)")


def _pip_env() -> dict[str, str]:
    return scrubbed_environ()  # keeps PIP_* (index, proxy, certificates); drops credentials


def _pip_summary(output: str) -> str:
    """pip's last ERROR lines (or last lines) as one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    picked = (errors or lines or ["pip printed nothing"])[-2:]
    return "; ".join(picked)


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def _python_version(runtime: str) -> str:
    match = re.fullmatch(r"python(3\.\d+)", runtime)
    if not match:
        raise SpecError(
            f"unsupported Lambda runtime {runtime!r}",
            target="runtime",
            hint="use a Python runtime name such as 'python3.11'",
            ref="unsupported-runtime",
        )
    return match.group(1)


def _excluded(name: str, parent: str, is_dir: bool, top_level_of_deps: bool) -> bool:
    if is_dir:
        return name in _EXCLUDED_DIRS or (top_level_of_deps and name == "bin")
    if name in _EXCLUDED_FILES or name.endswith(_EXCLUDED_SUFFIXES):
        return True
    return parent.endswith(".dist-info") and name in _INSTALLER_FILES


def _collect(root: Path, *, is_deps: bool, skip: Path | None = None) -> dict[str, Path]:
    """Map archive path → real file path for every file to zip under ``root``.

    Symlinks are followed when they resolve inside ``root`` and refused otherwise: a link to ``/etc`` or to a
    developer's home must not end up in an artifact.
    """
    root_real = root.resolve()
    files: dict[str, Path] = {}

    def walk(directory: Path, prefix: str, ancestors: frozenset[Path]) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            arc = prefix + entry.name
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:  # ELOOP: a link to itself, or links pointing at each other
                raise BuildError(
                    "symlink loop in the source directory", target=f"{arc} -> {os.readlink(path)}",
                    hint="remove the link that points at itself or at another link to it", ref="symlink-loop",
                ) from None
            if _excluded(entry.name, prefix.rstrip("/"), is_dir, is_deps and not prefix):
                continue
            if entry.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root_real):
                    raise BuildError(
                        "symlink escapes the source directory",
                        target=f"{arc} -> {os.readlink(path)}",
                        hint="copy the file into the source directory or remove the link",
                        ref="symlink-escapes",
                    )
                if not target.exists():
                    raise BuildError(
                        "symlink points to nothing", target=f"{arc} -> {os.readlink(path)}",
                        hint="remove the dangling link", ref="dangling-symlink",
                    )
            else:
                target = path
            if is_dir:
                if target == skip:
                    continue  # the output directory inside the source tree: never zip earlier artifacts
                if target in ancestors:
                    raise BuildError(
                        "symlink loop in the source directory", target=arc,
                        hint="remove the link that points at one of its own parent directories", ref="symlink-loop",
                    )
                walk(target, arc + "/", ancestors | {target})
            elif stat.S_ISREG(target.stat().st_mode):
                files[arc] = target
            else:
                raise BuildError(
                    "not a regular file", target=arc,
                    hint="remove sockets, pipes and device files from the source directory", ref="not-a-file",
                )

    walk(root_real, "", frozenset({root_real}))
    return files


def _write_zip(dest: Path, files: dict[str, Path]) -> dict[str, int]:
    """Write the zip; return each entry's compressed size."""
    compressed: dict[str, int] = {}
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_COMPRESSLEVEL) as zf:
        for arc in sorted(files):
            path = files[arc]
            executable = path.stat().st_mode & stat.S_IXUSR
            info = zipfile.ZipInfo(arc, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = _UNIX
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            zf.writestr(info, path.read_bytes(), compresslevel=_COMPRESSLEVEL)
            compressed[arc] = info.compress_size
    return compressed


def _human(n: int) -> str:
    for unit, scale in (("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def _too_large(size: int, limit: int, kind: str, sizes: dict[str, int], hint: str) -> ArtifactTooLarge:
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{arc} {_human(n)}" for arc, n in largest[:3])
    if len(largest) > 3:
        shown += ", ..."
    return ArtifactTooLarge(
        f"artifact is {_human(size)} {kind}, over Lambda's {_human(limit)} limit",
        target=f"largest: {shown}",
        hint=hint,
        evidence={"size": size, "limit": limit, "kind": kind, "largest": largest[:10]},
    )

"""Run a repository's code in a sandbox: bubblewrap (``bwrap``, Debian's ``bubblewrap`` package).

A repository is untrusted. Everything it makes run — its test command, the packages pip builds for its test
environment (an sdist's ``setup.py``, a ``-e .`` requirement), the import of its handler in preflight — runs
inside a sandbox with:

- **its own view of the filesystem**, deny by default: the system read-only (``/usr``, the libraries, a short list
  of ``/etc``, ``/opt``, the interpreter's prefix), the paths the caller names read-only or writable (the checkout),
  a private ``/tmp`` and an empty home. The user's home, ``SLIPWAY_HOME`` (caches, the local stack's state), other
  checkouts, ``/var``, ``/run`` (the Docker socket) and ``/srv`` are not there at all;
- **its own process, IPC and UTS namespaces**: ``/proc`` shows only the sandbox's processes, so the parent's
  environment (credentials, ``PREFECT_API_URL``) cannot be read from ``/proc/<pid>/environ``;
- **its own network namespace** (loopback only): no Prefect API, no local AWS endpoint, no registry, no metadata
  service. Only installing a test environment's dependencies shares the network (the package index), before the
  repository's tests run;
- **a memory limit** (address space, ``prlimit``) and the caller's time limit; ``--die-with-parent`` and a new
  session (no terminal injection).

Where bubblewrap is missing or cannot create namespaces, repository code is refused (``sandbox-unavailable``)
unless the operator sets ``SLIPWAY_SANDBOX=off``, which runs it as this user, with this machine's files and
network: acceptable on a laptop for one's own repositories, never on a shared worker.
``SLIPWAY_SANDBOX_READONLY`` (paths separated by ``:``) shows more of the system read-only, for tests that need
a tool installed elsewhere; ``SLIPWAY_SANDBOX_NETWORK=on`` gives tests the machine's network (127.0.0.1 included).
Both are the operator's choice: nothing in a repository can turn them on.
"""

from __future__ import annotations

import configparser
import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slipway.core.errors import SandboxUnavailable

DEFAULT_MEMORY_BYTES = 4 * 1024**3
SANDBOX_HOME = "/tmp/home"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
# what programs need from /etc (users, names, certificates, time zone, the dynamic linker, pip's system config);
# not the rest (shadow, keys, services' configuration and credentials)
_ETC = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf", "protocols", "services",
        "ssl", "ca-certificates", "ca-certificates.conf", "pki", "localtime", "timezone", "zoneinfo", "mime.types",
        "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "os-release", "debian_version", "lsb-release",
        "xdg", "pip.conf", "python3", "python3.11", "machine-id")


@dataclass(frozen=True)
class Sandbox:
    """What the sandboxed process may see: ``writable`` and ``readonly`` paths (at the same place as outside),
    the network or not, an address-space limit."""

    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()
    network: bool = False
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES
    pip_config: bool = False  # the user's pip configuration and the paths it names (index, wheel directories)
    extra: tuple[str, ...] = field(default=(), repr=False)

    def wrap(self, argv: list[str], cwd: Path | str | None = None) -> list[str]:
        """``argv`` as run inside the sandbox (or unchanged when the operator switched the sandbox off)."""
        if mode() == "off":
            return list(argv)
        return [*self._limit(), _bwrap(), *self.arguments(cwd), "--", *argv]

    def arguments(self, cwd: Path | str | None = None) -> list[str]:
        args = ["--unshare-all", *(["--share-net"] if self.network else []), "--die-with-parent", "--new-session",
                "--hostname", "slipway-sandbox"]
        for top in _SYSTEM_DIRS:
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        args += ["--dir", "/etc"]
        for name in _ETC:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
        # the interpreter (and Slipway's own environment, whose pip installs test environments): code, no secrets
        readonly = [Path(sys.base_prefix), Path(sys.prefix), *self.readonly, *_operator_paths()]
        if self.pip_config:
            readonly += _pip_paths()
            for inside, outside in _pip_config_dirs():
                args += ["--ro-bind", str(outside), inside]
        for path in _outermost(readonly):
            args += ["--ro-bind-try", str(path), str(path)]
        for path in self.writable:
            args += ["--bind", str(path), str(path)]
        args += [*self.extra]
        if cwd is not None:
            args += ["--chdir", str(cwd)]
        return args

    def _limit(self) -> list[str]:
        if not self.memory_bytes:
            return []
        prlimit = shutil.which("prlimit")
        return [prlimit, f"--as={int(self.memory_bytes)}", "--"] if prlimit else []


def mode() -> str:
    """``bwrap`` (the default) or ``off`` (``SLIPWAY_SANDBOX=off``, the operator's explicit opt-out)."""
    value = os.environ.get("SLIPWAY_SANDBOX", "bwrap").strip().lower()
    return "off" if value in ("off", "0", "false", "no", "none") else "bwrap"


def tests_get_network() -> bool:
    """``SLIPWAY_SANDBOX_NETWORK=on``: the operator lets sandboxed tests use this machine's network (for suites that
    need a database or service of their own); the repository cannot ask for it."""
    return os.environ.get("SLIPWAY_SANDBOX_NETWORK", "").strip().lower() in ("on", "1", "true", "yes")


def require() -> str:
    """Check, before a repository's code runs, that it can run sandboxed; raise ``SandboxUnavailable`` if not."""
    if mode() == "off":
        return "off"
    _probe()
    return "bwrap"


def _bwrap() -> str:
    return _probe()


@functools.lru_cache(maxsize=1)
def _probe() -> str:
    path = shutil.which("bwrap")
    hint = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or set SLIPWAY_SANDBOX=off to run "
            "repository code unsandboxed, with this user's files, credentials and network (never on a shared worker)")
    if path is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: repository code (tests, builds, preflight) is not run "
                                 "unsandboxed", target="bwrap", hint=hint, ref="sandbox-unavailable")
    probe = [path, *Sandbox(memory_bytes=None).arguments(), "--", "/bin/true"]
    done = subprocess.run(probe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    if done.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot create a sandbox here: {done.stdout.strip()[-200:] or done.returncode}",
                                 target=path, hint="allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1) "
                                 "or run the worker where they are allowed; or " + hint.split(", or ", 1)[1],
                                 ref="sandbox-unavailable")
    return path


def _operator_paths() -> list[Path]:
    return [Path(p) for p in os.environ.get("SLIPWAY_SANDBOX_READONLY", "").split(":") if p.startswith("/")]


def _pip_config_dirs() -> list[tuple[str, Path]]:
    """The user's pip configuration, shown at the sandbox home's matching place."""
    home = Path.home()
    found = []
    for rel in (".config/pip", ".pip"):
        if (home / rel).is_dir():
            found.append((f"{SANDBOX_HOME}/{rel}", home / rel))
    return found


def _pip_paths() -> list[Path]:
    """Local paths pip's configuration names (``find-links``, ``file://`` indexes, constraints, certificates)."""
    values = [v for k, v in os.environ.items() if k.startswith("PIP_")]
    files = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), *(d / n for _, d in _pip_config_dirs() for n in ("pip.conf",))]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    for f in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(f)
        except (configparser.Error, OSError):
            continue
        values += [v for s in parser.sections() for v in parser[s].values()]
    return paths_in(values)


def paths_in(values) -> list[Path]:
    """The local paths named in command-line or configuration values (``/dir``, ``file:///dir``, ``--opt=/dir``)."""
    paths = []
    for value in values:
        for token in str(value).split():
            token = token.split("=", 1)[-1].removeprefix("file://")
            if token.startswith("/"):
                paths.append(Path(token))
    return paths


def _outermost(paths: list[Path]) -> list[Path]:
    """Each path once, none inside another already listed (a bind of a parent covers it), in a stable order."""
    unique = sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for p in unique:
        if p == Path("/") or any(p.is_relative_to(k) for k in kept):
            continue
        if any(p.is_relative_to(Path(d)) for d in _SYSTEM_DIRS):
            continue
        kept.append(p)
    return kept

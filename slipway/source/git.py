"""Clone a repository at a ref and pin the exact commit: safe by construction.

Only https, ssh (``ssh://`` and scp-like ``git@host:path``), ``file://`` and local paths are accepted.
Anything else (``ext::``, ``fd::``, ``http://``, option-looking strings, credentials inside the URL) is
refused before git runs. git is run through GitPython with ``--`` before the URL, with every transport but
the allowed ones disabled (this also covers submodules), no terminal prompts, and credentials supplied by an
askpass helper that reads them from the child's environment: never from the URL, never logged.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from slipway.core.errors import CloneError, InputError

_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^:/][^:]*)$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
# A clone that hangs (a stalled server, a half-open connection) must not hold a release forever.
CLONE_TIMEOUT_ENV = "SLIPWAY_CLONE_TIMEOUT"
DEFAULT_CLONE_TIMEOUT_S = 600
# A host name that does not resolve: retried like any network failure (DNS can fail for a moment), and reported as
# bad input (exit 2) when the retries did not help.
_UNKNOWN_HOST = re.compile(r"(Could not resolve host|Name or service not known|nodename nor servname|Could not resolve hostname)")
# What git prints when the network, not the repository or the credentials, failed: worth a retry.
_TRANSIENT_GIT = re.compile(
    r"(Connection (reset|timed out|refused|closed)|timed out|Could not resolve host|Temporary failure in name resolution"
    r"|remote end hung up unexpectedly|early EOF|The requested URL returned error: (429|5\d\d)|Operation too slow"
    r"|unexpected disconnect|RPC failed)", re.IGNORECASE)


def clone_timeout_s() -> float:
    """``SLIPWAY_CLONE_TIMEOUT`` seconds (default 600) for the whole clone."""
    raw = os.environ.get(CLONE_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_CLONE_TIMEOUT_S
    except ValueError:
        raise InputError(f"{CLONE_TIMEOUT_ENV}={raw!r} is not a number", hint="set it to a number of seconds, e.g. 600",
                         ref="bad-clone-timeout") from None
    if value <= 0:
        raise InputError(f"{CLONE_TIMEOUT_ENV}={raw!r} must be above 0", hint="set it to a number of seconds, e.g. 600",
                         ref="bad-clone-timeout")
    return value
_ALLOWED_SCHEMES = {"https", "ssh", "file"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_REF_LENGTH = 255
# what git appends to every failed fetch; the line before it says what went wrong
_GIT_BOILERPLATE = {"fatal: Could not read from remote repository.", "Please make sure you have the correct access rights",
                    "and the repository exists."}


@dataclass(frozen=True)
class RepoUrl:
    """A validated clone URL. ``display`` is safe to log."""

    url: str
    kind: str  # https | ssh | file | local

    @property
    def display(self) -> str:
        return self.url


def validate_repo_url(raw: str) -> RepoUrl:
    """Refuse anything but https, ssh, file:// and local paths. Raises InputError (one line)."""
    url = (raw or "").strip()
    hint = "use an https://, ssh://, git@host:path, file:// URL or a local path"
    if not url:
        raise InputError("empty repository URL", hint=hint, ref="hostile-repo-url")
    if url.startswith("-"):
        raise InputError(f"refused repository URL {url!r}: it looks like a command-line option", hint=hint, ref="hostile-repo-url")
    if _CONTROL.search(url):
        raise InputError("refused repository URL: it contains control characters", hint=hint, ref="hostile-repo-url")
    if "::" in url.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        transport = url.split("::", 1)[0]
        raise InputError(f"refused repository URL {url!r}: git transport {transport!r}:: runs commands", hint=hint, ref="hostile-repo-url")
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if not scheme_match and re.match(r"^[^/@]*:[^/@]*@", url):  # user:token@host:path
        raise InputError(
            "refused repository URL: it has credentials inside it",
            hint="remove them from the URL and store the token in a Secret block (git_token_block)",
            ref="credentials-in-url",
        )
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        parts = urlsplit(url)
        if parts.password or (parts.username and scheme != "ssh"):  # before any message that shows the URL
            raise InputError(
                "refused repository URL: it has credentials inside it",
                hint="remove them from the URL and store the token in a Secret block (git_token_block)",
                ref="credentials-in-url",
            )
        if scheme not in _ALLOWED_SCHEMES:
            raise InputError(f"refused repository URL {url!r}: scheme {scheme}:// is not allowed", hint=hint, ref="hostile-repo-url")
        if scheme in ("https", "ssh") and (parts.query or parts.fragment):
            raise InputError(
                "refused repository URL: it has a query string or fragment (tokens do not belong in URLs)",
                hint="remove it; store a token in a Secret block (--git-token-block)",
                ref="credentials-in-url",
            )
        if scheme in ("https", "ssh") and not parts.hostname:
            raise InputError(f"refused repository URL {url!r}: no host", hint=hint, ref="hostile-repo-url")
        if parts.netloc.startswith("-") or (parts.hostname or "").startswith("-"):
            raise InputError(f"refused repository URL {url!r}: its host looks like a command-line option", hint=hint, ref="hostile-repo-url")
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InputError(f"refused repository URL {url!r}: a file:// URL takes no host", hint="write file:///absolute/path", ref="hostile-repo-url")
            if not parts.path or parts.query or parts.fragment:
                raise InputError(f"refused repository URL {url!r}: a file:// URL takes a path only", hint="write file:///absolute/path", ref="hostile-repo-url")
            local = Path(parts.path)
            if not local.exists():
                raise InputError(f"repository not found: {parts.path} does not exist", hint="check the path", ref="repo-not-found")
            return RepoUrl(url, "file")
        return RepoUrl(url, scheme)
    scp = _SCP_LIKE.match(url)
    if scp and not Path(url).exists():
        if scp.group("path").startswith("-") or scp.group("host").startswith("-"):
            raise InputError(f"refused repository URL {url!r}: host or path looks like an option", hint=hint, ref="hostile-repo-url")
        return RepoUrl(url, "ssh")
    if ":" in url and not Path(url).exists():
        raise InputError(f"refused repository URL {url!r}: unrecognised form", hint=hint, ref="hostile-repo-url")
    local = Path(url).expanduser()
    if not local.exists():
        raise InputError(f"repository not found: {url} does not exist", hint="check the path or use a URL", ref="repo-not-found")
    return RepoUrl(str(local.resolve()), "local")


def validate_ref(ref: str) -> str:
    """A ref is a branch, tag or commit name; refuse option-like and malformed ones before git sees them."""
    ref = (ref or "").strip()
    hint = "pass a branch, tag or commit SHA"
    if not ref:
        raise InputError("empty ref", hint=hint, ref="invalid-ref")
    if len(ref) > MAX_REF_LENGTH:
        raise InputError(f"refused ref {ref[:40]!r}...: longer than {MAX_REF_LENGTH} characters", hint=hint, ref="invalid-ref")
    if (ref.startswith("-") or any(c in ref for c in " ~^:?*[\\") or _CONTROL.search(ref) or ".." in ref or "@{" in ref
            or ref.endswith((".lock", "/", "."))):
        raise InputError(f"refused ref {ref!r}: not a valid git ref name", hint=hint, ref="invalid-ref")
    return ref


@dataclass(frozen=True)
class Checkout:
    path: Path
    repo_url: str
    ref: str
    commit: str
    subject: str
    committed_at: str | None = None  # the commit's committer date (ISO 8601): where a change's lead time starts


# git asks "Username for 'https://HOST': " then "Password for 'https://USER@HOST': ". Answer only for the
# host that was validated, so a redirect or a submodule elsewhere never receives the token.
_ASKPASS = """#!/bin/sh
case "$1" in
  *"://$SLIPWAY_GIT_HOST'"*|*"@$SLIPWAY_GIT_HOST'"*) ;;
  *) exit 1 ;;
esac
case "$1" in
  Username*) printf '%s\\n' "${SLIPWAY_GIT_USERNAME:-x-access-token}" ;;
  *) printf '%s\\n' "$SLIPWAY_GIT_TOKEN" ;;
esac
"""


def _git_env(workdir: Path, token: SecretStr | None, username: str | None, host: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",  # no user-level filters, fsmonitor or credential helpers
        GIT_LFS_SKIP_SMUDGE="1",
        GIT_ALLOW_PROTOCOL="https:ssh:file",
        # a dead server is noticed in about a minute, not after TCP's hours
        GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30 "
                        "-o ServerAliveInterval=15 -o ServerAliveCountMax=4",
    )
    if token is not None:
        askpass = workdir / "askpass.sh"
        askpass.write_text(_ASKPASS)
        askpass.chmod(stat.S_IRWXU)
        env["GIT_ASKPASS"] = str(askpass)
        env["SLIPWAY_GIT_TOKEN"] = token.get_secret_value()  # only in the child's environment
        env["SLIPWAY_GIT_HOST"] = host or ""
        if username:
            env["SLIPWAY_GIT_USERNAME"] = username
    return env


def _scrub(text: str, token: SecretStr | None) -> str:
    if token is not None and token.get_secret_value():
        text = text.replace(token.get_secret_value(), "***")
    return text


def clone_at_ref(
    repo_url: str,
    ref: str,
    dest_parent: Path | None = None,
    *,
    token: SecretStr | None = None,
    username: str | None = None,
) -> Checkout:
    """Clone ``repo_url`` into a new directory under ``dest_parent`` and check out ``ref`` detached.

    Returns the pinned commit. Raises InputError for a refused URL/ref, CloneError for a local directory that
    is not a repository, an unreachable repository or an unknown ref; a failed clone leaves no directory behind.
    """
    url = validate_repo_url(repo_url)
    ref = validate_ref(ref)
    local = Path(urlsplit(url.url).path if url.kind == "file" else url.url)
    if url.kind in ("file", "local") and local.is_dir() and not _is_git_repository(local):
        raise CloneError(
            f"could not clone {url.display}",
            hint=f"{local} is not a git repository (no .git, not a bare repository); check the path",
            ref="not-a-repository",
        )
    created_parent = dest_parent is None
    dest_parent = Path(dest_parent or tempfile.mkdtemp(prefix="slipway-clone-"))
    dest_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="checkout-", dir=dest_parent))
    try:
        return _clone_into(work, url, ref, token, username)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a failed clone leaves nothing behind
        if created_parent:
            shutil.rmtree(dest_parent, ignore_errors=True)
        raise


def _is_git_repository(path: Path) -> bool:
    """What ``git clone`` takes from a local directory: a work tree (``.git``) or a bare repository."""
    return (path / ".git").exists() or all((path / name).exists() for name in ("HEAD", "objects", "refs"))


_SAFETY = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always",
           "-c", "protocol.file.allow=always", "-c", "core.hooksPath=/dev/null", "-c", "credential.helper=",
           "-c", "core.fsmonitor=false", "-c", "http.followRedirects=false",
           "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60"]


def remote_head(repo_url: str, branch: str, *, token: SecretStr | None = None, username: str | None = None) -> str:
    """The commit ``branch`` points at in ``repo_url``, asked with ``git ls-remote`` (nothing is cloned). Refused URLs
    and refs as for a clone; a branch the repository does not have is ``unknown-ref``."""
    import git  # GitPython

    url = validate_repo_url(repo_url)
    branch = validate_ref(branch)
    work = Path(tempfile.mkdtemp(prefix="slipway-ls-remote-"))
    try:
        env = _git_env(work, token, username, urlsplit(url.url).hostname if url.kind == "https" else None)
        try:
            out = git.Git(str(work)).execute(["git", *_SAFETY, "ls-remote", "--heads", "--", url.url, f"refs/heads/{branch}"],
                                             env=env, kill_after_timeout=clone_timeout_s())
        except git.GitCommandError as exc:
            stderr = _scrub(str(exc.stderr or "").strip(), token)
            error = CloneError(f"could not reach {url.display}", hint=stderr.splitlines()[-1] if stderr else "check the URL",
                               ref="repo-unreachable")
            error.transient = bool(_TRANSIENT_GIT.search(stderr))
            raise error from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == f"refs/heads/{branch}" and _SHA.match(sha):
            return sha
    raise CloneError(f"unknown ref {branch!r} in {url.display}", hint="no branch has that name; check the watched branch",
                     ref="unknown-ref")


def _clone_into(work: Path, url: RepoUrl, ref: str, token: SecretStr | None, username: str | None) -> Checkout:
    import git  # GitPython; imported here to keep `slipway` import light

    repo_dir = work / "repo"
    env = _git_env(work, token, username, urlsplit(url.url).hostname if url.kind == "https" else None)
    cmd = git.Git(str(work))
    safety = _SAFETY
    timeout = clone_timeout_s()
    try:
        cmd.execute(["git", *safety, "clone", "--quiet", "--no-checkout", "--", url.url, str(repo_dir)], env=env,
                    kill_after_timeout=timeout)
    except git.GitCommandError as exc:
        stderr = _scrub(str(exc.stderr or "").strip(), token)
        if "Timeout: the command" in stderr:  # GitPython killed it after kill_after_timeout: the clone hung
            error = CloneError(f"could not clone {url.display}: no answer within {timeout:g} s",
                               hint=f"check the server is reachable, or raise {CLONE_TIMEOUT_ENV} (seconds)", ref="clone-timed-out")
            error.transient = True
            raise error from None
        lines = [line for line in stderr.splitlines() if line.strip(" '").removeprefix("stderr: '") not in _GIT_BOILERPLATE | {""}]
        last = lines[-1] if lines else f"git exited {exc.status}"
        unknown_host = bool(_UNKNOWN_HOST.search(stderr))
        error = CloneError(
            f"could not clone {url.display}" + (": its host name does not resolve" if unknown_host else ""),
            hint=f"{last.removeprefix('stderr: ').strip(chr(39) + ' ')}; check the URL and credentials",
            ref="host-not-found" if unknown_host else "repo-unreachable",
        )
        error.transient = bool(_TRANSIENT_GIT.search(stderr))  # the network failed, not the repository: retried
        raise error from None
    repo = git.Git(str(repo_dir))
    commit = None
    for candidate in ([ref] if _SHA.match(ref) else []) + [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref]:
        try:
            commit = repo.execute(["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"], env=env).strip()
            break
        except git.GitCommandError:
            continue
    if not commit:
        raise CloneError(
            f"unknown ref {ref!r} in {url.display}",
            hint="no branch, tag or commit has that name; check --ref",
            ref="unknown-ref",
        )
    repo.execute(["git", *safety, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit, "--"], env=env)
    subject, _, committed_at = repo.execute(["git", "log", "-1", "--format=%s%x00%cI", commit], env=env).strip().rpartition("\x00")
    return Checkout(path=repo_dir, repo_url=url.display, ref=ref, commit=commit, subject=subject, committed_at=committed_at or None)


def is_ancestor(repo_dir: Path, older: str, newer: str) -> bool | None:
    """Is commit ``older`` an ancestor of ``newer`` in this clone? None when the clone does not hold ``newer`` (pushed
    after the clone, or on a ref it did not fetch): then nothing is known about their order."""
    import git  # GitPython

    if not (_SHA.match(older or "") and _SHA.match(newer or "")):
        return None  # only full commit ids are compared (they come from the ledger and run parameters)
    repo = git.Git(str(repo_dir))
    try:
        repo.execute(["git", "cat-file", "-e", f"{newer}^{{commit}}"])
    except git.GitCommandError:
        return None
    try:
        repo.execute(["git", "merge-base", "--is-ancestor", older, newer])
        return True
    except git.GitCommandError as exc:
        if exc.status == 1:
            return False
        return None


def discard_checkout(checkout: Checkout) -> None:
    """Remove the clone (and its askpass helper); the temporary parent too when nothing else is in it."""
    work = checkout.path.parent
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.name.startswith("slipway-clone-"):
        try:
            work.parent.rmdir()
        except OSError:
            pass

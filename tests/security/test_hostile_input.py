"""Hostile input corpus (issue 7): every input is refused with one line naming the problem, before any side effect.

Each table row is ``id → input → the refusal's text``. "No side effect" is checked by what the input would leave
behind if it got through: the marker file its payload touches, the clone directory, a file outside the directory
an archive is extracted into, a zip in the build's output directory, a file opened for writing. Nothing here talks
to Prefect or AWS: the CLI rows point the CLI at a closed port, so a refusal that came too late (after Prefect, and
so after anything that could publish or deploy) would show up as a connection error instead of the refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import git

from slipway.artifact.lambda_zip import build_lambda_zip
from slipway.core.errors import ArtifactTooLarge, BuildError, CloneError, InputError, SpecError
from slipway.source.git import clone_at_ref
from slipway.artifact.preflight import check_handler_imports, check_size, lambda_zip_checks
from slipway.spec.loading import check_spec_against_checkout, load_spec

CLOSED_PREFECT_API = "http://127.0.0.1:9/api"
SECRET = "s3cret-t0ken"


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "\r" not in text, text
    assert "\x1b" not in text, text
    return text


# ---- audit: what a call opened (an extraction writes files; a refused spec is never read) ------------------
_opened: list[tuple[str, str, int]] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None:
        _opened.append((str(args[0]), str(args[1] or ""), int(args[2] or 0)))


sys.addaudithook(_audit)  # cannot be removed; records only while the `opened` fixture is active


@pytest.fixture
def opened():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def _writes(opens: list[tuple[str, str, int]]) -> list[str]:
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
    return [path for path, mode, flags in opens if set(mode) & set("wax+") or flags & write_flags]


@pytest.fixture
def origin(tmp_path) -> Path:
    """A real repository with one commit on main."""
    path = tmp_path / "origin"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("hi\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "first")
    return path


# ==== clone URLs ==============================================================================================
# {marker}: a file the payload would create; {dir}: an existing directory (so only the URL's form is judged).
URLS = [
    pytest.param("ext::sh -c touch% {marker}", "git transport 'ext':: runs commands", id="ext-transport-runs-a-command"),
    pytest.param("fd::3", "git transport 'fd':: runs commands", id="fd-transport"),
    pytest.param("--upload-pack=touch {marker}", "it looks like a command-line option", id="upload-pack-option"),
    pytest.param("-c core.sshCommand=touch {marker}", "it looks like a command-line option", id="config-option"),
    pytest.param("  -uhelp", "it looks like a command-line option", id="option-after-spaces"),
    pytest.param("ssh://-oProxyCommand=touch%20{marker}/r.git", "its host looks like a command-line option", id="ssh-host-is-an-option"),
    pytest.param("ssh://git@-oProxyCommand=x/r.git", "its host looks like a command-line option", id="ssh-user-at-option-host"),
    pytest.param("git@-oProxyCommand:r.git", "host or path looks like an option", id="scp-host-is-an-option"),
    pytest.param("git@example.com:-oProxyCommand=x", "host or path looks like an option", id="scp-path-is-an-option"),
    pytest.param("file://--upload-pack=touch%20{marker}{dir}", "its host looks like a command-line option", id="file-url-option-host"),
    pytest.param("file://evil.example.com{dir}", "a file:// URL takes no host", id="file-url-with-a-host"),
    pytest.param("file://", "a file:// URL takes a path only", id="file-url-without-a-path"),
    pytest.param("file://{dir}?upload-pack=x", "a file:// URL takes a path only", id="file-url-with-a-query"),
    pytest.param("http://example.com/r.git", "scheme http:// is not allowed", id="plaintext-http"),
    pytest.param("git://example.com/r.git", "scheme git:// is not allowed", id="plaintext-git-protocol"),
    pytest.param(f"https://user:{SECRET}@example.com/r.git", "it has credentials inside it", id="https-password"),
    pytest.param(f"https://{SECRET}@example.com/r.git", "it has credentials inside it", id="https-token-as-user"),
    pytest.param(f"http://user:{SECRET}@example.com/r.git", "it has credentials inside it", id="http-password-not-echoed"),
    pytest.param(f"ssh://git:{SECRET}@example.com/r.git", "it has credentials inside it", id="ssh-password"),
    pytest.param(f"git:{SECRET}@example.com:org/r.git", "it has credentials inside it", id="scp-password"),
    pytest.param(f"https://example.com/r.git?access_token={SECRET}", "query string or fragment", id="token-in-query"),
    pytest.param("https://example.com/r.git\n--upload-pack=x", "it contains control characters", id="newline"),
    pytest.param("https://example.com/\x1b[2Jr.git", "it contains control characters", id="terminal-escape"),
    pytest.param("https://example.com/r.git\x00x", "it contains control characters", id="nul"),
]


@pytest.mark.parametrize("template,refusal", URLS)
def test_a_hostile_clone_url_is_refused_before_git_runs(tmp_path, template, refusal):
    marker = tmp_path / "pwned"
    (tmp_path / "dir").mkdir()
    url = template.replace("{marker}", str(marker)).replace("{dir}", str(tmp_path / "dir"))
    with pytest.raises(InputError) as info:
        clone_at_ref(url, "main", tmp_path / "w")
    message = one_line(info.value)
    assert message.startswith("refused repository URL") and refusal in message
    assert SECRET not in message
    assert not marker.exists()
    assert not (tmp_path / "w").exists()  # refused before the clone directory is made


@pytest.mark.parametrize("form", ["file://{path}", "{path}"])
def test_a_directory_that_is_not_a_repository_is_named_as_such_before_anything_is_made(tmp_path, form):
    plain = tmp_path / "plain"
    plain.mkdir()
    url = form.replace("{path}", str(plain))
    with pytest.raises(CloneError) as info:
        clone_at_ref(url, "main", tmp_path / "w")
    shown = plain if form.startswith("file") else plain.resolve()
    assert one_line(info.value) == (f"could not clone {url if form.startswith('file') else shown}: "
                                    f"{shown} is not a git repository (no .git, not a bare repository); check the path")
    assert not (tmp_path / "w").exists()


def test_a_directory_that_only_looks_like_a_bare_repository_gets_gits_own_reason(tmp_path):
    fake = tmp_path / "fake"
    (fake / "objects").mkdir(parents=True)
    (fake / "refs").mkdir()
    (fake / "HEAD").write_text("not a ref\n")
    with pytest.raises(CloneError) as info:
        clone_at_ref(f"file://{fake}", "main", tmp_path / "w")
    assert one_line(info.value) == (f"could not clone file://{fake}: fatal: '{fake}' does not appear to be a git repository; "
                                    "check the URL and credentials")  # not git's "and the repository exists."
    assert list((tmp_path / "w").iterdir()) == []  # the clone directory is removed again


def test_a_failed_clone_leaves_no_directory_behind(origin, tmp_path):
    with pytest.raises(CloneError) as info:
        clone_at_ref(str(origin), "no-such-branch", tmp_path / "w")
    assert one_line(info.value).startswith(f"unknown ref 'no-such-branch' in {origin}")
    assert list((tmp_path / "w").iterdir()) == []


# ==== refs ====================================================================================================
REFS = [
    pytest.param("--output={marker}", "refused ref '--output=", id="output-option"),
    pytest.param("--upload-pack=touch {marker}", "refused ref '--upload-pack=", id="upload-pack-option"),
    pytest.param("-x", "refused ref '-x': not a valid git ref name", id="short-option"),
    pytest.param("main..HEAD", "refused ref 'main..HEAD'", id="range"),
    pytest.param("../../etc/passwd", "refused ref '../../etc/passwd'", id="dot-dot-path"),
    pytest.param("main@{1}", "refused ref 'main@{1}'", id="reflog-at-brace"),
    pytest.param("@{-1}", "refused ref '@{-1}'", id="previous-branch-at-brace"),
    pytest.param("HEAD^{tree}", "refused ref 'HEAD^{tree}'", id="revision-expression"),
    pytest.param("main:secret.txt", "refused ref 'main:secret.txt'", id="path-in-revision"),
    pytest.param("main --output=x", "refused ref 'main --output=x'", id="space-then-option"),
    pytest.param("main\n--output=x", "refused ref 'main\\n--output=x'", id="newline"),
    pytest.param("ma\rin", "refused ref 'ma\\rin'", id="carriage-return"),
    pytest.param("main\x1b[2J", "refused ref 'main\\x1b[2J'", id="terminal-escape"),
    pytest.param("ma\x7fin", "refused ref 'ma\\x7fin'", id="delete-character"),
    pytest.param("ma\x00in", "refused ref 'ma\\x00in'", id="nul"),
    pytest.param("a" * 100_000, "...: longer than 255 characters", id="very-long"),
]


@pytest.mark.parametrize("template,refusal", REFS)
def test_a_hostile_ref_is_refused_before_git_runs(origin, tmp_path, template, refusal):
    marker = tmp_path / "pwned"
    with pytest.raises(InputError) as info:
        clone_at_ref(str(origin), template.replace("{marker}", str(marker)), tmp_path / "w")
    message = one_line(info.value)
    assert refusal in message and message.endswith(": pass a branch, tag or commit SHA")
    assert len(message) < 300
    assert not marker.exists()
    assert not (tmp_path / "w").exists()


# ==== what a cloned repository carries ========================================================================
def test_a_submodule_with_an_ext_url_is_never_initialised(origin, tmp_path):
    marker = tmp_path / "pwned-by-submodule"
    sha = git(origin, "rev-parse", "HEAD")
    (origin / ".gitmodules").write_text(f'[submodule "evil"]\n\tpath = evil\n\turl = ext::sh -c touch% {marker}\n')
    git(origin, "update-index", "--add", "--cacheinfo", f"160000,{sha},evil")
    git(origin, "add", ".gitmodules")
    git(origin, "commit", "-qm", "add a hostile submodule")

    checkout = clone_at_ref(str(origin), "main", tmp_path / "w")
    assert (checkout.path / ".gitmodules").is_file()  # the hostile file is checked out...
    assert list((checkout.path / "evil").iterdir()) == []  # ...but the submodule stays an empty directory
    assert not (checkout.path / ".git" / "modules").exists()
    assert not marker.exists()

    # control: the payload is live; git runs it as soon as the submodule is initialised with ext allowed
    subprocess.run(["git", "-c", "protocol.ext.allow=always", "submodule", "update", "--init"], cwd=checkout.path,
                   capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("form", ["{path}", "file://{path}"])
def test_clones_run_no_hooks_or_filters_from_the_users_git_configuration(origin, tmp_path, monkeypatch, form):
    markers = tmp_path / "markers"
    markers.mkdir()
    hooks, template = tmp_path / "hooks", tmp_path / "template"
    (template / "hooks").mkdir(parents=True)
    hooks.mkdir()
    for where, name in ((hooks, "hookspath-hook"), (template / "hooks", "template-hook")):
        (where / "post-checkout").write_text(f"#!/bin/sh\ntouch {markers / name}\n")
        (where / "post-checkout").chmod(0o755)
    (tmp_path / "fsmonitor").write_text(f"#!/bin/sh\ntouch {markers / 'fsmonitor'}\nexit 1\n")
    (tmp_path / "fsmonitor").chmod(0o755)
    config = tmp_path / "hostile-gitconfig"
    config.write_text(f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = {tmp_path / 'fsmonitor'}\n"
                      f'[filter "evil"]\n\tsmudge = touch {markers / "filter"} && cat\n\tclean = cat\n\trequired = true\n')
    (origin / ".gitattributes").write_text("* filter=evil\n")
    git(origin, "add", ".gitattributes")
    git(origin, "commit", "-qm", "every file goes through the evil filter")
    url = form.replace("{path}", str(origin))
    hostile_env = {"GIT_CONFIG_GLOBAL": str(config), "GIT_TEMPLATE_DIR": str(template)}

    # control: plain git with this configuration runs the payloads
    subprocess.run(["git", "clone", "-q", url, str(tmp_path / "control")], env={**os.environ, **hostile_env}, check=True)
    assert sorted(p.name for p in markers.iterdir()) == ["filter", "hookspath-hook"]
    for p in markers.iterdir():
        p.unlink()

    for key, value in hostile_env.items():
        monkeypatch.setenv(key, value)
    checkout = clone_at_ref(url, "main", tmp_path / "w")
    assert list(markers.iterdir()) == []
    assert (checkout.path / "a.txt").read_text() == "hi\n"


# ==== source trees: symlinks out of the checkout ================================================================
LINKS = [
    pytest.param({"src/passwd": "/etc/passwd"}, "symlink escapes the source directory (passwd -> /etc/passwd)", id="file-link-to-etc-passwd"),
    pytest.param({"src/up": "../../outside.txt"}, "symlink escapes the source directory (up -> ../../outside.txt)", id="file-link-out-of-the-checkout"),
    pytest.param({"src/gitconfig": "../.git/config"}, "symlink escapes the source directory (gitconfig -> ../.git/config)", id="file-link-into-dot-git"),
    pytest.param({"src/etc": "/etc"}, "symlink escapes the source directory (etc -> /etc)", id="directory-link-to-etc"),
    pytest.param({"src/pkg/parent": "../../.."}, "symlink escapes the source directory (pkg/parent -> ../../..)", id="directory-link-out-of-the-checkout"),
    pytest.param({"src/loop": "loop"}, "symlink loop in the source directory (loop -> loop)", id="link-to-itself"),
    pytest.param({"src/a": "b", "src/b": "a"}, "symlink loop in the source directory (a -> b)", id="links-to-each-other"),
    pytest.param({"src/pkg/again": ".."}, "symlink loop in the source directory (pkg/again)", id="directory-link-to-an-ancestor"),
]


@pytest.mark.parametrize("links,refusal", LINKS)
def test_a_committed_symlink_out_of_the_source_directory_is_refused_by_the_build(origin, tmp_path, links, refusal):
    (origin / "src" / "pkg").mkdir(parents=True)
    (origin / "src" / "app.py").write_text("def handler(event, context):\n    return 1\n")
    (origin / "src" / "pkg" / "__init__.py").write_text("")
    for link, target in links.items():
        os.symlink(target, origin / link)
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "links")
    checkout = clone_at_ref(str(origin), "main", tmp_path / "w")
    (checkout.path.parent / "outside.txt").write_text("a file next to the checkout\n")
    assert all((checkout.path / link).is_symlink() for link in links)  # git recreated the links

    out = tmp_path / "out"
    with pytest.raises(BuildError) as info:
        build_lambda_zip(checkout.path / "src", out)
    assert refusal in one_line(info.value)
    assert not out.exists()  # no zip, not even the output directory


def test_a_symlink_inside_the_source_directory_is_zipped_as_the_file_it_names(tmp_path):
    """Control for the table above: links that stay inside are followed, so the refusals are about escaping."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("def handler(event, context):\n    return 1\n")
    os.symlink("app.py", src / "alias.py")
    built = build_lambda_zip(src, tmp_path / "out")
    with zipfile.ZipFile(built.path) as zf:
        assert zf.namelist() == ["alias.py", "app.py"]
        assert zf.read("alias.py") == zf.read("app.py")


# ==== archives Slipway extracts (preflight imports the handler from the extracted zip) ==========================
LIST_EXTRACTED = """
import json, os
here = os.path.dirname(os.path.abspath(__file__))
found = sorted(os.path.relpath(os.path.join(d, f), here) + ("@" if os.path.islink(os.path.join(d, f)) else "")
               for d, _, files in os.walk(here) if "__pycache__" not in d for f in files)
raise SystemExit("EXTRACTED " + json.dumps(found))
"""


def _slip_zip(path: Path, absolute: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app.py", LIST_EXTRACTED)
        for name in ("../dotdot.py", "../../dotdot2.py", "pkg/../../inner.py", str(absolute)):
            zf.writestr(zipfile.ZipInfo(name), "print('escaped')\n")
        link = zipfile.ZipInfo("link-to-passwd")
        link.external_attr = 0o120777 << 16  # a symlink entry
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(path) as zf:  # the hostile names really are in the archive
        assert {"../dotdot.py", "pkg/../../inner.py", str(absolute)} <= set(zf.namelist())
    return path


@pytest.mark.parametrize("caller", ["check_handler_imports", "lambda_zip_checks"])
def test_zip_slip_entries_are_extracted_inside_the_temporary_directory(tmp_path, monkeypatch, caller):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the preflight extracts
    absolute = tmp_path / "abs-target.py"
    archive = _slip_zip(tmp_path / "slip.zip", absolute)

    if caller == "check_handler_imports":
        check = check_handler_imports(archive, "app.handler")
    else:
        checks = lambda_zip_checks(archive, handler="app.handler", source_files=["app.py"], requirements=None)
        check = next(c for c in checks if c.name == "handler imports")
    assert not check.passed and "SystemExit: EXTRACTED " in check.detail
    found = json.loads(check.detail.split("EXTRACTED ", 1)[1])
    assert found == sorted(["app.py", "dotdot.py", "dotdot2.py", "pkg/inner.py", str(absolute).lstrip("/"), "link-to-passwd"])
    assert not any(name.startswith("..") or name.endswith("@") for name in found)  # nothing outside, no symlink
    assert not absolute.exists()
    assert not (scratch / "dotdot.py").exists() and not (scratch / "inner.py").exists()
    assert not (tmp_path / "dotdot2.py").exists()
    assert list(scratch.iterdir()) == []  # and the extraction directory is gone


# ==== oversize artifacts and zip bombs ==========================================================================
@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """300 MB of zeros deflated to about 300 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    info = zipfile.ZipInfo("zeros.bin")
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = bytes(10 * 1024**2)
    with zipfile.ZipFile(path, "w") as zf, zf.open(info, "w", force_zip64=True) as fh:
        for _ in range(30):
            fh.write(chunk)
    assert path.stat().st_size < 1024**2
    return path


def test_a_zip_bomb_is_refused_from_its_declared_sizes_without_extracting(zip_bomb, opened):
    check = check_size(zip_bomb)
    assert not check.passed and check.ref == "artifact-too-large"
    assert check.detail.startswith("52,428,800 bytes over: ")
    assert "314,572,800 bytes (300 MB) unzipped, limit 262,144,000 bytes (250 MB)" in check.detail
    assert "largest: zeros.bin 314,572,800 bytes (300 MB)" in check.detail
    assert _writes(opened) == []  # nothing was written: not one byte extracted


def test_a_zip_over_the_size_budget_is_not_extracted_by_the_preflight(tmp_path):
    marker = tmp_path / "extracted-and-imported"
    archive = tmp_path / "over-budget.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", f"open({str(marker)!r}, 'w').close()\ndef handler(event, context):\n    return 1\n")
        zf.writestr("zeros.bin", bytes(2 * 1024**2))
    checks = lambda_zip_checks(archive, handler="app.handler", source_files=["app.py"], requirements=None,
                               max_unzipped_bytes=1024**2)
    assert not next(c for c in checks if c.name == "size limits").passed
    assert not marker.exists()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_a_source_tree_over_the_unzipped_limit_is_refused_before_anything_is_written(tmp_path):
    src = _tree(tmp_path / "src", {"app.py": b"x = 1\n", "data.bin": bytes(4096)})
    with pytest.raises(ArtifactTooLarge) as info:
        build_lambda_zip(src, tmp_path / "out", max_unzipped=1024)
    assert one_line(info.value).startswith("artifact is 4 KB unzipped, over Lambda's 1 KB limit (largest: data.bin 4 KB, app.py 6 bytes)")
    assert not (tmp_path / "out").exists()


def test_a_source_tree_over_the_zipped_limit_leaves_no_zip_behind(tmp_path):
    src = _tree(tmp_path / "src", {"app.py": b"x = 1\n", "noise.bin": os.urandom(64 * 1024)})
    with pytest.raises(ArtifactTooLarge) as info:
        build_lambda_zip(src, tmp_path / "out", max_zipped=16 * 1024)
    assert " zipped, over Lambda's 16 KB limit (largest: noise.bin 64" in one_line(info.value)
    assert list((tmp_path / "out").iterdir()) == []  # the partial zip is gone too


def test_a_sparse_terabyte_file_is_refused_at_the_real_limits_without_being_read(tmp_path, opened):
    src = _tree(tmp_path / "src", {"app.py": b"x = 1\n"})
    with open(src / "huge.bin", "wb") as fh:
        fh.truncate(1024**4)
    opened.clear()
    with pytest.raises(ArtifactTooLarge) as info:
        build_lambda_zip(src, tmp_path / "out")
    assert one_line(info.value).startswith("artifact is 1048576 MB unzipped, over Lambda's 250 MB limit (largest: huge.bin 1048576 MB")
    assert not any(path.endswith("huge.bin") for path, _, _ in opened)
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_the_source_tree_is_refused_not_read(tmp_path):
    src = _tree(tmp_path / "src", {"app.py": b"x = 1\n"})
    os.mkfifo(src / "pipe")  # reading it would block the build forever
    with pytest.raises(BuildError) as info:
        build_lambda_zip(src, tmp_path / "out")
    assert one_line(info.value) == "not a regular file (pipe): remove sockets, pipes and device files from the source directory"
    assert not (tmp_path / "out").exists()


# ==== slipway.yaml ==============================================================================================
GOOD = """\
app: hello
artifact:
  type: lambda-zip
  source: src
  handler: app.handler
  runtime: python3.11
test:
  command: ["python", "-m", "pytest", "-q"]
verify:
  smoke:
    - name: health
      event: {"path": "/health"}
      expect: {statusCode: 200}
environments:
  - name: dev
  - name: prod
"""


def spec(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def env(extra: str) -> str:
    return spec("  - name: dev\n", f"  - name: dev\n    {extra}\n")


BILLION_LAUGHS = GOOD + 'lol0: &l0 "lol"\n' + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
DEEP_FLOW = "app: hello\nx: " + "[" * 100_000 + "]" * 100_000 + "\n"
DEEP_BLOCK = GOOD + "".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + "  " * 40 + "leaf: 1\n"


def _link_spec_outside(repo: Path, outside: Path) -> None:
    (outside / "elsewhere.yaml").write_text(GOOD)
    (repo / "slipway.yaml").unlink()
    os.symlink(outside / "elsewhere.yaml", repo / "slipway.yaml")


def _link_source_to_etc(repo: Path, outside: Path) -> None:
    os.rename(repo / "src", outside / "src")
    os.symlink("/etc", repo / "src")


def _link_requirements_to_passwd(repo: Path, outside: Path) -> None:
    (repo / "slipway.yaml").write_text(spec("  runtime: python3.11\n", "  runtime: python3.11\n  requirements: requirements.txt\n"))
    os.symlink("/etc/passwd", repo / "requirements.txt")


def _sparse_spec(repo: Path, outside: Path) -> None:
    with open(repo / "slipway.yaml", "r+b") as fh:
        fh.truncate(64 * 1024**2)


SPECS = [
    # names that end up in function names, S3 keys, log lines and shell-adjacent places
    pytest.param(spec("app: hello", "app: hello/world"), "app: 'hello/world' must be lowercase letters, digits and dashes", id="app-with-slash"),
    pytest.param(spec("app: hello", "app: '..'"), "app: '..' must be lowercase letters", id="app-dot-dot"),
    pytest.param(spec("app: hello", 'app: "$(touch {marker})"'), "app: '$(touch ", id="app-command-substitution"),
    pytest.param(spec("app: hello", 'app: "hello; touch {marker}"'), "app: 'hello; touch ", id="app-semicolon"),
    pytest.param(spec("app: hello", 'app: "`touch {marker}`"'), "app: '`touch ", id="app-backticks"),
    pytest.param(spec("app: hello", 'app: "hello\\nerror: forged"'), "app: 'hello\\nerror: forged' must be lowercase", id="app-newline"),
    pytest.param(spec("app: hello", "app: Hello"), "app: 'Hello' must be lowercase letters", id="app-uppercase"),
    pytest.param(spec("app: hello", "app: " + "a" * 41), "must be lowercase letters, digits and dashes, 1-40 characters", id="app-41-characters"),
    pytest.param(spec("app: hello", "app: " + "a" * 200_000), "...", id="app-200-kb-message-clipped"),
    pytest.param(spec("  - name: dev", "  - name: dev/../prod"), "environments[0].name: 'dev/../prod' must be lowercase", id="env-with-slash-dot-dot"),
    pytest.param(spec("  - name: dev", "  - name: '$(touch {marker})'"), "environments[0].name: '$(touch ", id="env-command-substitution"),
    pytest.param(spec("  - name: dev", '  - name: "dev\\rprod"'), "environments[0].name: 'dev\\rprod' must be lowercase", id="env-carriage-return"),
    pytest.param(spec("  - name: dev", "  - name: DEV"), "environments[0].name: 'DEV' must be lowercase", id="env-uppercase"),
    pytest.param(spec("  - name: dev", "  - name: " + "d" * 41), "environments[0].name: 'ddd", id="env-41-characters"),
    pytest.param(env("function_name: 'hello:live'"), "environments[0].function_name: 'hello:live' is not a Lambda function name", id="function-name-with-qualifier"),
    pytest.param(env("function_name: arn:aws:lambda:us-east-1:123456789012:function:victim"), "not an ARN or name:qualifier", id="function-name-arn"),
    pytest.param(env("function_name: team/hello"), "environments[0].function_name: 'team/hello' is not a Lambda function name", id="function-name-with-slash"),
    pytest.param(env("function_name: " + "f" * 65), "(at most 64)", id="function-name-65-characters"),
    pytest.param(env("target: ../../block_documents"), "environments[0].target: '../../block_documents' is not a block name", id="target-block-path"),
    pytest.param(spec("handler: app.handler", "handler: ../evil.handler"), "artifact.handler: '../evil.handler' is not module.function", id="handler-dot-dot"),
    pytest.param(spec("handler: app.handler", "handler: pkg/app.handler"), "artifact.handler: 'pkg/app.handler' is not module.function", id="handler-slash"),
    pytest.param(spec("handler: app.handler", "handler: /etc/passwd.handler"), "is not module.function", id="handler-absolute"),
    pytest.param(spec("handler: app.handler", "handler: 'app.handler; touch {marker}'"), "is not module.function", id="handler-semicolon"),
    pytest.param(spec("source: src", "source: ../.."), "artifact.source: '../..' must be a path inside the repository", id="source-dot-dot"),
    pytest.param(spec("source: src", "source: src/../../.."), "artifact.source: 'src/../../..' must be a path inside", id="source-dot-dot-inside"),
    pytest.param(spec("source: src", "source: /etc"), "artifact.source: '/etc' must be a path inside the repository", id="source-absolute"),
    pytest.param(spec("source: src", 'source: "src\\0"'), "artifact.source: 'src\\x00' must be a path without control characters", id="source-nul"),
    pytest.param(spec("  runtime: python3.11\n", "  runtime: python3.11\n  requirements: ../../etc/passwd\n"),
                 "artifact.requirements: '../../etc/passwd' must be a path inside", id="requirements-dot-dot"),
    pytest.param(spec('  command: ["python", "-m", "pytest", "-q"]\n', '  command: ["python", "-m", "pytest", "-q"]\n  requirements: ["/etc/passwd"]\n'),
                 "test.requirements: '/etc/passwd' must be a path inside", id="test-requirements-absolute"),
    pytest.param(spec("    - name: health", '    - name: "health\\nerror: forged"'), "verify.smoke[0].name: 'health\\nerror: forged' must be printable", id="smoke-name-newline"),
    pytest.param(spec("    - name: health", '    - name: "\\e[2Jhealth"'), "verify.smoke[0].name: '\\x1b[2Jhealth' must be printable", id="smoke-name-terminal-escape"),
    pytest.param(env('alarms: ["cpu\\nerror: forged"]'), "environments[0].alarms: 'cpu\\nerror: forged' is not a CloudWatch alarm name", id="alarm-name-newline"),
    pytest.param(GOOD + '"x\\nerror: forged": 1\n', "slipway.yaml: 'x\\nerror: forged': unknown key", id="unknown-key-with-newline"),
    # YAML bombs and what PyYAML cannot build
    pytest.param(BILLION_LAUGHS, "slipway.yaml: YAML aliases (*name) are not allowed at line 18, column 12", id="billion-laughs"),
    pytest.param(spec('      event: {"path": "/health"}', '      event: &e {"path": "/health"}\n    - name: again\n      event: *e'),
                 "YAML aliases (*name) are not allowed at line 14, column 14: write the value out in full", id="one-alias"),
    pytest.param(spec("  - name: prod", "  - <<: *dev\n    name: prod").replace("  - name: dev", "  - &dev\n    name: dev"),
                 "YAML aliases (*name) are not allowed", id="merge-key"),
    pytest.param(DEEP_FLOW, "slipway.yaml: nested deeper than 32 levels at line 2", id="deep-flow-nesting"),
    pytest.param(DEEP_BLOCK, "slipway.yaml: nested deeper than 32 levels", id="deep-block-nesting"),
    pytest.param(spec("app: hello", 'app: !!python/object/apply:os.system ["touch {marker}"]'), "slipway.yaml: not valid YAML at line 1", id="python-tag"),
    pytest.param(spec("  runtime: python3.11", "  runtime: python3.11\n  timeout: " + "9" * 5000),
                 "slipway.yaml: not valid YAML: Exceeds the limit (4300 digits) for integer string conversion", id="5000-digit-integer"),
    pytest.param(GOOD + "released: 2024-13-45\n", "slipway.yaml: not valid YAML: month must be in 1..12", id="impossible-date"),
    pytest.param(GOOD + "#" * 300_000 + "\n", "slipway.yaml is larger than 256 KB", id="300-kb-spec"),
]


@pytest.fixture
def app_checkout(tmp_path) -> Path:
    """A checkout (a plain directory: the spec loader does not need git) holding a valid app."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "app.py").write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
    (repo / "slipway.yaml").write_text(GOOD)
    (tmp_path / "outside").mkdir()
    return repo


def test_the_corpus_starts_from_a_spec_that_loads(app_checkout):
    check_spec_against_checkout(load_spec(app_checkout), app_checkout)


def _refusal(repo: Path, spec_path: str | None = None) -> str:
    with pytest.raises(SpecError) as info:
        check_spec_against_checkout(load_spec(repo, spec_path), repo)
    return one_line(info.value)


@pytest.mark.parametrize("text,refusal", SPECS)
def test_a_hostile_spec_is_refused_with_one_line(app_checkout, tmp_path, text, refusal):
    marker = tmp_path / "pwned"
    (app_checkout / "slipway.yaml").write_text(text.replace("{marker}", str(marker)))
    message = _refusal(app_checkout)
    assert refusal in message
    assert len(message) < 600  # a 200 KB value is not echoed whole
    assert not marker.exists()


# (setup, --spec, refusal, paths that must not even be opened: a prefix or a suffix)
FILES = [
    pytest.param(_link_spec_outside, None, "spec path 'slipway.yaml' leads outside the repository through a symlink",
                 ("elsewhere.yaml", "slipway.yaml"), id="spec-symlinked-outside"),
    pytest.param(_link_source_to_etc, None, "slipway.yaml: artifact.source: 'src' leads outside the repository through a symlink",
                 ("/etc", "src/app.py"), id="source-directory-symlinked-to-etc"),
    pytest.param(_link_requirements_to_passwd, None, "slipway.yaml: artifact.requirements: 'requirements.txt' leads outside the repository",
                 ("/etc", "requirements.txt"), id="requirements-symlinked-to-etc-passwd"),
    pytest.param(None, "../outside/elsewhere.yaml", "spec path '../outside/elsewhere.yaml' is outside the repository",
                 ("elsewhere.yaml",), id="spec-path-dot-dot"),
    pytest.param(None, "/etc/passwd", "spec path '/etc/passwd' is outside the repository", ("/etc",), id="spec-path-absolute"),
    pytest.param(_sparse_spec, None, "slipway.yaml is larger than 256 KB: a spec is a short file", ("slipway.yaml",),
                 id="64-mb-spec-never-read"),
]


@pytest.mark.parametrize("setup,spec_path,refusal,unread", FILES)
def test_a_spec_or_path_that_leads_outside_the_checkout_is_refused_unread(app_checkout, tmp_path, opened, setup, spec_path, refusal, unread):
    if setup:
        setup(app_checkout, tmp_path / "outside")
    opened.clear()
    assert refusal in _refusal(app_checkout, spec_path)
    assert [path for path, _, _ in opened if path.startswith(unread) or path.endswith(unread)] == []


# ==== the CLI refuses before Prefect (and so before anything is published or deployed) ==========================
CLI = [
    pytest.param(["ext::sh -c touch% {marker}"], "refused repository URL 'ext::sh -c touch% ", id="ext-url"),
    pytest.param(["fd::3"], "git transport 'fd':: runs commands", id="fd-url"),
    pytest.param(["--", "--upload-pack=touch {marker}"], "it looks like a command-line option", id="upload-pack-url"),
    pytest.param(["--", "-c core.sshCommand=touch {marker}"], "it looks like a command-line option", id="config-option-url"),
    pytest.param(["ssh://-oProxyCommand=touch%20{marker}/r.git"], "its host looks like a command-line option", id="ssh-option-host"),
    pytest.param(["http://example.com/r.git"], "scheme http:// is not allowed", id="plaintext-http"),
    pytest.param([f"https://user:{SECRET}@example.com/r.git"], "it has credentials inside it", id="credentials-in-url"),
    pytest.param(["{dir}", "--ref=--output={marker}"], "refused ref '--output=", id="option-ref"),
    pytest.param(["{dir}", "--ref", "main@{1}"], "refused ref 'main@{1}'", id="reflog-ref"),
    pytest.param(["{dir}", "--ref", "main\x1b[2J"], "refused ref 'main\\x1b[2J'", id="escape-ref"),
    pytest.param(["{dir}", "--ref", "r" * 5000], "longer than 255 characters", id="very-long-ref"),
]


@pytest.mark.parametrize("args,refusal", CLI)
def test_the_cli_refuses_a_hostile_release_before_reaching_prefect(tmp_path, args, refusal):
    marker = tmp_path / "pwned"
    argv = [a.replace("{marker}", str(marker)).replace("{dir}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "slipway.cli", "release", *argv], text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PREFECT_API_URL": CLOSED_PREFECT_API})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert refusal in proc.stderr
    assert SECRET not in proc.stderr
    assert not marker.exists()



@pytest.mark.parametrize("argv", [
    ["rollback", "../../etc", "dev"], ["history", "hello/../x"], ["diagnose", "$(touch x)"], ["approve", "hello", "dev;rm"],
    ["history", "hello", "--env", "PROD"], ["flag", "list", "hello", "dev/../prod"],
], ids=["rollback-dotdot", "history-slash", "diagnose-shell", "approve-semicolon", "history-uppercase-env", "flag-env-dotdot"])
def test_the_cli_refuses_hostile_app_and_environment_names_before_reaching_prefect(argv):
    proc = subprocess.run([sys.executable, "-m", "slipway.cli", *argv], text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: invalid ") and "name" in proc.stderr and "Failed to reach API" not in proc.stderr

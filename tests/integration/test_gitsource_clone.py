"""Cloning real temporary repositories."""

from __future__ import annotations

import os
import subprocess

import pytest

from slipway.core.errors import CloneError, InputError
from slipway.source.git import clone_at_ref


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, text=True, capture_output=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "origin"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("one\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "first")
    git(path, "tag", "v1")
    (path / "a.txt").write_text("two\n")
    git(path, "commit", "-qam", "second")
    return path


def test_clone_pins_the_commit_of_a_branch_a_tag_and_a_sha(repo, tmp_path):
    head = git(repo, "rev-parse", "main")
    v1 = git(repo, "rev-parse", "v1")
    assert clone_at_ref(str(repo), "main", tmp_path / "w").commit == head
    tagged = clone_at_ref(f"file://{repo}", "v1", tmp_path / "w")
    assert tagged.commit == v1 and (tagged.path / "a.txt").read_text() == "one\n"
    assert tagged.subject == "first"
    assert clone_at_ref(str(repo), v1, tmp_path / "w").commit == v1
    assert clone_at_ref(str(repo), "HEAD", tmp_path / "w").commit == head


def test_an_unknown_ref_is_a_clone_error(repo, tmp_path):
    with pytest.raises(CloneError) as info:
        clone_at_ref(str(repo), "nope", tmp_path / "w")
    assert info.value.ref == "unknown-ref"


def test_a_directory_that_is_not_a_repository_cannot_be_cloned(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(CloneError) as info:
        clone_at_ref(f"file://{tmp_path / 'plain'}", "main", tmp_path / "w")
    assert str(info.value).startswith(f"could not clone file://{tmp_path / 'plain'}:")


def test_an_ext_url_is_refused_before_git_runs(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(InputError):
        clone_at_ref(f"ext::sh -c touch% {marker}", "main", tmp_path / "w")
    assert not marker.exists()
    assert not (tmp_path / "w").exists()


def test_a_token_never_reaches_the_url_or_the_error(repo, tmp_path):
    from pydantic import SecretStr

    token = SecretStr("s3cr3t-token-value")
    with pytest.raises(CloneError) as info:
        clone_at_ref(str(repo), "missing-ref", tmp_path / "w", token=token)
    assert "s3cr3t-token-value" not in str(info.value)
    ok = clone_at_ref(str(repo), "main", tmp_path / "w", token=token)
    assert "s3cr3t" not in git(ok.path, "config", "--get", "remote.origin.url")


def _fake_ssh(tmp_path, monkeypatch, body: str) -> None:
    """``ssh`` on PATH answers like a failing server (git's own tests use a fake ssh the same way)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text("#!/bin/sh\n" + body)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")


def test_a_clone_that_hangs_is_killed_after_the_clone_timeout_and_may_be_retried(repo, tmp_path, monkeypatch):
    _fake_ssh(tmp_path, monkeypatch, "exec sleep 30\n")
    monkeypatch.setenv("SLIPWAY_CLONE_TIMEOUT", "1")
    with pytest.raises(CloneError) as err:
        clone_at_ref(f"ssh://git-host{repo}", "main", tmp_path / "w")
    assert err.value.ref == "clone-timed-out" and err.value.transient
    assert "no answer within 1 s" in str(err.value) and "SLIPWAY_CLONE_TIMEOUT" in str(err.value)
    assert not any((tmp_path / "w").iterdir())  # nothing left behind


def test_a_reset_connection_is_transient_and_a_refused_key_is_not(repo, tmp_path, monkeypatch):
    _fake_ssh(tmp_path, monkeypatch, 'if [ -e "$0.denied" ]; then echo "git@h: Permission denied (publickey)." >&2; exit 255; fi\n'
                                     'echo "kex_exchange_identification: read: Connection reset by peer" >&2; exit 255\n')
    with pytest.raises(CloneError) as reset:
        clone_at_ref(f"ssh://git-host{repo}", "main", tmp_path / "w")
    assert reset.value.transient and "Connection reset by peer" in str(reset.value)
    (tmp_path / "fake-bin" / "ssh.denied").touch()
    with pytest.raises(CloneError) as denied:
        clone_at_ref(f"ssh://git-host{repo}", "main", tmp_path / "w")
    assert not denied.value.transient and "Permission denied (publickey)" in str(denied.value)


def test_a_clone_over_ssh_works_through_the_fake_ssh(repo, tmp_path, monkeypatch):
    _fake_ssh(tmp_path, monkeypatch, 'for last; do :; done\nexec sh -c "$last"\n')
    assert clone_at_ref(f"ssh://git-host{repo}", "main", tmp_path / "w").commit == git(repo, "rev-parse", "main")


@pytest.mark.parametrize("raw", ["soon", "0", "-5"])
def test_a_bad_clone_timeout_is_a_one_line_input_error(repo, tmp_path, monkeypatch, raw):
    monkeypatch.setenv("SLIPWAY_CLONE_TIMEOUT", raw)
    with pytest.raises(InputError, match="SLIPWAY_CLONE_TIMEOUT"):
        clone_at_ref(str(repo), "main", tmp_path / "w")


def test_a_host_that_does_not_resolve_is_bad_input_after_the_retries(tmp_path, monkeypatch):
    """ssh answers as it does for an unknown host name (a fake ssh on PATH, as git's own tests use)."""
    from slipway.core.errors import exit_code_for

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text("#!/bin/sh\necho 'ssh: Could not resolve hostname no-such-host: Name or service not known' >&2\nexit 255\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(CloneError) as info:
        clone_at_ref("ssh://no-such-host/srv/repo.git", "main", tmp_path / "w")
    assert info.value.ref == "host-not-found" and info.value.transient  # retried by the clone task first
    assert str(info.value).startswith("could not clone ssh://no-such-host/srv/repo.git: its host name does not resolve")
    assert exit_code_for(info.value) == 2


def test_an_unknown_ref_and_a_non_repository_are_bad_input(repo, tmp_path):
    from slipway.core.errors import exit_code_for

    with pytest.raises(CloneError) as unknown:
        clone_at_ref(str(repo), "nope", tmp_path / "w")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CloneError) as plain:
        clone_at_ref(str(tmp_path / "plain"), "main", tmp_path / "w2")
    assert (exit_code_for(unknown.value), exit_code_for(plain.value)) == (2, 2)


def test_is_ancestor_orders_commits_the_clone_holds_and_knows_nothing_of_others(tmp_path):
    import subprocess

    from slipway.source.git import is_ancestor

    repo = tmp_path / "r"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    commits = []
    for n in range(3):
        (repo / "f").write_text(str(n))
        git("add", "f")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{n}")
        commits.append(git("rev-parse", "HEAD"))
    git("checkout", "-q", "-b", "side", commits[0])
    (repo / "g").write_text("side")
    git("add", "g")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "side")
    side = git("rev-parse", "HEAD")

    assert is_ancestor(repo, commits[0], commits[2]) is True
    assert is_ancestor(repo, commits[2], commits[0]) is False
    assert is_ancestor(repo, commits[1], side) is False  # another branch: not older
    assert is_ancestor(repo, commits[0], "f" * 40) is None  # a commit the clone does not hold decides nothing
    assert is_ancestor(repo, "--output=/tmp/x", commits[2]) is None  # only full commit ids are passed to git

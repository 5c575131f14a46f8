"""Cloning real temporary repositories."""

from __future__ import annotations

import subprocess

import pytest

from slipway.errors import CloneError, InputError
from slipway.gitsource import clone_at_ref


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

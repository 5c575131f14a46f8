import pytest

from slipway.core.errors import InputError
from slipway.source.git import validate_ref, validate_repo_url


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "-uhelp",
        "--upload-pack=touch /tmp/pwned",
        "http://example.com/repo.git",
        "ftp://example.com/repo.git",
        "https://user:token@example.com/repo.git",
        "git@host:-oProxyCommand=x",
        "",
    ],
)
def test_hostile_or_unsupported_urls_are_refused(url):
    with pytest.raises(InputError) as info:
        validate_repo_url(url)
    assert info.value.ref in ("hostile-repo-url", "credentials-in-url")


@pytest.mark.parametrize(
    "url,kind",
    [
        ("https://github.com/org/repo.git", "https"),
        ("ssh://git@github.com/org/repo.git", "ssh"),
        ("git@github.com:org/repo.git", "ssh"),
    ],
)
def test_allowed_remote_urls(url, kind):
    assert validate_repo_url(url).kind == kind


def test_local_paths_and_file_urls_are_allowed(tmp_path):
    assert validate_repo_url(str(tmp_path)).kind == "local"
    assert validate_repo_url(f"file://{tmp_path}").kind == "file"


def test_a_missing_local_path_says_so(tmp_path):
    with pytest.raises(InputError) as info:
        validate_repo_url(str(tmp_path / "nope"))
    assert str(info.value) == f"repository not found: {tmp_path / 'nope'} does not exist: check the path or use a URL"


def test_ext_transport_message_names_the_transport():
    with pytest.raises(InputError) as info:
        validate_repo_url("ext::sh -c id")
    assert str(info.value).startswith("refused repository URL 'ext::sh -c id': git transport 'ext':: runs commands")


@pytest.mark.parametrize("ref", ["-x", "--output=/tmp/x", "a..b", "a b", "ref:x", "HEAD~1", ""])
def test_bad_refs_are_refused(ref):
    with pytest.raises(InputError):
        validate_ref(ref)


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x", "HEAD", "0123456789abcdef0123456789abcdef01234567"])
def test_good_refs_pass(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    "url",
    ["ssh://user:pass@example.com/repo.git", "https://example.com/repo.git?access_token=abc", "https://example.com/r.git#x"],
)
def test_credentials_smuggled_into_urls_are_refused(url):
    with pytest.raises(InputError) as info:
        validate_repo_url(url)
    assert info.value.ref == "credentials-in-url"


def test_the_askpass_helper_answers_only_the_validated_host(tmp_path):
    import subprocess

    from pydantic import SecretStr

    from slipway.source.git import _git_env

    env = _git_env(tmp_path, SecretStr("tok"), None, "git.example.com")
    askpass = env["GIT_ASKPASS"]
    ok = subprocess.run([askpass, "Password for 'https://x-access-token@git.example.com': "], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "tok\n"
    other = subprocess.run([askpass, "Password for 'https://x-access-token@evil.example.net': "], env=env, capture_output=True, text=True)
    assert other.returncode != 0 and other.stdout == ""

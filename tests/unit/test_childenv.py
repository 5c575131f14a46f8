from slipway.core.childenv import scrubbed_environ


def test_credentials_and_install_redirects_are_removed_pip_settings_kept():
    env = scrubbed_environ({
        "AWS_SECRET_ACCESS_KEY": "x", "AWS_ACCESS_KEY_ID": "x", "PREFECT_API_KEY": "x", "GITHUB_TOKEN": "x",
        "MY_DB_PASSWORD": "x", "SLIPWAY_GIT_TOKEN": "x", "PYTHONPATH": "/x", "PIP_TARGET": "/x",
        "PIP_INDEX_URL": "https://mirror/simple", "HTTPS_PROXY": "http://proxy:3128", "PATH": "/usr/bin", "LANG": "C.UTF-8",
    })
    assert env == {"PIP_INDEX_URL": "https://mirror/simple", "HTTPS_PROXY": "http://proxy:3128", "PATH": "/usr/bin", "LANG": "C.UTF-8"}

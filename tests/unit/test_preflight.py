"""Preflight checks on built zips (real zips, a real isolated interpreter)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from slipway.preflight import PreflightFailed, check_handler_imports, check_imports, raise_for_failures


def make_zip(tmp_path: Path, files: dict[str, str]) -> Path:
    path = tmp_path / "app.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_an_imported_but_unpackaged_module_is_named_with_its_line_and_the_fix(tmp_path):
    z = make_zip(tmp_path, {"app.py": "import json\nimport requests\nfrom yaml import safe_load\nfrom . import x\n\ndef handler(e, c):\n    return 1\n"})
    check = check_imports(z, ["app.py"], "requirements.txt")
    assert not check.passed
    assert check.detail == ("imported but not packaged: requests, yaml (app.py:2: import requests; app.py:3: import yaml); "
                            "add them to requirements.txt")


def test_packaged_stdlib_and_runtime_provided_imports_resolve(tmp_path):
    z = make_zip(tmp_path, {
        "app.py": "import os, json\nimport boto3\nimport requests\nimport helpers\nimport fast\n\ndef handler(e, c):\n    return 1\n",
        "requests/__init__.py": "", "helpers.py": "", "fast.cpython-311-x86_64-linux-gnu.so": "",
    })
    assert check_imports(z, ["app.py", "helpers.py"], None).passed


def test_the_handler_imports_with_boto3_clients_made_at_module_level(tmp_path):
    z = make_zip(tmp_path, {"app.py": "import boto3\nS3 = boto3.client('s3')\nfrom botocore.exceptions import ClientError\n"
                                      "def handler(e, c):\n    return 1\n"})
    check = check_handler_imports(z, "app.handler")
    assert check.passed, check.detail


@pytest.mark.parametrize("code, error", [
    ("import os\nTABLE = os.environ['TABLE_NAME']\ndef handler(e, c):\n    return 1\n", "KeyError: 'TABLE_NAME'"),
    ("import requests\ndef handler(e, c):\n    return 1\n", "ModuleNotFoundError: No module named 'requests'"),
    ("handler = 42\n", "app.handler is not a callable"),
    ("def handlr(e, c):\n    return 1\n", "app.handler is not a callable"),
])
def test_a_handler_that_does_not_import_from_the_zip_fails_with_the_error(tmp_path, code, error):
    check = check_handler_imports(make_zip(tmp_path, {"app.py": code}), "app.handler")
    assert not check.passed and check.detail == f"app.handler does not import from the built zip: {error}"


def test_the_import_runs_without_our_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    code = "import os\nassert 'AWS_SECRET_ACCESS_KEY' not in os.environ, 'leaked'\ndef handler(e, c):\n    return 1\n"
    assert check_handler_imports(make_zip(tmp_path, {"app.py": code}), "app.handler").passed


def test_failures_become_one_error_naming_the_first_and_counting_the_rest(tmp_path):
    z = make_zip(tmp_path, {"app.py": "import requests\ndef handler(e, c):\n    return 1\n"})
    checks = [check_imports(z, ["app.py"], "requirements.txt"), check_handler_imports(z, "app.handler")]
    with pytest.raises(PreflightFailed) as info:
        raise_for_failures(checks)
    assert info.value.message.startswith("preflight check 'imports resolve' failed: imported but not packaged: requests")
    assert info.value.message.endswith("(and 1 more)") and info.value.stage == "preflight"
    raise_for_failures([c for c in checks if c.passed])  # nothing failed: no error

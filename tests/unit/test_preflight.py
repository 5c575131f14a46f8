"""Preflight checks on built zips (real zips, a real isolated interpreter)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from slipway.core.errors import SpecError
from slipway.artifact.preflight import (
    PreflightCheck,
    PreflightFailed,
    check_handler_imports,
    check_imports,
    check_platform,
    check_size,
    lambda_zip_checks,
    raise_for_failures,
)


def make_zip(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
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


def test_the_import_sees_the_functions_variables_and_never_the_workers(tmp_path, monkeypatch):
    """What the handler reads at import is what Lambda gives it: the spec's variables and the runtime's, not the worker's."""
    code = "import os\nTABLE = os.environ['TABLE_NAME']\nREGION = os.environ['AWS_REGION']\ndef handler(e, c):\n    return 1\n"
    z = make_zip(tmp_path, {"app.py": code})
    assert check_handler_imports(z, "app.handler", environment={"TABLE_NAME": "orders"}).passed
    monkeypatch.setenv("TABLE_NAME", "set-on-the-worker-only")
    check = check_handler_imports(z, "app.handler")
    assert not check.passed and check.detail.endswith("KeyError: 'TABLE_NAME'")


def test_the_spec_gives_the_import_every_environments_variables_and_no_secret_value():
    from slipway.spec.schema import Spec

    spec = Spec.model_validate({
        "app": "orders", "artifact": {"type": "lambda-zip", "source": "src", "handler": "app.handler", "runtime": "python3.11",
                                      "environment": {"LOG_LEVEL": "info"}},
        "environments": [{"name": "dev", "environment": {"TABLE_NAME": "orders-dev", "TOKEN": {"secret": "ssm:/orders/token"}}},
                         {"name": "prod", "environment": {"TABLE_NAME": "orders-prod", "EXTRA": "1"}}],
    })
    env = spec.import_environment()
    assert env["LOG_LEVEL"] == "info" and env["TABLE_NAME"] == "orders-dev" and env["EXTRA"] == "1"
    assert "ssm:" not in env["TOKEN"] and "secret" in env["TOKEN"]


def test_failures_become_one_error_naming_the_first_and_counting_the_rest(tmp_path):
    z = make_zip(tmp_path, {"app.py": "import requests\ndef handler(e, c):\n    return 1\n"})
    checks = [check_imports(z, ["app.py"], "requirements.txt"), check_handler_imports(z, "app.handler")]
    with pytest.raises(PreflightFailed) as info:
        raise_for_failures(checks)
    assert info.value.message.startswith("preflight check 'imports resolve' failed: imported but not packaged: requests")
    assert info.value.message.endswith("(and 1 more)") and info.value.stage == "preflight"
    raise_for_failures([c for c in checks if c.passed])  # nothing failed: no error


X86_64, AARCH64 = 0x3E, 0xB7


def elf(machine: int) -> bytes:
    """The first 20 bytes of a 64-bit little-endian ELF shared object for ``machine`` (e_ident, e_type, e_machine)."""
    return b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HH", 3, machine)


def dist(name: str, version: str, *tags: str, files: dict[str, str | bytes] | None = None) -> dict[str, str | bytes]:
    """A vendored distribution as pip --target leaves it: dist-info with METADATA and WHEEL (RECORD & co. dropped)."""
    info = f"{name}-{version}.dist-info"
    wheel = "Wheel-Version: 1.0\nGenerator: bdist_wheel\nRoot-Is-Purelib: false\n" + "".join(f"Tag: {t}\n" for t in tags)
    return {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nA package.\n",
            f"{info}/WHEEL": wheel, **(files or {})}


APP = {"app.py": "def handler(e, c):\n    return 1\n"}


def test_pure_python_and_matching_binary_wheels_fit_the_runtime(tmp_path):
    z = make_zip(tmp_path, {
        **APP,
        **dist("requests", "2.32.3", "py3-none-any", files={"requests/__init__.py": ""}),
        **dist("six", "1.16.0", "py2-none-any", "py3-none-any", files={"six.py": ""}),
        **dist("orjson", "3.10.7", "cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64",
               files={"orjson/orjson.cpython-311-x86_64-linux-gnu.so": elf(X86_64)}),
    })
    check = check_platform(z, "python3.11", "x86_64")
    assert check.passed, check.detail
    assert check.detail == "every vendored wheel and compiled file loads on Lambda python3.11 x86_64"


def test_an_abi3_wheel_for_an_older_cpython_fits(tmp_path):
    z = make_zip(tmp_path, {**APP, **dist("cryptography", "43.0.1", "cp38-abi3-manylinux_2_17_x86_64", "cp38-abi3-manylinux2014_x86_64",
                                          files={"cryptography/hazmat/bindings/_rust.abi3.so": elf(X86_64)})})
    assert check_platform(z, "python3.11", "x86_64").passed


def test_a_wheel_for_another_python_fails_naming_the_package_the_tag_and_the_fix(tmp_path):
    z = make_zip(tmp_path, {**APP, **dist("pydantic_core", "2.23.4", "cp312-cp312-manylinux_2_17_x86_64",
                                          files={"pydantic_core/__init__.py": ""})})
    check = check_platform(z, "python3.11", "x86_64")
    assert not check.passed and check.ref == "incompatible-wheel"
    assert check.detail == (
        "does not load on Lambda python3.11 x86_64: pydantic_core 2.23.4 (tag cp312-cp312-manylinux_2_17_x86_64: "
        "built for CPython 3.12, not python3.11); pin a version with a manylinux2014_x86_64 wheel for cp311 "
        "(or a pure-Python one) and vendor it with `pip install --platform manylinux2014_x86_64 --implementation cp "
        "--python-version 3.11 --only-binary=:all:`, not from this machine's environment")


@pytest.mark.parametrize("tag, why", [
    ("cp311-cp311-macosx_11_0_arm64", "a macOS wheel"),
    ("cp311-cp311-win_amd64", "a Windows wheel"),
    ("cp311-cp311-manylinux_2_17_aarch64", "built for aarch64, not x86_64"),
    ("cp311-cp311-musllinux_1_1_x86_64", "a musl libc wheel; Lambda's Linux uses glibc"),
    ("cp311-cp311-manylinux_2_28_x86_64", "needs glibc 2.28, Lambda's python3.11 has 2.26"),
    ("cp312-abi3-manylinux_2_17_x86_64", "needs CPython 3.12 or newer, not python3.11"),
])
def test_a_wheel_for_another_platform_fails_with_the_reason(tmp_path, tag, why):
    check = check_platform(make_zip(tmp_path, {**APP, **dist("fastthing", "1.0", tag)}), "python3.11", "x86_64")
    assert not check.passed and f"fastthing 1.0 (tag {tag}: {why})" in check.detail


def test_an_aarch64_shared_object_fails_on_x86_64_naming_the_file_and_its_package(tmp_path):
    # the WHEEL says x86_64 (a wheel rebuilt or copied by hand): the ELF header is the evidence
    z = make_zip(tmp_path, {**APP, **dist("numpy", "2.1.1", "cp311-cp311-manylinux_2_17_x86_64", files={
        "numpy/_core/_multiarray_umath.so": elf(AARCH64), "numpy.libs/libopenblas.so.0": elf(AARCH64)})})
    check = check_platform(z, "python3.11", "x86_64")
    assert not check.passed
    assert "numpy 2.1.1 (numpy.libs/libopenblas.so.0: an ELF binary for aarch64, not x86_64; +1 more)" in check.detail
    assert check_platform(z, "python3.11", "arm64").passed is False  # its WHEEL tag is x86_64


def test_the_same_shared_object_fits_an_arm64_function(tmp_path):
    z = make_zip(tmp_path, {**APP, **dist("numpy", "2.1.1", "cp311-cp311-manylinux_2_17_aarch64",
                                          files={"numpy/_core/_multiarray_umath.so": elf(AARCH64)})})
    assert check_platform(z, "python3.11", "arm64").passed


@pytest.mark.parametrize("name, content, why", [
    ("fast.cpython-312-x86_64-linux-gnu.so", elf(X86_64), "compiled for CPython 3.12, not python3.11"),
    ("fast.cpython-311-darwin.so", b"\xcf\xfa\xed\xfe" + bytes(16), "compiled for macOS"),
    ("fast.so", b"\xcf\xfa\xed\xfe" + bytes(16), "a Mach-O (macOS) binary"),
    ("fast.cp311-win_amd64.pyd", b"MZ", "a Windows extension"),
    ("libfast.dylib", b"", "a macOS library"),
])
def test_a_foreign_compiled_file_without_a_dist_info_is_named_by_its_path(tmp_path, name, content, why):
    check = check_platform(make_zip(tmp_path, {**APP, name: content}), "python3.11", "x86_64")
    assert not check.passed and f": {name} ({why}); pin a version" in check.detail


def test_an_unknown_runtime_or_architecture_is_a_spec_error():
    with pytest.raises(SpecError, match="unsupported Lambda architecture 'sparc'"):
        check_platform(Path("unused.zip"), "python3.11", "sparc")
    with pytest.raises(SpecError, match="unsupported Lambda runtime 'nodejs20.x'"):
        check_platform(Path("unused.zip"), "nodejs20.x", "x86_64")


def sized_zip(tmp_path: Path) -> Path:
    # stored, not compressed: zipped ≈ unzipped, so the figures are easy to read
    path = tmp_path / "sized.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("app.py", b"x" * 100)
        zf.writestr("numpy/__init__.py", b"x" * 6000)
        zf.writestr("numpy/_core/umath.so", b"x" * 4000)
        zf.writestr("boto3/__init__.py", b"x" * 3000)
        for i in range(4):
            zf.writestr(f"small{i}.py", b"x" * (10 + i))
    return path


def test_a_zip_within_the_budget_passes_with_the_figures(tmp_path):
    z = sized_zip(tmp_path)
    check = check_size(z, max_unzipped_bytes=20_000)
    zipped = z.stat().st_size
    assert check.passed and check.ref is None
    assert check.detail == (
        f"{zipped:,} bytes ({zipped / 1024:.1f} KB) zipped, 13,146 bytes (12.8 KB) unzipped, limit 20,000 bytes (19.5 KB) "
        "(the spec's budget (artifact.max_unzipped_mb; AWS allows 262,144,000)); largest: numpy/ 10,000 bytes (9.8 KB), "
        "boto3/ 3,000 bytes (2.9 KB), app.py 100 bytes, small3.py 13 bytes, small2.py 12 bytes")


def test_a_zip_over_the_budget_fails_naming_the_biggest_entry(tmp_path):
    check = check_size(sized_zip(tmp_path), max_unzipped_bytes=10_000)
    assert not check.passed and check.ref == "artifact-too-large"
    assert check.detail.startswith("3,146 bytes over: ")
    assert "13,146 bytes (12.8 KB) unzipped, limit 10,000 bytes (9.8 KB) (the spec's budget" in check.detail
    assert "largest: numpy/ 10,000 bytes (9.8 KB)," in check.detail
    assert check.detail.endswith("; trim the largest entries (boto3/ is provided by the Lambda runtime) "
                                 "or raise artifact.max_unzipped_mb in slipway.yaml")


def test_over_aws_unzipped_limit_fails_even_without_a_budget(tmp_path):
    check = check_size(sized_zip(tmp_path), aws_limit_bytes=13_000)
    assert not check.passed and check.ref == "artifact-too-large"
    assert "limit 13,000 bytes (12.7 KB) (AWS Lambda's unzipped limit, function + layers)" in check.detail
    assert check.detail.endswith("or deploy a container image (10 GB limit)")
    assert check_size(sized_zip(tmp_path), max_unzipped_bytes=1_000_000, aws_limit_bytes=13_000).passed is False  # the smaller wins


def test_over_the_direct_upload_limit_zipped_passes_because_slipway_deploys_from_s3(tmp_path):
    check = check_size(sized_zip(tmp_path), direct_upload_bytes=1_000)
    assert check.passed
    assert check.detail.endswith("; zipped over the 1,000 bytes direct-upload limit, which is fine: Slipway deploys from S3")


def test_lambda_zip_checks_include_platform_and_size(tmp_path):
    z = make_zip(tmp_path, {**APP, **dist("fastthing", "1.0", "cp311-cp311-manylinux_2_17_aarch64")})
    checks = lambda_zip_checks(z, handler="app.handler", source_files=["app.py"], requirements=None,
                               max_unzipped_bytes=10)
    assert [(c.name, c.passed) for c in checks] == [
        ("imports resolve", True), ("platform compatible", False), ("size limits", False), ("handler imports", False)]  # not tried over the size budget
    assert [c.name for c in lambda_zip_checks(z, handler="app.handler", source_files=["app.py"], requirements=None,
                                              architecture="arm64") if not c.passed] == []


@pytest.mark.parametrize("failing, ref", [
    (PreflightCheck("size limits", False, "too big", ref="artifact-too-large"), "artifact-too-large"),
    (PreflightCheck("platform compatible", False, "a macOS wheel", ref="incompatible-wheel"), "incompatible-wheel"),
    (PreflightCheck("imports resolve", False, "imported but not packaged: x"), "preflight-failed"),
])
def test_the_error_carries_the_first_failed_checks_ref_and_every_check_as_evidence(failing, ref):
    checks = [PreflightCheck("handler imports", True, "ok"), failing, PreflightCheck("other", False, "later", ref="later-ref")]
    with pytest.raises(PreflightFailed) as info:
        raise_for_failures(checks)
    assert info.value.ref == ref
    assert info.value.message == f"preflight check '{failing.name}' failed: {failing.detail} (and 1 more)"
    assert info.value.evidence == {"checks": [c.to_dict() for c in checks]}
    assert info.value.evidence["checks"][1] == {"name": failing.name, "passed": False, "detail": failing.detail,
                                                "ref": failing.ref}


def test_real_failures_from_the_zip_raise_with_the_size_ref(tmp_path):
    checks = [check_platform(sized_zip(tmp_path)), check_size(sized_zip(tmp_path), max_unzipped_bytes=1_000)]
    with pytest.raises(PreflightFailed) as info:
        raise_for_failures(checks)
    assert info.value.ref == "artifact-too-large" and info.value.message.startswith("preflight check 'size limits' failed: ")

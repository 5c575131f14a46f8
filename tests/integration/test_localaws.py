"""The embedded local AWS endpoint, driven through boto3 exactly as AWS would be.

moto's state is global to the process, so the whole module shares ONE LocalAws; every test uses its own
function names.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from slipway.local.aws import LocalAws

REGION = "us-east-1"
ACCOUNT = "123456789012"
REPO_ROOT = Path(__file__).resolve().parents[2]

RETURNS_VERSION_TAG = """
def handler(event, context):
    print("handler output is log, never payload")
    return {"tag": TAG, "version": context.function_version}
"""


@pytest.fixture(scope="module")
def local_aws(tmp_path_factory):
    with LocalAws(work_dir=tmp_path_factory.mktemp("localaws"), seed=20240601) as aws:
        yield aws


@pytest.fixture(scope="module")
def clients(local_aws):
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    # One attempt: a retried 5xx would hide a broken middleware.
    config = Config(retries={"max_attempts": 1, "mode": "standard"})

    def make(service: str):
        return session.client(service, endpoint_url=local_aws.endpoint, config=config)

    return make


@pytest.fixture(scope="module")
def lam(clients):
    return clients("lambda")


@pytest.fixture(scope="module")
def role_arn(clients):
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = clients("iam").create_role(RoleName="localaws-test-role", AssumeRolePolicyDocument=json.dumps(trust))
    return role["Role"]["Arn"]


def zip_of(source: str, module: str = "app") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}.py", textwrap.dedent(source))
    return buffer.getvalue()


def create_function(lam, role_arn: str, name: str, source: str, **extra) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role_arn,
        Handler="app.handler",
        Code={"ZipFile": zip_of(source)},
        **extra,
    )


def publish_tagged_versions(lam, role_arn: str, name: str, tags: list[str]) -> None:
    """Versions 1..n of `name`, version i returning tags[i-1]."""
    create_function(lam, role_arn, name, f"TAG = {tags[0]!r}\n" + RETURNS_VERSION_TAG)
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    for number, tag in enumerate(tags[1:], start=2):
        lam.update_function_code(FunctionName=name, ZipFile=zip_of(f"TAG = {tag!r}\n" + RETURNS_VERSION_TAG))
        assert lam.publish_version(FunctionName=name)["Version"] == str(number)


def invoke_json(lam, **kwargs) -> tuple[dict, dict]:
    response = lam.invoke(**kwargs)
    return response, json.loads(response["Payload"].read())


def test_endpoint_binds_loopback_only(local_aws):
    assert local_aws.endpoint.startswith("http://127.0.0.1:")


def test_alias_runs_the_aliased_versions_code_and_reports_executed_version(lam, role_arn):
    publish_tagged_versions(lam, role_arn, "alias-code", ["one", "two"])
    lam.create_alias(FunctionName="alias-code", Name="live", FunctionVersion="1")

    response, payload = invoke_json(lam, FunctionName="alias-code", Qualifier="live")
    assert (response["StatusCode"], response["ExecutedVersion"]) == (200, "1")
    assert payload == {"tag": "one", "version": "1"}

    lam.update_alias(FunctionName="alias-code", Name="live", FunctionVersion="2")
    response, payload = invoke_json(lam, FunctionName="alias-code:live")
    assert response["ExecutedVersion"] == "2"
    assert payload == {"tag": "two", "version": "2"}

    response, payload = invoke_json(lam, FunctionName="alias-code")
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload == {"tag": "two", "version": "$LATEST"}


def test_name_colon_version_qualifier_parameter_and_arn_select_that_version(lam, role_arn):
    publish_tagged_versions(lam, role_arn, "by-version", ["first", "second"])
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:by-version"

    for kwargs in ({"FunctionName": "by-version:1"}, {"FunctionName": "by-version", "Qualifier": "1"},
                   {"FunctionName": f"{arn}:1"}, {"FunctionName": arn, "Qualifier": "1"}):
        response, payload = invoke_json(lam, **kwargs)
        assert (response["ExecutedVersion"], payload["tag"]) == ("1", "first"), kwargs


def test_unknown_alias_version_or_function_raise_resource_not_found(lam, role_arn):
    publish_tagged_versions(lam, role_arn, "not-found", ["only"])
    cases = [
        ({"FunctionName": "not-found", "Qualifier": "nope"}, "not-found:nope"),
        ({"FunctionName": "not-found:7"}, "not-found:7"),
        ({"FunctionName": "no-such-function"}, "no-such-function"),
    ]
    for kwargs, resource in cases:
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
            lam.invoke(**kwargs)
        error = caught.value.response["Error"]
        assert error["Message"] == f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{resource}"


def test_host_site_packages_are_invisible_to_the_handler(lam, role_arn):
    # Real Lambda's Python runtimes ship boto3; this fake gives the handler the standard library only, so
    # a package must bundle what it imports (which is what a reproducible artifact should do anyway).
    create_function(lam, role_arn, "no-site-packages", "import boto3\ndef handler(event, context):\n    return 1\n")

    response, payload = invoke_json(lam, FunctionName="no-site-packages")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"] == "Unable to import module 'app': No module named 'boto3'"


def test_handler_sees_function_variables_and_never_the_host_environment(lam, role_arn, monkeypatch):
    monkeypatch.setenv("SLIPWAY_HOST_SECRET", "must-not-leak")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTKEY")
    create_function(
        lam, role_arn, "env-isolation",
        "import os\ndef handler(event, context):\n    return dict(os.environ)\n",
        Environment={"Variables": {"STAGE": "beta"}},
        MemorySize=256,
    )

    _, env = invoke_json(lam, FunctionName="env-isolation")

    assert env["STAGE"] == "beta"
    assert "SLIPWAY_HOST_SECRET" not in env
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HOME", "PYTHONPATH"} & set(env)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "env-isolation"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert (env["AWS_REGION"], env["AWS_DEFAULT_REGION"], env["TZ"]) == (REGION, REGION, ":UTC")
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_handler_exception_is_an_unhandled_error_and_prints_stay_in_the_log(lam, role_arn):
    source = """
    def handler(event, context):
        print("about to fail")
        raise ValueError("boom: " + event["why"])
    """
    create_function(lam, role_arn, "raises", source)

    response, payload = invoke_json(lam, FunctionName="raises", Payload=b'{"why": "bad input"}', LogType="Tail")

    assert (response["StatusCode"], response["FunctionError"]) == (200, "Unhandled")
    assert (payload["errorType"], payload["errorMessage"]) == ("ValueError", "boom: bad input")
    assert any("app.py" in frame for frame in payload["stackTrace"])
    log = base64.b64decode(response["LogResult"]).decode()
    assert "about to fail" in log
    assert "[ERROR] ValueError: boom: bad input" in log
    assert log.startswith("START RequestId: ")


def test_timeout_kills_the_handler_and_reports_task_timed_out(lam, role_arn):
    source = "import time\ndef handler(event, context):\n    time.sleep(5)\n    return 'late'\n"
    create_function(lam, role_arn, "too-slow", source, Timeout=1)

    started = time.monotonic()
    response, payload = invoke_json(lam, FunctionName="too-slow")
    elapsed = time.monotonic() - started

    assert response["FunctionError"] == "Unhandled"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert payload == {"errorMessage": f"{request_id} Task timed out after 1.00 seconds"}
    assert elapsed < 4


def test_alias_additional_version_weights_are_honoured(lam, role_arn):
    publish_tagged_versions(lam, role_arn, "weighted", ["blue", "green"])
    lam.create_alias(
        FunctionName="weighted", Name="live", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )

    def executed_version(_: int) -> str:
        response, payload = invoke_json(lam, FunctionName="weighted", Qualifier="live")
        assert payload["version"] == response["ExecutedVersion"]
        return response["ExecutedVersion"]

    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent invokes also exercise thread safety
        versions = list(pool.map(executed_version, range(200)))

    assert set(versions) == {"1", "2"}
    assert 40 <= versions.count("2") <= 80


def _metric_sum(cloudwatch, metric: str, dimensions: dict[str, str]) -> float:
    now = datetime.now(timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace="AWS/Lambda", MetricName=metric, StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1), Period=60, Statistics=["Sum"],
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
    )["Datapoints"]
    return sum(point["Sum"] for point in points)


def test_metrics_are_readable_per_executed_version(lam, role_arn, clients):
    create_function(lam, role_arn, "metered", "def handler(event, context):\n    return 'ok'\n")
    lam.publish_version(FunctionName="metered")
    failing = zip_of("def handler(event, context):\n    raise RuntimeError('v2')\n")
    lam.update_function_code(FunctionName="metered", ZipFile=failing)
    lam.publish_version(FunctionName="metered")
    lam.create_alias(FunctionName="metered", Name="live", FunctionVersion="1")
    for _ in range(3):
        lam.invoke(FunctionName="metered", Qualifier="live")
    lam.update_alias(FunctionName="metered", Name="live", FunctionVersion="2")
    for _ in range(2):
        lam.invoke(FunctionName="metered", Qualifier="live")
    cloudwatch = clients("cloudwatch")
    live = {"FunctionName": "metered", "Resource": "metered:live"}

    assert _metric_sum(cloudwatch, "Invocations", {**live, "ExecutedVersion": "1"}) == 3
    assert _metric_sum(cloudwatch, "Errors", {**live, "ExecutedVersion": "1"}) == 0
    assert _metric_sum(cloudwatch, "Invocations", {**live, "ExecutedVersion": "2"}) == 2
    assert _metric_sum(cloudwatch, "Errors", {**live, "ExecutedVersion": "2"}) == 2
    # Coarser dimension sets give AWS's totals, not multiples of them.
    assert _metric_sum(cloudwatch, "Invocations", live) == 5
    assert _metric_sum(cloudwatch, "Errors", {"FunctionName": "metered"}) == 2


def test_dry_run_and_event_invocation_types(lam, role_arn):
    create_function(lam, role_arn, "invocation-types", "def handler(event, context):\n    return 'ran'\n")

    assert lam.invoke(FunctionName="invocation-types", InvocationType="DryRun")["StatusCode"] == 204
    assert lam.invoke(FunctionName="invocation-types", InvocationType="Event")["StatusCode"] == 202


def test_other_services_pass_through_untouched(clients):
    s3 = clients("s3")
    s3.create_bucket(Bucket="localaws-pass-through")
    s3.put_object(Bucket="localaws-pass-through", Key="k.txt", Body=b"hello")
    assert s3.get_object(Bucket="localaws-pass-through", Key="k.txt")["Body"].read() == b"hello"

    cloudwatch = clients("cloudwatch")
    cloudwatch.put_metric_data(Namespace="Slipway/Test", MetricData=[{"MetricName": "Probe", "Value": 4.0}])
    now = datetime.now(timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace="Slipway/Test", MetricName="Probe", StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1), Period=3600, Statistics=["Sum"],
    )["Datapoints"]
    assert [point["Sum"] for point in points] == [4.0]
    assert clients("sts").get_caller_identity()["Account"] == ACCOUNT


def test_module_entry_point_writes_ready_file_and_exits_zero_on_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "slipway.local.aws", "--host", "127.0.0.1", "--port", "0",
         "--work-dir", str(tmp_path / "work"), "--ready-file", str(ready)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the file, not waiting a fixed time
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no ready file"
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        assert info["endpoint"].startswith("http://127.0.0.1:")
        sts = boto3.client("sts", endpoint_url=info["endpoint"], region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        assert sts.get_caller_identity()["Account"] == ACCOUNT

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

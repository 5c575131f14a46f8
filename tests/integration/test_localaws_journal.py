"""The local AWS endpoint keeps its state across a restart (its journal, replayed at start): what a user had before
`slipway local down` is there after `slipway local up`. Each endpoint is its own process, as the stack runs it."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def endpoint(work: Path, ready: Path):
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "slipway.local.aws", "--host", "127.0.0.1", "--port", "0", "--work-dir", str(work),
                             "--ready-file", str(ready)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the file, not waiting a fixed time
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no ready file"
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        url = json.loads(ready.read_text())["endpoint"]
        yield lambda service: session.client(service, endpoint_url=url, config=Config(retries={"max_attempts": 1}))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def package(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", f"def handler(event, context):\n    return {text!r}\n")
        zf.writestr("padding.bin", b"x" * 20000)  # larger than what the journal keeps inline
    return buf.getvalue()


def test_state_survives_a_restart_and_reads_invocations_and_failures_are_not_journaled(tmp_path):
    work, ready = tmp_path / "aws", tmp_path / "ready.json"
    with endpoint(work, ready) as client:
        s3, lam, iam, ssm = client("s3"), client("lambda"), client("iam"), client("ssm")
        s3.create_bucket(Bucket="store")
        s3.put_bucket_versioning(Bucket="store", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket="store", Key="ledger/head.json", Body=b'{"seq": 1}')
        etag = s3.put_object(Bucket="store", Key="ledger/head.json", Body=b'{"seq": 2}', IfMatch=s3.head_object(
            Bucket="store", Key="ledger/head.json")["ETag"])["ETag"]
        try:  # a conditional write that lost changes nothing, and is not replayed as if it had
            s3.put_object(Bucket="store", Key="ledger/head.json", Body=b'{"seq": 99}', IfNoneMatch="*")
        except s3.exceptions.ClientError:
            pass
        role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam.create_function(FunctionName="fn", Runtime="python3.11", Role=role, Handler="app.handler",
                            Code={"ZipFile": package("v1")}, Publish=True)
        lam.update_function_code(FunctionName="fn", ZipFile=package("v2"))
        v2 = lam.publish_version(FunctionName="fn")["Version"]
        lam.create_alias(FunctionName="fn", Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {v2: 0.25}})
        ssm.put_parameter(Name="/slipway/flags/app/dev/beta", Value="on", Type="String")
        ssm.put_parameter(Name="/slipway/flags/app/dev/beta", Value="off", Type="String", Overwrite=True)
        assert json.loads(lam.invoke(FunctionName="fn", Qualifier=v2)["Payload"].read()) == "v2"
        journal = (work / "journal" / "journal.jsonl").read_text().splitlines()

    ops = [json.loads(line) for line in journal]
    assert not any(op["method"] in ("GET", "HEAD") or "/invocations" in op["path"] for op in ops)
    assert len(ops) == 11, [(op["method"], op["path"]) for op in ops]  # the 11 changes above, the lost write not among them
    assert len(list((work / "journal" / "bodies").iterdir())) == 2  # the two packages, kept once each

    with endpoint(work, ready) as client:  # restarted: the same state
        s3, lam, ssm = client("s3"), client("lambda"), client("ssm")
        head = s3.get_object(Bucket="store", Key="ledger/head.json")
        assert head["Body"].read() == b'{"seq": 2}' and head["ETag"] == etag  # a later IfMatch on this ETag still wins
        assert len(s3.list_object_versions(Bucket="store", Prefix="ledger/")["Versions"]) == 2
        assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="fn")["Versions"]] == ["$LATEST", "1", "2"]
        alias = lam.get_alias(FunctionName="fn", Name="live")
        assert alias["FunctionVersion"] == "1" and alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.25}
        assert json.loads(lam.invoke(FunctionName="fn", Qualifier="1")["Payload"].read()) == "v1"
        param = ssm.get_parameter(Name="/slipway/flags/app/dev/beta")["Parameter"]
        assert (param["Value"], param["Version"]) == ("off", 2)
        s3.put_object(Bucket="store", Key="after-restart", Body=b"1")

    with endpoint(work, ready) as client:  # and again: what was changed after the first restart is kept too
        assert client("s3").get_object(Bucket="store", Key="after-restart")["Body"].read() == b"1"
        client("s3").delete_object(Bucket="store", Key="after-restart")


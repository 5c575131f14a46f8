"""The embedded stack as a user restarts it: `slipway local down`, then `slipway local up`, keeps the ports, the Prefect
database and the local AWS state (the artifact store's objects, Lambda functions and their versions, SSM flags);
`local down --reset` starts the next `up` empty on the same ports. A stack of this test's own (its own SLIPWAY_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]


def slipway(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env["SLIPWAY_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "slipway.cli", *args], cwd=ROOT, env=env, text=True, capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def clients(status: dict):
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    url = status["env"]["AWS_ENDPOINT_URL"]
    return session.client("s3", endpoint_url=url), session.client("ssm", endpoint_url=url)


def test_local_down_then_up_keeps_state_and_ports_and_reset_empties_it(tmp_path):
    home = tmp_path / "home"
    try:
        slipway(home, "local", "up")
        before = json.loads(slipway(home, "local", "status", "--json").stdout)
        s3, ssm = clients(before)
        s3.put_object(Bucket=before["bucket"], Key="slipway/ledger/app/dev/head.json", Body=b'{"seq": 3}')
        ssm.put_parameter(Name="/slipway/flags/app/dev/beta", Value="on", Type="String")

        down = slipway(home, "local", "down").stdout
        assert "kept for the next `slipway local up`" in down
        slipway(home, "local", "up")
        after = json.loads(slipway(home, "local", "status", "--json").stdout)
        assert (after["ui_url"], after["env"]) == (before["ui_url"], before["env"])  # the same ports, the same exports
        s3, ssm = clients(after)
        assert s3.get_object(Bucket=after["bucket"], Key="slipway/ledger/app/dev/head.json")["Body"].read() == b'{"seq": 3}'
        assert ssm.get_parameter(Name="/slipway/flags/app/dev/beta")["Parameter"]["Value"] == "on"

        slipway(home, "local", "down", "--reset")
        slipway(home, "local", "up")
        fresh = json.loads(slipway(home, "local", "status", "--json").stdout)
        assert fresh["env"] == before["env"]
        s3, ssm = clients(fresh)
        assert s3.list_objects_v2(Bucket=fresh["bucket"]).get("KeyCount") == 0  # the bucket again, empty
        assert not ssm.get_parameters_by_path(Path="/slipway/", Recursive=True)["Parameters"]
    finally:
        subprocess.run([sys.executable, "-m", "slipway.cli", "local", "down"], cwd=ROOT, capture_output=True,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "SLIPWAY_HOME": str(home)})

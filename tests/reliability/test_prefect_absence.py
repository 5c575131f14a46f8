"""The Prefect server dies mid-deploy, and comes back: the ledger and the target are the truth.

A Prefect server of the test's own (the embedded stack's settings: SQLite, leases on disk) serves a release running
in its own process; a proxy in front of the local AWS SIGKILLs that server the moment the release shifts the alias to
the new version. The release can no longer start its rollback subflow, so it rolls back from the ledger and the
target it holds; the environment is back on the verified release. The server is started again on the same port and
home: the next release goes through without a manual step (the dead holder's lock lease, kept on disk, expires), and
the run that held the environment is reconciled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from faultproxy import FaultProxy, Rule
from own_server import OwnServer


@pytest.fixture
def own_server(tmp_path):
    server = OwnServer(tmp_path / "server-home")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def c2_release(ledger, repo, verified) -> str | None:
    """The release id the second commit was deployed as, if it got that far."""
    started = [e for e in ledger.entries(repo.app, "dev") if e.kind == "deploy-started" and e.release_id != verified.release_id]
    return started[-1].release_id if started else None


def _release(repo, tag: str, server: OwnServer, retries: int | None = None) -> subprocess.CompletedProcess:
    from conftest import ROOT

    code = ("from flows.release import release; "
            f"release(repo_url={repo.url!r}, ref={tag!r}, only=['dev'], store_block='absent', lock_wait=240)")
    env = {**os.environ, "PREFECT_API_URL": server.url, **({"PREFECT_CLIENT_MAX_RETRIES": str(retries)} if retries is not None else {})}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)


@pytest.mark.parametrize("second", ["good", "broken"])
def test_the_prefect_server_killed_mid_deploy_then_restarted_leaves_no_stranded_environment(prefect_api, app_repo, own_server, second):
    """``good``: the new version passes its checks and is recorded verified without the API; ``broken``: it fails them,
    and the release rolls back from the ledger and the target, since the rollback subflow cannot start."""
    import boto3
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import ArtifactStoreBlock, LambdaTargetBlock
    from slipway.record.ledger import Ledger

    proxy = FaultProxy(upstream=prefect_api["env"]["AWS_ENDPOINT_URL"])
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=proxy.start()))
    with temporary_settings(updates={PREFECT_API_URL: own_server.url}):
        ArtifactStoreBlock(bucket=prefect_api["bucket"], prefix="slipway", credentials=creds).save("absent", overwrite=True)
        LambdaTargetBlock(credentials=creds, role_arn=prefect_api["role_arn"]).save("absent", overwrite=True)
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text()
    repo.write("slipway.yaml", spec[: spec.index("environments:")] + "environments:\n  - name: dev\n    target: absent\n")
    repo.commit("dev on the test's own server", tag="c1")
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    endpoint = prefect_api["env"]["AWS_ENDPOINT_URL"]
    lam = session.client("lambda", endpoint_url=endpoint)
    ledger = Ledger(session.client("s3", endpoint_url=endpoint), prefect_api["bucket"], "slipway")
    try:
        first = _release(repo, "c1", own_server)
        assert first.returncode == 0, first.stderr[-2000:]
        verified = ledger.head(repo.app, "dev").live

        if second == "broken":
            repo.break_health_check()
        repo.write("src/app.py", (repo.path / "src" / "app.py").read_text() + "\n# c2\n").commit("c2", tag="c2")
        proxy.rules.append(Rule("UpdateAlias", "call", action=own_server.kill))
        t0 = time.monotonic()
        # Prefect's client retries every call to the dead server (5 times, with backoff: minutes in all); one retry
        # is enough to show what the release does without its server
        killed = _release(repo, "c2", own_server, retries=1)
        print(f"the release whose server died ended after {time.monotonic() - t0:.0f} s")

        assert killed.returncode != 0
        head = ledger.head(repo.app, "dev")
        assert head.in_progress is None, head.in_progress  # not stranded: finished or rolled back without Prefect
        if second == "broken":  # back on the verified release, by the release itself
            assert head.live.release_id == verified.release_id
            assert "the Prefect API was unreachable" in ledger.entries(repo.app, "dev")[-1].message
        else:
            assert head.live.release_id in (verified.release_id, c2_release(ledger, repo, verified))
        alias = lam.get_alias(FunctionName=f"{repo.app}-dev", Name="live")
        assert alias["FunctionVersion"] == head.live.version and not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
        kinds = [e.kind for e in ledger.entries(repo.app, "dev")]
        assert kinds[-1] in ("verified", "rolled-back"), kinds
        print("the ledger after it:", kinds)

        own_server.start()  # the same port and home: its lock lease of the killed run is still on disk
        started = time.monotonic()
        again = _release(repo, "c2" if second == "good" else "c1", own_server)  # a broken c2 would only fail again
        assert again.returncode == 0, again.stderr[-2000:]
        print(f"after the restart, the next release took {time.monotonic() - started:.0f} s")
        assert time.monotonic() - started < 200  # at most the lease (60 s) plus the server's expiry pass and the release
        assert ledger.head(repo.app, "dev").in_progress is None
    finally:
        proxy.stop()


@pytest.mark.parametrize("api", ["unreachable", "up"])
def test_a_failing_deploy_rolls_itself_back_only_when_the_prefect_api_is_unreachable(monkeypatch, api):
    """The mechanism on its own: with the API up the state hooks' rollback subflow does it (nothing happens here)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fakes import FakeS3, FakeTarget, artifact
    from flows.rollback import rollback_even_without_prefect
    from slipway.core.errors import VerificationFailed
    from slipway.record.ledger import Ledger
    from slipway.rollout import staged
    from tasks import wiring

    ctx = staged.EnvContext(ledger=Ledger(FakeS3(), "bucket"), app="app", environment="dev", target=FakeTarget(), run_id="run-A")
    good = artifact("r1-aaaa")
    deployed = staged.publish(ctx, good)
    staged.verify(ctx, good, deployed.version, staged.shift_traffic(ctx, good, deployed))
    newer = artifact("r2-bbbb")
    staged.shift_traffic(ctx, newer, staged.publish(ctx, newer))  # in progress when the deploy fails
    monkeypatch.setitem(wiring._KNOWN, ("app", "dev"), ctx)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    if api == "unreachable":
        server.shutdown()
        server.server_close()
    try:
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            with pytest.raises(VerificationFailed), rollback_even_without_prefect("app", "dev"):
                raise VerificationFailed("smoke check 'health' failed in dev", target="app/dev")
    finally:
        if api == "up":
            server.shutdown()
            server.server_close()
    if api == "up":
        assert ctx.target.serving() == "2" and ctx.head().in_progress is not None  # left for the hooks
    else:
        assert ctx.target.serving() == "1" and ctx.head().in_progress is None
        assert "the Prefect API was unreachable" in ctx.ledger.entries("app", "dev")[-1].message

"""A container release to ECS through the local AWS: a task-definition revision pinned to the digest, the
service updated and stable, smoke checks against the environment's endpoint, rollback to the previous
revision. The endpoint is a small HTTP server in the test: the local AWS runs no ECS tasks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import git

pytestmark = pytest.mark.docker

DOCKERFILE = 'FROM slipway-test/busybox:latest\nENV VERSION={v}\nCMD ["sh", "-c", "sleep 3600"]\n'
SPEC = """app: {app}
artifact: {{type: docker-image}}
verify:
  smoke:
    - name: health
      request: {{path: /health}}
      expect: {{status: 200, body_contains: ok}}
environments:
  - name: dev
    type: ecs
    target: ecs-local
"""


class Endpoint:
    """Stands in for the service's load balancer: answers /health with 200, or 500 while ``broken()`` says
    the service runs a broken revision."""

    def __init__(self) -> None:
        self.broken = lambda: False
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                status = 500 if endpoint.broken() else 200
                body = b"ok" if status == 200 else b"broken"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def ecs_env(prefect_api, busybox_image, tmp_path, request):
    import boto3
    from prefect_aws import AwsCredentials

    from blocks import EcsTargetBlock

    app = "ecs-" + request.node.name.lower().replace("_", "-")[-20:].strip("-")
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    ecs = session.client("ecs", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])
    ecs.create_cluster(clusterName="slipway-test")
    first = ecs.register_task_definition(
        family=f"{app}-dev", containerDefinitions=[{"name": "app", "image": "placeholder@sha256:" + "0" * 64, "memory": 128}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="slipway-test", serviceName=f"{app}-dev", taskDefinition=first, desiredCount=1, launchType="EC2")
    endpoint = Endpoint()
    EcsTargetBlock(
        credentials=AwsCredentials.load("slipway-local"), cluster="slipway-test", endpoint_template=endpoint.url, wait_timeout=30,
    ).save("ecs-local", overwrite=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    yield app, repo, ecs, endpoint, first
    endpoint.server.shutdown()


def commit(repo, app: str, version: str) -> None:
    (repo / "Dockerfile").write_text(DOCKERFILE.format(v=version))
    (repo / "slipway.yaml").write_text(SPEC.format(app=app))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", version)
    git(repo, "tag", version)


def service_task_definition(ecs, app: str) -> str:
    return ecs.describe_services(cluster="slipway-test", services=[f"{app}-dev"])["services"][0]["taskDefinition"]


def test_a_release_registers_a_revision_pinned_to_the_digest_and_a_failed_check_rolls_back(ecs_env):
    from flows.release import release

    app, repo, ecs, endpoint, original = ecs_env
    commit(repo, app, "v1")
    state = release(repo_url=f"file://{repo}", ref="v1", return_state=True)
    summary = state.result(raise_on_failure=False)
    assert state.is_completed(), summary
    arn = service_task_definition(ecs, app)
    assert arn != original and arn.endswith(":2")
    image = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"][0]["image"]
    pinned = summary["artifact"]["image"]
    assert image == f"{pinned['repository']}@{pinned['digest']}"

    commit(repo, app, "v2")
    endpoint.broken = lambda: service_task_definition(ecs, app) != arn  # any revision but v1's serves errors
    state = release(repo_url=f"file://{repo}", ref="v2", return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert "smoke check 'health' failed in dev: GET " in str(err) and "expected status 200, got 500" in str(err)
    assert "dev rolled back to" in str(err)
    assert service_task_definition(ecs, app) == arn  # back on the verified revision
    history = json.loads(json.dumps([e.model_dump(mode="json") for e in _ledger().entries(app, "dev")]))
    assert [e["kind"] for e in history][-2:] == ["rollback-started", "rolled-back"]


def _ledger():
    from tasks.wiring import open_store

    return open_store("default")[1]

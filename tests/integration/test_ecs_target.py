"""slipway.targets.ecs against an in-process moto server, plus the stability rule against hand-written fakes.

moto's state is global to the process and other modules run LocalAws servers in it too: every test uses its
own uuid-named cluster, family and service, and nothing here resets moto.

What moto cannot show: it never rolls an ECS deployment. After update_service the service's taskDefinition
changes, but its single PRIMARY deployment keeps the revision the service was created with (and counts from
MOTO_ECS_SERVICE_RUNNING), so the real wait can only pass on a freshly created service. The deploy/rollback
tests therefore wait with ``service_set_to`` (what moto does model), and the rule "the PRIMARY deployment
runs the new revision" is tested with fakes shaped like AWS's replies.
"""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from slipway.targets.ecs import EcsSettings, deploy, register_revision, roll_back, wait_stable
from slipway.core.errors import DeployError, RollbackError
from fakes import FakeClock

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
REPO = "127.0.0.1:5000/hello-service"
RUNNING = 2  # tasks moto reports as running for every service created in this module


@pytest.fixture(scope="module")
def ecs():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto reads MOTO_ECS_SERVICE_RUNNING from os.environ when a service is created (ecs/models.py,
    # Service.__init__); the server thread shares this process's environment, so setting it here is enough.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTO_ECS_SERVICE_RUNNING", str(RUNNING))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield boto3.client(
                "ecs",
                endpoint_url=f"http://{host}:{port}",
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 1, "mode": "standard"}),
            )
        finally:
            server.stop()


@pytest.fixture
def service(ecs):
    """A cluster with an EC2-launch service (moto needs no container instance for it) on revision 1."""
    name = f"slipway-ecs-{uuid.uuid4().hex[:10]}"
    ecs.create_cluster(clusterName=name)
    first = ecs.register_task_definition(
        family=name,
        networkMode="bridge",
        requiresCompatibilities=["EC2"],
        cpu="256",
        memory="512",
        executionRoleArn="arn:aws:iam::123456789012:role/exec",
        taskRoleArn="arn:aws:iam::123456789012:role/task",
        volumes=[{"name": "scratch", "host": {"sourcePath": "/tmp/scratch"}}],
        tags=[{"key": "team", "value": "delivery"}],
        containerDefinitions=[
            {"name": "web", "image": f"{REPO}:old", "memory": 256, "environment": [{"name": "MODE", "value": "old"}, {"name": "KEEP", "value": "1"}]},
            {"name": "log-router", "image": "fluent-bit:2", "memory": 64},
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=name, serviceName=name, taskDefinition=first, desiredCount=RUNNING, launchType="EC2")
    return EcsSettings(cluster=name, service=name, container_name="web"), first


def service_set_to(ecs, settings, task_definition_arn, **_):
    """The part of stability moto models: the service is set to the revision and its counts match."""
    svc = ecs.describe_services(cluster=settings.cluster, services=[settings.service])["services"][0]
    assert (svc["taskDefinition"], svc["runningCount"]) == (task_definition_arn, svc["desiredCount"])


def test_deploy_registers_a_revision_pinned_to_the_digest_and_points_the_service_at_it(ecs, service):
    settings, first = service
    result = deploy(ecs, settings, f"{REPO}@{DIGEST_A}", environment={"MODE": "new"}, labels={"slipway.release": "r1"}, wait=service_set_to)

    assert (result.revision, result.previous_task_definition_arn, result.image) == (2, first, f"{REPO}@{DIGEST_A}")
    assert result.task_definition_arn.endswith(f"task-definition/{settings.service}:2")
    described = ecs.describe_task_definition(taskDefinition=result.task_definition_arn, include=["TAGS"])
    td = described["taskDefinition"]
    web, router = td["containerDefinitions"]
    assert web["image"] == f"{REPO}@{DIGEST_A}"
    assert web["environment"] == [{"name": "KEEP", "value": "1"}, {"name": "MODE", "value": "new"}]
    assert web["dockerLabels"] == {"slipway.release": "r1"}
    assert (router["name"], router["image"]) == ("log-router", "fluent-bit:2")
    assert (td["cpu"], td["memory"], td["networkMode"], td["requiresCompatibilities"]) == ("256", "512", "bridge", ["EC2"])
    assert (td["executionRoleArn"], td["taskRoleArn"]) == ("arn:aws:iam::123456789012:role/exec", "arn:aws:iam::123456789012:role/task")
    assert td["volumes"] == [{"name": "scratch", "host": {"sourcePath": "/tmp/scratch"}}]
    assert described["tags"] == [{"key": "team", "value": "delivery"}]
    svc = ecs.describe_services(cluster=settings.cluster, services=[settings.service])["services"][0]
    assert svc["taskDefinition"] == result.task_definition_arn


def test_register_revision_uses_the_family_from_the_settings_when_given(ecs, service):
    settings, _ = service
    family = f"{settings.service}-canary"
    arn, revision = register_revision(ecs, EcsSettings(settings.cluster, settings.service, "web", family=family), f"{REPO}@{DIGEST_A}")
    assert (arn.rsplit("/", 1)[-1], revision) == (f"{family}:1", 1)


def test_roll_back_after_a_second_deploy_returns_the_service_to_the_previous_revision(ecs, service):
    settings, _ = service
    first = deploy(ecs, settings, f"{REPO}@{DIGEST_A}", wait=service_set_to)
    second = deploy(ecs, settings, f"{REPO}@{DIGEST_B}", wait=service_set_to)
    assert (second.revision, second.previous_task_definition_arn) == (3, first.task_definition_arn)

    roll_back(ecs, settings, second.previous_task_definition_arn, wait=service_set_to)

    svc = ecs.describe_services(cluster=settings.cluster, services=[settings.service])["services"][0]
    assert svc["taskDefinition"] == first.task_definition_arn
    image = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]["containerDefinitions"][0]["image"]
    assert image == f"{REPO}@{DIGEST_A}"


def test_roll_back_to_an_unknown_revision_is_a_rollback_error(ecs, service):
    settings, first = service
    with pytest.raises(RollbackError) as caught:
        roll_back(ecs, settings, first.replace(":1", ":99"), wait=service_set_to)
    assert str(caught.value).startswith("could not update the ECS service: ClientException:")
    assert "\n" not in str(caught.value)


def test_wait_stable_passes_on_a_fresh_service_because_moto_reports_its_tasks_running(ecs, service):
    settings, first = service
    wait_stable(ecs, settings, first, timeout_s=0, sleep=lambda s: pytest.fail("no wait expected"))


def test_wait_stable_does_not_pass_while_the_primary_deployment_runs_the_old_revision(ecs, service):
    settings, first = service
    new = ecs.register_task_definition(family=settings.service, containerDefinitions=[{"name": "web", "image": f"{REPO}@{DIGEST_A}", "memory": 256}])
    new_arn = new["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=settings.cluster, service=settings.service, taskDefinition=new_arn)
    # The trap: service-level taskDefinition and counts look done, so botocore's waiter passes...
    ecs.get_waiter("services_stable").wait(cluster=settings.cluster, services=[settings.service], WaiterConfig={"Delay": 0, "MaxAttempts": 1})
    # ...but the PRIMARY deployment still runs revision 1 (moto never rolls it), so wait_stable must not.
    clock = FakeClock(0.0)
    with pytest.raises(DeployError) as caught:
        wait_stable(ecs, settings, new_arn, timeout_s=10, interval_s=5, clock=clock, sleep=clock.sleep)
    assert "PRIMARY deployment runs " + settings.service + ":1 with 2/2 tasks running, rollout COMPLETED" in str(caught.value)


def test_an_image_given_by_tag_is_refused_before_any_api_call():
    with pytest.raises(DeployError) as caught:
        deploy(NoCalls(), EcsSettings("c", "s", "web"), f"{REPO}:abc123")
    assert str(caught.value) == (
        f"images are deployed by digest ({REPO}:abc123): pass ImageRef.pinned (repository@sha256:<64 hex digits>), not a tag"
    )


def test_an_unknown_container_name_is_one_line_error_listing_the_names(ecs, service):
    settings, _ = service
    wrong = EcsSettings(settings.cluster, settings.service, container_name="api")
    with pytest.raises(DeployError) as caught:
        deploy(ecs, wrong, f"{REPO}@{DIGEST_A}", wait=service_set_to)
    assert str(caught.value) == (
        f"container 'api' is not in task definition {settings.service}:1 ({settings.cluster}/{settings.service}): "
        "set container_name to one of: web, log-router"
    )


def test_a_missing_service_or_cluster_is_one_line_error_with_the_fix(ecs, service):
    settings, _ = service
    with pytest.raises(DeployError) as caught:
        deploy(ecs, EcsSettings(settings.cluster, "no-such-service", "web"), f"{REPO}@{DIGEST_A}")
    assert str(caught.value) == (
        f"ECS service 'no-such-service' not found ({settings.cluster}/no-such-service): "
        "create the service first (Slipway deploys to an existing service) or fix service in the ECS settings"
    )
    with pytest.raises(DeployError) as caught:
        deploy(ecs, EcsSettings("no-such-cluster-x1", settings.service, "web"), f"{REPO}@{DIGEST_A}")
    assert str(caught.value) == (
        f"ECS cluster 'no-such-cluster-x1' not found (no-such-cluster-x1/{settings.service}): "
        "fix cluster in the ECS settings (aws ecs list-clusters) or create the cluster first"
    )


# ---- the stability rule against fakes shaped like AWS's describe_services replies ---------------------------
OLD, NEW = "arn:aws:ecs:us-east-1:1:task-definition/web:1", "arn:aws:ecs:us-east-1:1:task-definition/web:2"


def deployment(status, td, running, desired=2, rollout="IN_PROGRESS", reason=None):
    d = {"status": status, "taskDefinition": td, "runningCount": running, "desiredCount": desired, "rolloutState": rollout}
    return d | ({"rolloutStateReason": reason} if reason else {})


class FakeEcs:
    """Replays describe_services replies, repeating the last one; only what wait_stable reads."""

    def __init__(self, *deployment_lists):
        self.replies = list(deployment_lists)
        self.calls = 0

    def update_service(self, cluster, service, taskDefinition):
        self.updated_to = taskDefinition

    def describe_services(self, cluster, services):
        deployments = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return {"services": [{"status": "ACTIVE", "taskDefinition": NEW, "runningCount": 2, "desiredCount": 2, "deployments": deployments}], "failures": []}



class NoCalls:
    def __getattr__(self, name):
        raise AssertionError(f"unexpected ECS call {name}")


SETTINGS = EcsSettings("prod", "web", "web")


def test_wait_stable_times_out_via_the_injected_clock_when_the_service_never_stabilises():
    ecs, clock = FakeEcs([deployment("PRIMARY", NEW, 1), deployment("ACTIVE", OLD, 1)]), FakeClock(0.0)
    with pytest.raises(DeployError) as caught:
        wait_stable(ecs, SETTINGS, NEW, timeout_s=12, interval_s=5, clock=clock, sleep=clock.sleep)
    assert str(caught.value) == (
        "ECS service 'web' was not stable on web:2 within 12s (prod/web): PRIMARY deployment runs web:2 with 1/2 tasks "
        "running, rollout IN_PROGRESS; check the service events (aws ecs describe-services) or raise the timeout"
    )
    assert (clock.slept, ecs.calls) == ([5, 5, 2], 4)


def test_wait_stable_waits_for_the_new_primary_through_an_aws_shaped_rollout():
    ecs, clock = FakeEcs(
        [deployment("PRIMARY", NEW, 0), deployment("ACTIVE", OLD, 2, rollout="COMPLETED")],
        [deployment("PRIMARY", NEW, 2), deployment("ACTIVE", OLD, 1, rollout="COMPLETED")],  # counts match, rollout not done
        [deployment("PRIMARY", NEW, 2, rollout="COMPLETED")],
    ), FakeClock(0.0)
    wait_stable(ecs, SETTINGS, NEW, timeout_s=60, interval_s=5, clock=clock, sleep=clock.sleep)
    assert (clock.slept, ecs.calls) == ([5, 5], 3)


def test_a_roll_back_that_never_stabilises_is_a_rollback_error():
    ecs, clock = FakeEcs([deployment("PRIMARY", OLD, 1), deployment("ACTIVE", NEW, 2)]), FakeClock(0.0)
    with pytest.raises(RollbackError) as caught:
        roll_back(ecs, SETTINGS, OLD, timeout_s=5, clock=clock, sleep=clock.sleep)
    assert (ecs.updated_to, caught.value.ref) == (OLD, "ecs-not-stable")
    assert str(caught.value).startswith("ECS service 'web' was not stable on web:1 within 5s (prod/web): PRIMARY deployment runs web:1 with 1/2")


def test_wait_stable_fails_at_once_when_the_rollout_fails():
    ecs, clock = FakeEcs([deployment("PRIMARY", NEW, 0, rollout="FAILED", reason="tasks failed to start")]), FakeClock(0.0)
    with pytest.raises(DeployError) as caught:
        wait_stable(ecs, SETTINGS, NEW, clock=clock, sleep=clock.sleep)
    assert str(caught.value) == (
        "ECS rollout of web:2 failed: tasks failed to start (prod/web): "
        "read the stopped tasks' reasons (aws ecs describe-tasks) and the service events"
    )
    assert clock.slept == []


def test_a_revision_is_proven_to_run_the_release_image_before_traffic_moves_back_to_it(ecs, service):
    """identity_mismatch: the ledger names a task-definition ARN and an image digest; a revision running another image
    (registered outside Slipway under a reused family, or recorded wrongly) is named, and the right one passes."""
    from types import SimpleNamespace

    from slipway.targets.ecs import EcsTarget

    settings, _ = service
    first = deploy(ecs, settings, f"{REPO}@{DIGEST_A}", wait=service_set_to)
    target = EcsTarget(ecs, settings, endpoint=None)

    assert target.identity_mismatch(first.task_definition_arn, SimpleNamespace(image=f"{REPO}@{DIGEST_A}")) is None
    problem = target.identity_mismatch(first.task_definition_arn, SimpleNamespace(image=f"{REPO}@{DIGEST_B}"))
    assert problem == f"task definition {first.task_definition_arn} runs {REPO}@{DIGEST_A}, not the release's {REPO}@{DIGEST_B}"

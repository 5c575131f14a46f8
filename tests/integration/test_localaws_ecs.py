"""The local AWS rolls ECS deployments on UpdateService (moto alone keeps the old PRIMARY)."""

import uuid

from slipway.targets.ecs import EcsSettings, wait_stable


def test_update_service_leaves_one_completed_primary_deployment_on_the_new_revision(aws_endpoint, boto_session):
    ecs = boto_session.client("ecs", endpoint_url=aws_endpoint)
    name = f"svc-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=name)
    first = ecs.register_task_definition(family=name, containerDefinitions=[{"name": "app", "image": "a", "memory": 64}])
    second = ecs.register_task_definition(family=name, containerDefinitions=[{"name": "app", "image": "b", "memory": 64}])
    ecs.create_service(cluster=name, serviceName=name, taskDefinition=first["taskDefinition"]["taskDefinitionArn"], desiredCount=2)
    new_arn = second["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=name, service=name, taskDefinition=new_arn)
    service = ecs.describe_services(cluster=name, services=[name])["services"][0]
    assert [(d["status"], d["taskDefinition"], d["runningCount"], d["rolloutState"]) for d in service["deployments"]] == [
        ("PRIMARY", new_arn, 2, "COMPLETED")
    ]
    wait_stable(ecs, EcsSettings(cluster=name, service=name, container_name="app"), new_arn, timeout_s=1, sleep=lambda s: None)

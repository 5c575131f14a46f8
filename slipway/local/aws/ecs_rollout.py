"""What moto's ECS lacks for Slipway's local stack: deployments that roll.

moto changes a service's ``taskDefinition`` on UpdateService but never rolls its deployments: the PRIMARY
deployment keeps the revision the service was created with (see shared facts), so a stability check that
waits for the PRIMARY deployment to run the new revision — the only correct check on AWS — never passes.
This WSGI layer lets moto handle UpdateService, then records what AWS reports once a rolling update has
finished: one PRIMARY deployment on the new revision, running == desired, rolloutState COMPLETED.

Honest differences from AWS: the rollout completes at once; no task is started, replaced or health-checked;
there is no IN_PROGRESS phase, circuit breaker or FAILED rollout. Tests of the waiting logic itself use
fakes shaped like AWS replies (tests/integration/test_ecs_target.py).
"""

from __future__ import annotations

import io
import json
import logging
from moto.core.utils import utcnow
from typing import Callable, Iterable

from moto.ecs.models import ecs_backends

from slipway.local.aws.lambda_invoke import request_account_and_region

log = logging.getLogger(__name__)
UPDATE_SERVICE = "AmazonEC2ContainerServiceV20141113.UpdateService"


class EcsRolloutMiddleware:
    def __init__(self, app: Callable) -> None:
        self._app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") != UPDATE_SERVICE:
            return self._app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        captured: dict = {}

        def capture(status: str, headers: list, exc_info=None):
            captured["status"] = status
            return start_response(status, headers, exc_info)

        result = list(self._app(environ, capture))
        if captured.get("status", "").startswith("200"):
            try:
                self._complete_rollout(environ, json.loads(body or b"{}"))
            except Exception:  # a failure here must not turn moto's answer into an error
                log.exception("could not roll the ECS deployment")
        return result

    def _complete_rollout(self, environ: dict, request: dict) -> None:
        account, region = request_account_and_region(environ)
        backend = ecs_backends[account][region]
        cluster = request.get("cluster", "default").split("/")[-1]
        service = backend._get_service(cluster, request["service"].split("/")[-1])
        if service.deployment_controller.get("type", "ECS") != "ECS":
            return
        now = utcnow()
        previous = service.deployments[0] if service.deployments else {}
        service.running_count, service.pending_count = service.desired_count, 0
        service.deployments = [{
            **previous,
            "id": f"ecs-svc/{abs(hash((service.task_definition, now.timestamp()))) % 10**12:012d}",
            "status": "PRIMARY",
            "taskDefinition": service.task_definition,
            "desiredCount": service.desired_count,
            "runningCount": service.desired_count,
            "pendingCount": 0,
            "failedTasks": 0,
            "rolloutState": "COMPLETED",
            "rolloutStateReason": "ECS deployment completed (slipway local AWS: rolled at once)",
            "createdAt": now,
            "updatedAt": now,
        }]

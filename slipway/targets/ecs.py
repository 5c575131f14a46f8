"""Amazon ECS as a deploy target: register a task definition revision pinned to an image digest, point an
existing service at it, and wait until the service's PRIMARY deployment runs it.

``EcsTarget`` puts this behind the rollout ``Target`` protocol: a *version* is a task-definition ARN pinned to the
image digest; ``point`` updates the service and waits until its PRIMARY deployment runs that revision. No canary:
splitting an ECS service's traffic needs a load balancer with two target groups (CodeDeploy blue/green), which
Slipway does not manage.

Registering a revision touches nothing live; only ``update_service`` changes what runs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from botocore.exceptions import BotoCoreError, ClientError

from slipway.core.aws import error_code, translate
from slipway.core.errors import DeployError, RollbackError, SlipwayError
from slipway.core.models import ArtifactRef, CheckResult, DeployResult, VerifyResult
from slipway.verify.canary import SideSample
from slipway.verify.http_checks import health_check, run_http_checks
from slipway.verify.traffic import TrafficResult

PINNED_IMAGE_RE = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class EcsSettings:
    cluster: str
    service: str
    container_name: str
    family: str | None = None  # default: the family of the service's current task definition


@dataclass(frozen=True)
class EcsDeployResult:
    task_definition_arn: str
    revision: int
    previous_task_definition_arn: str | None
    image: str


def _target(settings: EcsSettings) -> str:
    return f"{settings.cluster}/{settings.service}"


def _call(error_cls: type[SlipwayError], action: str, settings: EcsSettings, fn: Callable, **kwargs):
    """Call the ECS API; a missing cluster or service becomes a one-line error with the fix."""
    target = _target(settings)
    try:
        return fn(**kwargs)
    except ClientError as exc:
        code = error_code(exc)
        if code == "ClusterNotFoundException":
            raise error_cls(
                f"ECS cluster {settings.cluster!r} not found",
                target=target,
                hint="fix cluster in the ECS settings (aws ecs list-clusters) or create the cluster first",
                ref="ecs-cluster-not-found",
            ) from exc
        if code in ("ServiceNotFoundException", "ServiceNotActiveException"):
            raise _service_missing(error_cls, settings, code) from exc
        raise translate(exc, error_cls, action, target=target) from exc
    except BotoCoreError as exc:
        raise translate(exc, error_cls, action, target=target) from exc


def _service_missing(error_cls: type[SlipwayError], settings: EcsSettings, why: str) -> SlipwayError:
    missing = why in ("MISSING", "ServiceNotFoundException")
    return error_cls(
        f"ECS service {settings.service!r} not found" if missing else f"ECS service {settings.service!r} is not active ({why})",
        target=_target(settings),
        hint="create the service first (Slipway deploys to an existing service) or fix service in the ECS settings",
        ref="ecs-service-not-found",
    )


def _describe_service(ecs, settings: EcsSettings, error_cls: type[SlipwayError] = DeployError) -> dict:
    reply = _call(
        error_cls, "describe the ECS service", settings, ecs.describe_services, cluster=settings.cluster, services=[settings.service]
    )
    services = reply.get("services") or []
    if not services:
        # ECS reports an unknown service as a failure entry (reason MISSING), not as an error.
        reasons = ",".join(f.get("reason", "?") for f in reply.get("failures") or []) or "MISSING"
        raise _service_missing(error_cls, settings, reasons)
    service = services[0]
    if service.get("status", "ACTIVE") != "ACTIVE":
        raise _service_missing(error_cls, settings, service["status"])
    return service


def current_task_definition(ecs, settings: EcsSettings) -> str:
    """The task definition ARN the service is set to run."""
    return _describe_service(ecs, settings)["taskDefinition"]


def check_pinned(image: str) -> str:
    if not PINNED_IMAGE_RE.fullmatch(image):
        raise DeployError(
            "images are deployed by digest",
            target=image,
            hint="pass ImageRef.pinned (repository@sha256:<64 hex digits>), not a tag",
            ref="image-not-pinned",
        )
    return image


def _check_mapping(name: str, values: dict[str, str] | None) -> dict[str, str]:
    values = dict(values or {})
    for key, value in values.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise DeployError(
                f"{name} must map non-empty names to strings", target=repr(key), hint=f"fix the {name} given to the ECS deploy", ref="invalid-input"
            )
    return values


def _new_task_definition(ecs, settings: EcsSettings, source: dict, tags: list, image: str, environment: dict, labels: dict) -> dict:
    """The register_task_definition arguments: the source revision with the named container changed.

    Every field RegisterTaskDefinition accepts is copied (taken from botocore's model so new ones are not lost);
    read-only fields (taskDefinitionArn, revision, status, requiresAttributes, compatibilities, registeredAt/By,
    ...) are not inputs and drop out."""
    accepted = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
    params = {key: value for key, value in source.items() if key in accepted and value is not None}
    names = [c["name"] for c in source["containerDefinitions"]]
    if settings.container_name not in names:
        raise DeployError(
            f"container {settings.container_name!r} is not in task definition {source['family']}:{source['revision']}",
            target=_target(settings),
            hint=f"set container_name to one of: {', '.join(names)}",
            ref="ecs-container-not-found",
        )
    containers = []
    for container in source["containerDefinitions"]:
        container = dict(container)
        if container["name"] == settings.container_name:
            container["image"] = image
            merged = {e["name"]: e["value"] for e in container.get("environment") or []} | environment
            container["environment"] = [{"name": k, "value": merged[k]} for k in sorted(merged)]
            if labels:
                container["dockerLabels"] = {**(container.get("dockerLabels") or {}), **labels}
        containers.append(container)
    params["containerDefinitions"] = containers
    params["family"] = settings.family or source["family"]
    if tags:
        params["tags"] = tags
    return params


def _register_from(ecs, settings: EcsSettings, source_arn: str, image: str, environment: dict, labels: dict) -> tuple[str, int]:
    described = _call(
        DeployError, "read the task definition", settings, ecs.describe_task_definition, taskDefinition=source_arn, include=["TAGS"]
    )
    params = _new_task_definition(ecs, settings, described["taskDefinition"], described.get("tags") or [], image, environment, labels)
    registered = _call(DeployError, "register the task definition", settings, ecs.register_task_definition, **params)["taskDefinition"]
    return registered["taskDefinitionArn"], int(registered["revision"])


def register_revision(
    ecs, settings: EcsSettings, image: str, *, environment: dict[str, str] | None = None, labels: dict[str, str] | None = None
) -> tuple[str, int]:
    """Register a copy of the service's current task definition running ``image``; returns (ARN, revision).

    ``environment`` is merged into the container's environment; ``labels`` into its dockerLabels."""
    image, environment, labels = check_pinned(image), _check_mapping("environment", environment), _check_mapping("labels", labels)
    return _register_from(ecs, settings, current_task_definition(ecs, settings), image, environment, labels)


def update_service(ecs, settings: EcsSettings, task_definition_arn: str, *, error_cls: type[SlipwayError] = DeployError) -> None:
    _call(
        error_cls, "update the ECS service", settings, ecs.update_service,
        cluster=settings.cluster, service=settings.service, taskDefinition=task_definition_arn,
    )


def _primary(service: dict) -> dict:
    return next((d for d in service.get("deployments") or [] if d.get("status") == "PRIMARY"), {})


def is_stable(service: dict, task_definition_arn: str) -> bool:
    """Stable: the PRIMARY deployment runs ``task_definition_arn`` with every desired task running and (when
    ECS reports one) a COMPLETED rollout. The service-level counts alone are not enough: they also count the
    old deployment's tasks, which is how botocore's services_stable waiter can pass on the old revision."""
    primary = _primary(service)
    return (
        primary.get("taskDefinition") == task_definition_arn
        and primary.get("runningCount") == primary.get("desiredCount")
        and primary.get("rolloutState", "COMPLETED") == "COMPLETED"
    )


def _progress(service: dict) -> str:
    primary = _primary(service)
    running, desired = primary.get("runningCount", service.get("runningCount")), primary.get("desiredCount", service.get("desiredCount"))
    revision = (primary.get("taskDefinition") or "none").rsplit("/", 1)[-1]
    return f"PRIMARY deployment runs {revision} with {running}/{desired} tasks running, rollout {primary.get('rolloutState', 'n/a')}"


def wait_stable(
    ecs,
    settings: EcsSettings,
    task_definition_arn: str,
    *,
    timeout_s: float = 600,
    interval_s: float = 5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    error_cls: type[SlipwayError] = DeployError,
) -> None:
    """Poll describe_services until :func:`is_stable`; a FAILED rollout (circuit breaker) fails at once."""
    deadline = clock() + timeout_s
    while True:
        service = _describe_service(ecs, settings, error_cls)
        if is_stable(service, task_definition_arn):
            return
        primary = _primary(service)
        if primary.get("taskDefinition") == task_definition_arn and primary.get("rolloutState") == "FAILED":
            raise error_cls(
                f"ECS rollout of {task_definition_arn.rsplit('/', 1)[-1]} failed: {primary.get('rolloutStateReason', 'no reason given')}",
                target=_target(settings),
                hint="read the stopped tasks' reasons (aws ecs describe-tasks) and the service events",
                ref="ecs-rollout-failed",
            )
        remaining = deadline - clock()
        if remaining <= 0:
            raise error_cls(
                f"ECS service {settings.service!r} was not stable on {task_definition_arn.rsplit('/', 1)[-1]} within {timeout_s:g}s",
                target=_target(settings),
                hint=f"{_progress(service)}; check the service events (aws ecs describe-services) or raise the timeout",
                ref="ecs-not-stable",
                evidence={"deployments": service.get("deployments") or []},
            )
        sleep(min(interval_s, remaining))


def deploy(
    ecs,
    settings: EcsSettings,
    image: str,
    *,
    environment: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    wait: Callable[..., None] = wait_stable,
    **wait_kw,
) -> EcsDeployResult:
    """Register a revision running ``image`` (by digest), point the service at it and wait until it is stable.

    ``wait`` is called as ``wait(ecs, settings, arn, **wait_kw)``; the default is :func:`wait_stable`."""
    image, environment, labels = check_pinned(image), _check_mapping("environment", environment), _check_mapping("labels", labels)
    previous = current_task_definition(ecs, settings)
    arn, revision = _register_from(ecs, settings, previous, image, environment, labels)
    update_service(ecs, settings, arn)
    wait(ecs, settings, arn, **wait_kw)
    return EcsDeployResult(task_definition_arn=arn, revision=revision, previous_task_definition_arn=previous, image=image)


def roll_back(ecs, settings: EcsSettings, previous_task_definition_arn: str, *, wait: Callable[..., None] = wait_stable, **wait_kw) -> None:
    """Point the service back at ``previous_task_definition_arn`` and wait until it is stable again."""
    try:
        update_service(ecs, settings, previous_task_definition_arn, error_cls=RollbackError)
        wait(ecs, settings, previous_task_definition_arn, **wait_kw)
    except DeployError as exc:  # a caller-supplied wait raises DeployError; a rollback reports RollbackError
        raise RollbackError(exc.message, target=exc.target, hint=exc.hint, ref=exc.ref, evidence=exc.evidence) from exc


class EcsTarget:
    type = "ecs"

    def __init__(
        self, ecs, settings: EcsSettings, *, endpoint: str | None, health_path: str = "/health",
        wait_timeout: float = 600, environment: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ecs = ecs
        self.settings = settings
        self.endpoint = endpoint
        self.health_path = health_path
        self.wait_timeout = wait_timeout
        self.environment = dict(environment or {})
        self.labels = dict(labels or {})
        self.clock, self.sleep = clock, sleep

    @property
    def name(self) -> str:
        return f"ecs {self.settings.cluster}/{self.settings.service}"

    def location(self) -> dict:
        return {"cluster": self.settings.cluster, "service": self.settings.service, "container": self.settings.container_name,
                "endpoint": self.endpoint}

    def default_check(self) -> dict:
        return health_check(self.health_path)

    def _wait(self, arn: str, error_cls=DeployError) -> None:
        wait_stable(self.ecs, self.settings, arn, timeout_s=self.wait_timeout, clock=self.clock, sleep=self.sleep,
                               error_cls=error_cls)

    def prepare(self, artifact: ArtifactRef) -> DeployResult:
        if artifact.image is None:
            raise DeployError("an ecs environment needs a docker-image artifact", ref="wrong-artifact-type")
        previous = self.serving()
        arn, revision = register_revision(
            self.ecs, self.settings, artifact.image.pinned, environment=self.environment, labels=self.labels,
        )
        return DeployResult(
            environment="", function=self.settings.service, alias=self.settings.cluster, version=arn,
            previous_version=previous, code_sha256=artifact.image.digest, new_version=arn != previous,
        )

    def serving(self) -> str | None:
        return current_task_definition(self.ecs, self.settings)

    def point(self, version: str, release=None, *, error_cls=DeployError) -> None:
        update_service(self.ecs, self.settings, version, error_cls=error_cls)
        self._wait(version, error_cls)

    def identity_mismatch(self, version: str, release) -> str | None:
        """None when task definition ``version`` runs the release's image (by digest); else what differs. A revision
        registered (or changed) outside Slipway under the ARN the ledger names is caught before traffic moves to it."""
        image = getattr(release, "image", None)
        if not image:
            return None
        described = _call(DeployError, "read the task definition", self.settings, self.ecs.describe_task_definition,
                          taskDefinition=version)["taskDefinition"]
        found = next((c.get("image") for c in described.get("containerDefinitions", []) if c.get("name") == self.settings.container_name), None)
        if found != image:
            return f"task definition {version} runs {found or 'no such container'}, not the release's {image}"
        return None

    def remove(self) -> None:
        """ECS services are created outside Slipway, which never scales one down: with nothing verified (and no
        earlier revision) to go back to, the environment needs a person."""
        raise RollbackError(
            f"nothing verified to return {self.name} to", target=self.name,
            hint="deploy a fixed release, or point the service at a known-good revision", ref="nothing-to-roll-back-to",
        )

    def verify(self, checks: list[dict], expected_version: str) -> VerifyResult:
        serving = self.serving()
        if serving != expected_version:
            return VerifyResult(function=self.name, qualifier="", passed=False, checks=[CheckResult(
                name="revision", passed=False, detail=f"service runs {serving}, expected {expected_version}")])
        if not self.endpoint:
            # Said in the check, never silent: without an endpoint only stability was verified.
            return VerifyResult(function=self.name, qualifier="", passed=True, checks=[CheckResult(
                name="stable", passed=True, detail="service stable on the revision; no endpoint_template, so no smoke checks ran")])
        return run_http_checks(self.endpoint, checks or [self.default_check()])

    def settle(self, live_version: str) -> None:
        """Old revisions stay registered (a rollback needs them)."""

    def discard(self, version: str) -> None:
        """A failed revision stays registered (it is the evidence); the service no longer uses it."""

    # ---- canary: refused --------------------------------------------------------------------------------
    def _no_canary(self, error_cls=DeployError) -> DeployError:
        return error_cls(
            "canary/linear is not supported on the ECS target: an ECS canary needs a load balancer with two target "
            "groups (CodeDeploy blue/green)", target=self.name, hint="use strategy all-at-once for ecs environments",
            ref="strategy-unsupported",
        )

    def shift(self, stable_version: str, canary_version: str, canary_percent: int, *, error_cls=DeployError) -> None:
        raise self._no_canary(error_cls)

    def canary_sample(self, stable_version: str, canary_version: str, start: datetime, end: datetime) -> tuple[SideSample, SideSample]:
        raise self._no_canary()

    def drive(self, items: list[dict], rate_per_s: float, duration_s: float, *, max_requests: int = 10_000,
              clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> TrafficResult:
        raise self._no_canary()

"""The composition root of a run: blocks → clients → targets → stores, resolved once and handed to the steps.

Everything a task needs about an environment arrives as an ``EnvRef`` (typed, frozen); ``env_context(ref)`` turns it
into the ``EnvContext`` the rollout steps use (the ledger and the target, with their AWS or Docker clients). Both the
blocks and the resolved contexts are kept per flow run (``tasks.resolution``): a release's tasks and its environments'
subflows share one resolution, and the next run resolves again, so a changed block is always picked up by the next
release. Nothing else in ``tasks/`` loads a block or builds a client.

Retries happen only for transient errors (throttling, 5xx, connection errors): ``TRANSIENT_RETRIES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from prefect.cache_policies import NO_CACHE
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

import blocks
from blocks import ArtifactStoreBlock, LambdaTargetBlock, aws_clients
from slipway.artifact.store import ArtifactStore
from slipway.core.aws import is_transient
from slipway.core.errors import CredentialsError, DeployError
from slipway.record.ledger import Ledger
from slipway.rollout.staged import EnvContext, EnvRef
from slipway.spec.schema import SecretRef, Spec
from tasks.resolution import CONTEXTS, STORES, load_block
from tasks.secrets import resolved_environment, store_signer

if TYPE_CHECKING:
    from slipway.artifact.registry import RegistryAuth
from slipway.targets.aws_lambda import LambdaSettings, LambdaTarget, check_function_name
from slipway.targets.ecs import EcsSettings, EcsTarget


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry only when the failure may go away by itself."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


TRANSIENT_RETRIES = dict(retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)


def store_block(name: str) -> ArtifactStoreBlock:
    return load_block(
        ArtifactStoreBlock, name, missing=f"no slipway-artifact-store block named {name!r} on this Prefect server",
        hint="run `slipway local up` (local stack) or create the block (docs/blocks.md)", ref="store-block-missing",
    )


def open_store(name: str) -> tuple[ArtifactStore, Ledger]:
    """The artifact store and the ledger of the store block ``name`` (one S3 client per run)."""
    def make() -> tuple[ArtifactStore, Ledger]:
        block = store_block(name)
        (s3,) = aws_clients(block.credentials, "s3")
        signer = store_signer(block.signing_key_block, load_block)
        return (ArtifactStore(s3, block.bucket, block.prefix, block.kms_key_id, signer=signer),
                Ledger(s3, block.bucket, block.prefix, kms_key_id=block.kms_key_id, signer=signer))

    return STORES.get(("store", name), make)


def store_client(name: str, service: str):
    """Another AWS client in the artifact store's account and region (SSM for flags, CloudWatch for alarms)."""
    return STORES.get(("client", name, service), lambda: aws_clients(store_block(name).credentials, service)[0])


def resolve_target_block(env_name: str, explicit: str | None, block_cls: type = LambdaTargetBlock) -> tuple[str, Any]:
    """The spec's ``target``, else a block named after the environment, else ``default``."""
    names = [explicit] if explicit else [env_name, "default"]
    for name in names:
        try:
            return name, load_block(block_cls, name)
        except (ValueError, ObjectNotFound):
            continue
    raise CredentialsError(
        f"no {block_cls.get_block_type_slug()} block for environment {env_name!r} (looked for {', '.join(names)})",
        hint="create one (see docs/blocks.md) or run `slipway local up` for the local stack", ref="target-block-missing",
    )


# ---- targets -----------------------------------------------------------------------------------------------
def docker_client(engine_url: str | None = None):
    """The engine the user has: the block's URL, else DOCKER_HOST or the local socket."""
    import docker

    try:
        client = docker.DockerClient(base_url=engine_url) if engine_url else docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - docker raises several unrelated types for "no engine"
        raise DeployError(
            f"no Docker engine reachable at {engine_url or 'DOCKER_HOST / the local socket'}",
            hint="start the engine or set engine_url in the docker-host block (or DOCKER_HOST)", ref="docker-unreachable",
        ) from exc


def _container_env(spec: Spec | None, env_name: str, location: dict, extra_env: dict | None = None) -> dict[str, Any]:
    """The spec's environment values as recorded: strings, and secret references as ``{"secret": ...}`` (unread)."""
    if spec is None:
        return dict(location.get("environment") or {})  # a rollback without the spec: what was recorded
    merged = {**spec.artifact.environment, **spec.environment(env_name).environment, **(extra_env or {})}
    return {k: (v.model_dump() if isinstance(v, SecretRef) else v) for k, v in merged.items()}


def _lambda_target(ref: EnvRef, block, read_timeout: float, extra_env: dict):
    lam, cw = aws_clients(block.credentials, "lambda", "cloudwatch", region=block.region, read_timeout=read_timeout)
    art = ref.spec.artifact if ref.spec is not None else None
    env = ref.spec.environment(ref.environment) if ref.spec is not None else None
    settings = LambdaSettings(
        function_name=ref.location["function"], alias=ref.location.get("alias") or "live", role_arn=block.role_arn,
        handler=art.handler if art else "", runtime=art.runtime if art else "",
        timeout=art.timeout if art else 30, memory=art.memory if art else 256,
        environment=resolved_environment({**_container_env(ref.spec, ref.environment, {}), **extra_env}, ref.environment,
                                         credentials=block.credentials, region=block.region, store_block=ref.store_block) if art else {},
    )
    return LambdaTarget(lam, settings, cw=cw, metrics_period_s=block.metrics_period_s, metrics_delay_s=block.metrics_delay_s)


def _lambda_location(spec: Spec, env_name: str, block) -> dict:
    env = spec.environment(env_name)
    name = env.function_name or block.function_name_template.format(app=spec.app, env=env_name)
    return {"function": check_function_name(name), "alias": env.alias}


def _docker_host_target(ref: EnvRef, block, read_timeout: float, extra_env: dict):
    from slipway.targets.docker_host import DockerHostTarget, proxy_for  # the docker SDK only where a Docker target is used

    loc = ref.location
    return DockerHostTarget(
        docker_client(block.engine_url), proxy_for(block.proxy_root, block.nginx_binary), app=ref.app, env=ref.environment,
        listen_port=int(loc["listen_port"]), container_ports=blocks.parse_port_range(block.container_ports),
        health_path=loc.get("health_path") or "/health", health_timeout=block.health_timeout,
        port_env=loc.get("port_env") or "PORT", recorded_environment=_container_env(ref.spec, ref.environment, loc, extra_env),
        environment=resolved_environment(_container_env(ref.spec, ref.environment, loc, extra_env), ref.environment,
                                         store_block=ref.store_block),
    )


def _docker_host_location(spec: Spec, env_name: str, block) -> dict:
    from slipway.targets.docker_host import allocate_listen_port, proxy_for, route_name

    proxy = proxy_for(block.proxy_root, block.nginx_binary)
    port = allocate_listen_port(proxy, route_name(spec.app, env_name), blocks.parse_port_range(block.stable_ports))
    return {
        "endpoint": f"http://127.0.0.1:{port}", "listen_port": port, "health_path": spec.artifact.health_path,
        "port_env": spec.artifact.port_env, "environment": _container_env(spec, env_name, {}),
    }


def _ecs_target(ref: EnvRef, block, read_timeout: float, extra_env: dict):
    (ecs,) = aws_clients(block.credentials, "ecs", region=block.region, read_timeout=read_timeout)
    loc = ref.location
    settings = EcsSettings(cluster=loc["cluster"], service=loc["service"], container_name=loc["container"])
    return EcsTarget(
        ecs, settings, endpoint=loc.get("endpoint"), health_path=loc.get("health_path") or "/health",
        wait_timeout=block.wait_timeout,
        environment=resolved_environment(_container_env(ref.spec, ref.environment, loc, extra_env), ref.environment,
                                         credentials=block.credentials, region=block.region, store_block=ref.store_block),
    )


def _ecs_location(spec: Spec, env_name: str, block) -> dict:
    fmt = dict(app=spec.app, env=env_name)
    return {
        "cluster": block.cluster, "service": block.service_template.format(**fmt), "container": block.container_name,
        "endpoint": block.endpoint_template.format(**fmt) if block.endpoint_template else None,
        "health_path": spec.artifact.health_path, "environment": _container_env(spec, env_name, {}),
    }


# target type → (block class, target factory, location from the spec). An unknown type is an error.
TARGETS: dict[str, tuple[str, Callable, Callable]] = {  # the block class by name: imported when a release uses it
    "lambda": ("LambdaTargetBlock", _lambda_target, _lambda_location),
    "docker-host": ("DockerHostBlock", _docker_host_target, _docker_host_location),
    "ecs": ("EcsTargetBlock", _ecs_target, _ecs_location),
}


def target_kind(target_type: str) -> tuple[type, Callable, Callable]:
    if target_type not in TARGETS:
        raise DeployError(f"unknown target type {target_type!r}", hint=f"use one of {', '.join(TARGETS)}", ref="unknown-target-type")
    block_cls, factory, locate = TARGETS[target_type]
    return getattr(blocks, block_cls), factory, locate


def location_for(spec: Spec, env_name: str) -> dict:
    """Where an environment is served, from the spec and its target block (checked before any build)."""
    env = spec.environment(env_name)
    block_cls, _, locate = target_kind(spec.target_type(env))
    _, block = resolve_target_block(env_name, env.target, block_cls)
    return locate(spec, env_name, block)


def env_ref(spec: Spec, env_name: str, store: str) -> EnvRef:
    """The reference a release's stage uses for one of the spec's environments."""
    env = spec.environment(env_name)
    return EnvRef(app=spec.app, environment=env_name, store_block=store, target_type=spec.target_type(env),
                  location=location_for(spec, env_name), target_block=env.target, spec=spec,
                  checks=tuple(c.model_dump(mode="json", exclude_none=True) for c in spec.verify.smoke))


def flag_env_vars(flags: dict | None) -> dict[str, str]:
    from slipway.record.flags import FlagValue, flag_env_vars as env_vars

    return env_vars({n: FlagValue(name=n, value=d["value"], version=d["version"]) for n, d in (flags or {}).items()})


def env_context(ref: EnvRef, read_timeout: float = 60) -> EnvContext:
    """The ledger and the target of ``ref``, resolved once per run."""
    def make() -> EnvContext:
        store, ledger = open_store(ref.store_block)
        block_cls, factory, _ = target_kind(ref.target_type)
        block_name, block = resolve_target_block(ref.environment, ref.target_block, block_cls)
        target = factory(ref, block, read_timeout, flag_env_vars(ref.flags))
        return EnvContext(ledger=ledger, app=ref.app, environment=ref.environment, target=target, checks=list(ref.checks),
                          run_id=str(flow_run.get_id() or "") or None, target_block=block_name, flags=ref.flags, store=store)

    ctx = CONTEXTS.get((ref.cache_key(), read_timeout), make)
    _KNOWN[(ref.app, ref.environment)] = ctx
    return ctx


_KNOWN: dict[tuple[str, str], EnvContext] = {}  # the last context of each environment this process worked on


def known_context(app: str, environment: str) -> EnvContext | None:
    """The ledger and target this process last used for APP/ENV: what a rollback can still use when the Prefect API
    (blocks, runs) is gone."""
    return _KNOWN.get((app, environment))


def alarm_client(ref: EnvRef):
    """CloudWatch for alarm gates and custom canary metrics, in the environment's account."""
    return account_client(ref, "cloudwatch")


def account_client(ref: EnvRef, service: str, read_timeout: float = 60):
    """A client in the environment's AWS account: the target block's (Lambda, ECS), else the artifact store's."""
    block_cls, _, _ = target_kind(ref.target_type)
    _, block = resolve_target_block(ref.environment, ref.target_block, block_cls)
    credentials = getattr(block, "credentials", None)
    if credentials is not None:
        return STORES.get((service, ref.target_type, ref.environment, ref.target_block, read_timeout),
                          lambda: aws_clients(credentials, service, region=getattr(block, "region", None), read_timeout=read_timeout)[0])
    return store_client(ref.store_block, service) if read_timeout == 60 else aws_clients(
        store_block(ref.store_block).credentials, service, read_timeout=read_timeout)[0]


def lambda_account_clients(env_name: str, target_block: str | None) -> tuple[Any, Any, Any, Any]:
    """(the Lambda target block, STS, Lambda, IAM) of an environment, for the read-only checks before a release."""
    _, block = resolve_target_block(env_name, target_block, LambdaTargetBlock)
    sts, lam, iam = aws_clients(block.credentials, "sts", "lambda", "iam", region=block.region, read_timeout=20)
    return block, sts, lam, iam


def registry_coordinates(registry_block: str, app: str) -> tuple[str, str, RegistryAuth | None]:
    """(registry host, repository name, credentials) of ``app``'s images, from the registry block (an ECR block logs in)."""
    from slipway.artifact.registry import RegistryAuth, ecr_auth  # the docker SDK only where images are built

    block = load_block(
        blocks.RegistryBlock, registry_block, missing=f"no slipway-registry block named {registry_block!r}",
        hint="run `slipway local up` with a Docker engine running, or create the block (docs/blocks.md)", ref="registry-block-missing",
    )
    name = f"{block.namespace.strip('/')}/{app}" if block.namespace.strip("/") else app
    if block.kind == "ecr":
        (ecr,) = aws_clients(block.credentials, "ecr")
        host, auth = ecr_auth(ecr)
        return block.url or host, name, auth
    auth = RegistryAuth(username=block.username, password=block.password) if block.username else None
    return block.url, name, auth

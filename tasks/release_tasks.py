"""Thin tasks: resolve blocks, call slipway/, log, return typed results.

Retries happen only for transient errors (throttling, 5xx, connection errors): ``retry_on_transient``.
Caching: tests are cached on the build key (commit + build/test config), so re-releasing an unchanged commit
does not run them again; the artifact itself is found through the store's durable build pointer.
"""

from __future__ import annotations

import functools
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.blocks.system import Secret
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from pydantic import SecretStr

import slipway
from blocks import (
    ArtifactStoreBlock,
    DockerHostBlock,
    EcsTargetBlock,
    LambdaTargetBlock,
    RegistryBlock,
    aws_clients,
    parse_port_range,
)
from slipway.rollout import staged
from slipway.core.aws import is_transient
from slipway.artifact.lambda_zip import build_lambda_zip
from slipway.targets.docker_host import DockerHostTarget, allocate_listen_port, proxy_for, route_name
from slipway.targets.ecs import EcsTarget
from slipway.artifact.image import build_image, image_tag, oci_labels
from slipway.targets.ecs import EcsSettings
from slipway.artifact.registry import RegistryAuth, ecr_auth, push_image, remote_digest
from slipway.core.errors import CredentialsError, DeployError, RollbackError
from slipway.source.git import Checkout, clone_at_ref
from slipway.targets.aws_lambda import LambdaSettings, LambdaTarget, check_function_name
from slipway.record.ledger import EnvHead, Ledger
from slipway.core.models import ArtifactRef, DeployResult, ImageRef, Provenance, VerifyResult
from slipway.spec.schema import Spec
from slipway.spec.loading import check_spec_against_checkout, load_spec
from slipway.artifact.store import ArtifactStore
from slipway.source.testrun import run_tests


def retry_on_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry only when the failure may go away by itself."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


TRANSIENT_RETRIES = dict(retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)


# ---- block resolution (no side effects) --------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _load_block_for_run(block_cls: type, name: str, flow_run_id: str | None):
    """Blocks are loaded once per flow run (each load is an API call), and again by the next run, so a
    changed block is always picked up by the next release."""
    return block_cls.load(name)


def load_block(block_cls: type, name: str, *, missing: str | None = None, hint: str = "", ref: str = "block-missing"):
    """Load a block for this run. With ``missing``, a block that does not exist is a one-line CredentialsError."""
    try:
        return _load_block_for_run(block_cls, name, str(flow_run.get_id() or ""))
    except (ValueError, ObjectNotFound) as exc:
        if missing is None:
            raise
        raise CredentialsError(missing, hint=hint, ref=ref) from exc


def open_store(store_block: str) -> tuple[ArtifactStore, Ledger]:
    block = load_block(
        ArtifactStoreBlock, store_block, missing=f"no slipway-artifact-store block named {store_block!r} on this Prefect server",
        hint="run `slipway local up` (local stack) or create the block (docs/blocks.md)", ref="store-block-missing",
    )
    (s3,) = aws_clients(block.credentials, "s3")
    return ArtifactStore(s3, block.bucket, block.prefix, block.kms_key_id), Ledger(s3, block.bucket, block.prefix, kms_key_id=block.kms_key_id)


def resolve_target_block(env_name: str, explicit: str | None, block_cls: type = LambdaTargetBlock) -> tuple[str, object]:
    """The spec's ``target``, else a block named after the environment, else ``default``."""
    names = [explicit] if explicit else [env_name, "default"]
    for name in names:
        try:
            return name, load_block(block_cls, name)
        except (ValueError, ObjectNotFound):
            continue
    slug = block_cls.get_block_type_slug()
    raise CredentialsError(
        f"no {slug} block for environment {env_name!r} (looked for {', '.join(names)})",
        hint="create one (see docs/blocks.md) or run `slipway local up` for the local stack",
        ref="target-block-missing",
    )


def _lambda_target(app: str, env_name: str, location: dict, block, spec: Spec | None, read_timeout: float, extra_env: dict):
    lam, cw = aws_clients(block.credentials, "lambda", "cloudwatch", region=block.region, read_timeout=read_timeout)
    art = spec.artifact if spec is not None else None
    env = spec.environment(env_name) if spec is not None else None
    settings = LambdaSettings(
        function_name=location["function"], alias=location.get("alias") or "live", role_arn=block.role_arn,
        handler=art.handler if art else "", runtime=art.runtime if art else "",
        timeout=art.timeout if art else 30, memory=art.memory if art else 256,
        environment={**art.environment, **env.environment, **extra_env} if art else {},
    )
    return LambdaTarget(lam, settings, cw=cw, metrics_period_s=block.metrics_period_s, metrics_delay_s=block.metrics_delay_s)


def _lambda_location(spec: Spec, env_name: str, block) -> dict:
    env = spec.environment(env_name)
    name = env.function_name or block.function_name_template.format(app=spec.app, env=env_name)
    return {"function": check_function_name(name), "alias": env.alias}


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
            hint="start the engine or set engine_url in the docker-host block (or DOCKER_HOST)",
            ref="docker-unreachable",
        ) from exc


def _container_env(spec: Spec | None, env_name: str, location: dict, extra_env: dict | None = None) -> dict[str, str]:
    if spec is None:
        return dict(location.get("environment") or {})  # a rollback without the spec: what was recorded
    return {**spec.artifact.environment, **spec.environment(env_name).environment, **(extra_env or {})}


def _docker_host_target(app: str, env_name: str, location: dict, block, spec: Spec | None, read_timeout: float, extra_env: dict):
    return DockerHostTarget(
        docker_client(block.engine_url), proxy_for(block.proxy_root, block.nginx_binary), app=app, env=env_name,
        listen_port=int(location["listen_port"]), container_ports=parse_port_range(block.container_ports),
        health_path=location.get("health_path") or "/health", health_timeout=block.health_timeout,
        port_env=location.get("port_env") or "PORT", environment=_container_env(spec, env_name, location, extra_env),
    )


def _docker_host_location(spec: Spec, env_name: str, block) -> dict:
    proxy = proxy_for(block.proxy_root, block.nginx_binary)
    port = allocate_listen_port(proxy, route_name(spec.app, env_name), parse_port_range(block.stable_ports))
    return {
        "endpoint": f"http://127.0.0.1:{port}", "listen_port": port, "health_path": spec.artifact.health_path,
        "port_env": spec.artifact.port_env, "environment": _container_env(spec, env_name, {}),
    }


def _ecs_target(app: str, env_name: str, location: dict, block, spec: Spec | None, read_timeout: float, extra_env: dict):
    (ecs,) = aws_clients(block.credentials, "ecs", region=block.region, read_timeout=read_timeout)
    settings = EcsSettings(cluster=location["cluster"], service=location["service"], container_name=location["container"])
    return EcsTarget(
        ecs, settings, endpoint=location.get("endpoint"), health_path=location.get("health_path") or "/health",
        wait_timeout=block.wait_timeout, environment=_container_env(spec, env_name, location, extra_env),
    )


def _ecs_location(spec: Spec, env_name: str, block) -> dict:
    fmt = dict(app=spec.app, env=env_name)
    return {
        "cluster": block.cluster, "service": block.service_template.format(**fmt), "container": block.container_name,
        "endpoint": block.endpoint_template.format(**fmt) if block.endpoint_template else None,
        "health_path": spec.artifact.health_path, "environment": _container_env(spec, env_name, {}),
    }


# target type → (block class, target factory, location from the spec). An unknown type is an error.
TARGETS: dict[str, tuple[type, object, object]] = {
    "lambda": (LambdaTargetBlock, _lambda_target, _lambda_location),
    "docker-host": (DockerHostBlock, _docker_host_target, _docker_host_location),
    "ecs": (EcsTargetBlock, _ecs_target, _ecs_location),
}


def _target_kind(target_type: str) -> tuple[type, object, object]:
    if target_type not in TARGETS:
        raise DeployError(f"unknown target type {target_type!r}", hint=f"use one of {', '.join(TARGETS)}", ref="unknown-target-type")
    return TARGETS[target_type]


def env_context(
    app: str, env_name: str, store_block: str, *, target_type: str = "lambda", location: dict, target_block: str | None,
    spec: Spec | None = None, checks: list[dict] | None = None, read_timeout: float = 60, flags: dict | None = None,
) -> staged.EnvContext:
    """``flags``: the environment's feature flags read at the start of this deploy (``read_env_flags``), delivered to the
    new version as environment variables and recorded in the ledger."""
    _, ledger = open_store(store_block)
    block_cls, factory, _ = _target_kind(target_type)
    block_name, block = resolve_target_block(env_name, target_block, block_cls)
    target = factory(app, env_name, location, block, spec, read_timeout, fingerprint_env_vars(flags or {}))
    return staged.EnvContext(
        ledger=ledger, app=app, environment=env_name, target=target, checks=checks or [],
        run_id=str(flow_run.get_id() or "") or None, target_block=block_name, flags=flags,
    )


def fingerprint_env_vars(fingerprint: dict) -> dict[str, str]:
    from slipway.record.flags import FlagValue, flag_env_vars

    return flag_env_vars({n: FlagValue(name=n, value=d["value"], version=d["version"]) for n, d in fingerprint.items()})


@task(name="live-flags", **TRANSIENT_RETRIES)
def live_release_flags(store_block: str, app: str, env_name: str) -> dict | None:
    """The flags the live version was deployed with ({} when none were recorded; None when nothing is live)."""
    _, ledger = open_store(store_block)
    head = ledger.head(app, env_name)
    if head.live is None:
        return None
    for entry in ledger.history(app, env_name, limit=200):  # re-verifications record no flags: skipped
        if (entry.kind == "deploy-started" and entry.release_id == head.live.release_id and entry.version == head.live.version
                and "flags" in entry.detail):
            return entry.detail["flags"] or {}
    return {}


@task(name="read-flags", **TRANSIENT_RETRIES)
def read_env_flags(store_block: str, app: str, env_name: str) -> dict:
    """The environment's feature flags now (SSM, in the artifact store's account): {name: {version, value}}."""
    from slipway.record.flags import flags_fingerprint, read_flags

    block = load_block(ArtifactStoreBlock, store_block)
    (ssm,) = aws_clients(block.credentials, "ssm")
    fingerprint = flags_fingerprint(read_flags(ssm, app, env_name))
    if fingerprint:
        get_run_logger().info("feature flags of %s/%s: %s", app, env_name,
                              ", ".join(f"{n}={d['value']} (v{d['version']})" for n, d in fingerprint.items()))
    return fingerprint


def location_for(spec: Spec, env_name: str) -> dict:
    """Where an environment is served, from the spec and its target block (checked before any build)."""
    env = spec.environment(env_name)
    block_cls, _, locate = _target_kind(spec.target_type(env))
    _, block = resolve_target_block(env_name, env.target, block_cls)
    return locate(spec, env_name, block)


# ---- pipeline tasks ------------------------------------------------------------------------------------
@task(name="check-artifact-store", **TRANSIENT_RETRIES)
def check_artifact_store(store_block: str) -> None:
    store, _ = open_store(store_block)
    store.check_access()


@task(name="clone-repo", **TRANSIENT_RETRIES)
def clone_repo(repo_url: str, ref: str, git_token_block: str | None = None) -> Checkout:
    token = None
    if git_token_block:
        secret = load_block(
            Secret, git_token_block, missing=f"no Secret block named {git_token_block!r} for the git token",
            hint="create it (Secret(value=...).save(NAME)) or drop --git-token-block", ref="git-token-block-missing",
        )
        token = secret.get()
    checkout = clone_at_ref(repo_url, ref, token=SecretStr(token) if token else None)
    get_run_logger().info("cloned %s at %s → %s (%s)", checkout.repo_url, ref, checkout.commit, checkout.subject)
    return checkout


@task(name="load-spec", cache_policy=NO_CACHE)
def load_release_spec(checkout: Checkout, spec_path: str | None) -> Spec:
    spec = load_spec(checkout.path, spec_path)
    check_spec_against_checkout(spec, checkout.path)
    get_run_logger().info("spec ok: app %s, environments %s", spec.app, " → ".join(e.name for e in spec.environments))
    return spec


@task(name="ledger-since", **TRANSIENT_RETRIES)
def ledger_since(store_block: str, app: str, env: str, seq: int) -> list[dict]:
    """What this release recorded in ``env`` (entries after ``seq``): kind, message, verdict."""
    _, ledger = open_store(store_block)
    # the detail goes into failure records: without the target's coordinates, which hold container environment values
    return [{"kind": e.kind, "message": e.message, "verdict": e.detail.get("verdict"), "percent": e.detail.get("percent"),
             "release_id": e.release_id, "version": e.version, "at": e.at,
             "detail": {k: v for k, v in e.detail.items() if k not in ("location", "environment")}}
            for e in ledger.entries_after(app, env, seq)]


def environment_touched(entries: list[dict]) -> bool:
    """Did a deploy or a rollback start? (Decisions and verdicts alone do not change what serves.)"""
    return any(e["kind"] in ("deploy-started", "rollback-started") for e in entries)


@task(name="read-ledger-heads", **TRANSIENT_RETRIES)
def read_heads(store_block: str, app: str, environments: list[str]) -> dict[str, EnvHead]:
    _, ledger = open_store(store_block)
    return {env: ledger.head(app, env) for env in environments}


@task(name="find-published-artifact", **TRANSIENT_RETRIES)
def find_published_artifact(store_block: str, app: str, build_key: str) -> ArtifactRef | None:
    store, _ = open_store(store_block)
    found = store.find_build(app, build_key)
    if found:
        get_run_logger().info("artifact already published for this commit and build config: %s (reused, not rebuilt)", found.uri)
    return found


def _tests_cache_key(context, parameters) -> str:
    return f"slipway-tests-{parameters['build_key']}"


@task(name="run-tests", cache_key_fn=_tests_cache_key, persist_result=True)
def run_app_tests(checkout: Checkout, spec: Spec, build_key: str) -> dict:
    logger = get_run_logger()
    if spec.test is None:
        logger.info("no test command in slipway.yaml: skipping tests")
        return {"skipped": True}
    app_reqs = getattr(spec.artifact, "requirements", None)  # lambda-zip only; an image installs its own in the Dockerfile
    reqs = [checkout.path / r for r in ([app_reqs] if app_reqs else []) + spec.test.requirements]
    report = run_tests(checkout.path, spec.test.command, reqs, timeout_s=spec.test.timeout)
    logger.info("tests %s in %.1fs (exit %s)\n%s", "passed" if report.passed else "FAILED", report.duration_s, report.exit_code, report.output_tail)
    report.raise_for_failure()
    return {"skipped": False, "passed": True, "duration_s": round(report.duration_s, 2), "command": report.command}


@task(name="build-lambda-zip", **TRANSIENT_RETRIES)  # retried only when the package index or the network failed
def build_artifact(checkout: Checkout, spec: Spec) -> dict:
    out = Path(tempfile.mkdtemp(prefix="slipway-build-"))
    reqs = checkout.path / spec.artifact.requirements if spec.artifact.requirements else None
    built = build_lambda_zip(checkout.path / spec.artifact.source, out, requirements=reqs, runtime=spec.artifact.runtime)
    get_run_logger().info("built %s: %s bytes zipped, %s unzipped, %s files", built.path.name, built.size, built.unzipped_size, built.file_count)
    return {"path": str(built.path), "sha256": built.sha256, "size": built.size, "unzipped_size": built.unzipped_size, "file_count": built.file_count}


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_zip(built: dict, checkout: Checkout, spec: Spec) -> list[dict]:
    """Before anything is published or deployed: the zip's imports resolve and its handler imports (see slipway.artifact.preflight)."""
    from slipway.artifact import preflight

    source = checkout.path / spec.artifact.source
    source_files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    budget = spec.artifact.max_unzipped_mb
    checks = preflight.lambda_zip_checks(Path(built["path"]), handler=spec.artifact.handler, source_files=source_files,
                                         requirements=spec.artifact.requirements, runtime=spec.artifact.runtime,
                                         max_unzipped_bytes=budget * 1024**2 if budget else None)
    logger = get_run_logger()
    for check in checks:
        (logger.info if check.passed else logger.error)("preflight %s: %s: %s", check.name, "ok" if check.passed else "FAILED", check.detail)
    preflight.raise_for_failures(checks)
    return [c.to_dict() for c in checks]


@task(name="preflight-targets", cache_policy=NO_CACHE)
def preflight_targets(spec: Spec, environments: list[str], store_block: str) -> list[dict]:
    """Before the first deploy: each environment's credentials work, its target exists or can be created, its alarms
    exist (one already firing is reported, not blocking). Read-only (see slipway.rollout.preflight_account)."""
    from slipway.artifact import preflight
    from slipway.rollout import preflight_account as preflight_aws

    checks = []
    for env_name in environments:
        env = spec.environment(env_name)
        target_type = spec.target_type(env)
        ctx_args = {"env_name": env_name, "target_type": target_type, "target_block": env.target, "store_block": store_block}
        if target_type == "lambda":
            _, block = resolve_target_block(env_name, env.target, LambdaTargetBlock)
            sts, lam, iam = aws_clients(block.credentials, "sts", "lambda", "iam", region=block.region, read_timeout=20)
            checks.append(preflight_aws.check_identity(sts, env_name))
            if checks[-1].passed:
                checks.append(preflight_aws.check_lambda_target(lam, iam, env_name, location_for(spec, env_name)["function"], block.role_arn))
        if env.alarms:
            checks.append(preflight_aws.check_alarms(_alarm_client(ctx_args), env_name, env.alarms))
    logger = get_run_logger()
    for check in checks:
        (logger.info if check.passed else logger.error)("preflight %s: %s: %s", check.name, "ok" if check.passed else "FAILED", check.detail)
    preflight.raise_for_failures(checks, hint="nothing was deployed; fix the environment's credentials, role or alarms and release again")
    return [c.to_dict() for c in checks]


@task(name="publish-artifact", **TRANSIENT_RETRIES)
def publish_artifact(store_block: str, built: dict, checkout: Checkout, spec: Spec, build_key: str, tests: dict) -> ArtifactRef:
    store, _ = open_store(store_block)
    provenance = Provenance(
        app=spec.app, release_id=release_id_for(checkout.commit, built["sha256"]), artifact_sha256=built["sha256"],
        artifact_size=built["size"], unzipped_size=built["unzipped_size"], file_count=built["file_count"],
        commit=checkout.commit, commit_subject=checkout.subject, ref=checkout.ref, repo=checkout.repo_url,
        spec_digest=spec.digest(), build_key=build_key, runtime=spec.artifact.runtime, handler=spec.artifact.handler,
        builder={"slipway": slipway.__version__, "python": platform.python_version(), "platform": sys.platform},
        tests=tests, built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    ref = store.publish(Path(built["path"]), provenance)
    get_run_logger().info("%s %s (sha256 %s)", "reused" if ref.reused else "published", ref.uri, ref.sha256)
    return ref


def release_id_for(commit: str, sha256: str) -> str:
    return f"{commit[:10]}-{sha256.removeprefix('sha256:')[:8]}"


# ---- container images -----------------------------------------------------------------------------------
@task(name="build-image", cache_policy=NO_CACHE)
def build_container_image(checkout: Checkout, spec: Spec, build_key: str) -> dict:
    logger = get_run_logger()
    art = spec.artifact
    labels = oci_labels(app=spec.app, commit=checkout.commit, ref=checkout.ref, repo=checkout.repo_url, spec_digest=spec.digest())
    local_tag = f"slipway/{spec.app}:{image_tag(checkout.commit, build_key)}"
    built = build_image(
        docker_client(), context=checkout.path / art.context, dockerfile=art.dockerfile, local_tag=local_tag, labels=labels,
        build_args=art.build_args, platform=art.platform, log=lambda line: logger.info("%s", line),
    )
    logger.info("built %s (%s)", local_tag, built.image_id)
    return {"image_id": built.image_id, "local_tag": local_tag, "tag": image_tag(checkout.commit, build_key), "labels": labels}


def registry_coordinates(registry_block: str, app: str) -> tuple[str, str, RegistryAuth | None]:
    block = load_block(
        RegistryBlock, registry_block, missing=f"no slipway-registry block named {registry_block!r}",
        hint="run `slipway local up` with a Docker engine running, or create the block (docs/blocks.md)", ref="registry-block-missing",
    )
    name = f"{block.namespace.strip('/')}/{app}" if block.namespace.strip("/") else app
    if block.kind == "ecr":
        (ecr,) = aws_clients(block.credentials, "ecr")
        host, auth = ecr_auth(ecr)
        return block.url or host, name, auth
    auth = RegistryAuth(username=block.username, password=block.password) if block.username else None
    return block.url, name, auth


@task(name="find-pushed-image", **TRANSIENT_RETRIES)
def find_pushed_image(registry_block: str, app: str, tag: str) -> ImageRef | None:
    """The tag is derived from the commit and the build config, so an image already under it was built from
    them: reuse it rather than build again (a rebuild differs in its timestamps and would be refused)."""
    registry, name, auth = registry_coordinates(registry_block, app)
    digest = remote_digest(registry, name, tag, auth)
    if digest:
        get_run_logger().info("image %s/%s:%s already pushed (%s): reused, not rebuilt", registry, name, tag, digest)
        return ImageRef(repository=f"{registry}/{name}", tag=tag, digest=digest)
    return None


@task(name="push-image", **TRANSIENT_RETRIES)
def push_container_image(registry_block: str, app: str, built: dict) -> ImageRef:
    logger = get_run_logger()
    registry, name, auth = registry_coordinates(registry_block, app)
    ref = push_image(docker_client(), built["image_id"], registry=registry, name=name, tag=built["tag"], auth=auth,
                     log=lambda line: logger.info("%s", line))
    logger.info("pushed %s", ref.pinned)
    return ref


@task(name="record-image", **TRANSIENT_RETRIES)
def record_image(store_block: str, image: ImageRef, checkout: Checkout, spec: Spec, build_key: str, tests: dict) -> ArtifactRef:
    store, _ = open_store(store_block)
    digest = image.digest.removeprefix("sha256:")
    provenance = Provenance(
        app=spec.app, release_id=release_id_for(checkout.commit, digest), artifact_sha256=digest, artifact_size=0,
        unzipped_size=0, file_count=0, commit=checkout.commit, commit_subject=checkout.subject, ref=checkout.ref,
        repo=checkout.repo_url, spec_digest=spec.digest(), build_key=build_key, runtime="container",
        handler=spec.artifact.dockerfile, builder={"slipway": slipway.__version__, "python": platform.python_version()},
        tests=tests, built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), image=image.pinned,
    )
    ref = store.record_image(provenance, image)
    get_run_logger().info("recorded %s as release %s", image.pinned, ref.release_id)
    return ref


# ---- per-environment tasks ---------------------------------------------------------------------------
@task(name="reconcile-environment", **TRANSIENT_RETRIES)
def reconcile_environment(ctx_args: dict) -> str | None:
    ctx = env_context(**ctx_args)
    try:
        outcome = staged.reconcile(ctx)
    except RollbackError as exc:  # the deploy that follows replaces what is there; it must not be blocked
        get_run_logger().warning("could not reconcile %s first (%s); deploying over it", ctx.environment, exc)
        return None
    if outcome:
        get_run_logger().warning("reconciled %s: %s", ctx.environment, outcome.message)
    return outcome.message if outcome else None


@task(name="prepare-version", **TRANSIENT_RETRIES)
def prepare_version(ctx_args: dict, artifact: ArtifactRef) -> DeployResult:
    if artifact.image is None:  # an image is pulled by digest, which the registry verifies
        open_store(ctx_args["store_block"])[0].check_intact(artifact)
    ctx = env_context(**ctx_args)
    result = staged.publish(ctx, artifact)
    get_run_logger().info(
        "%s version %s on %s (%s)", "prepared" if result.new_version else "reused", result.version, ctx.target.name, result.code_sha256
    )
    return result


@task(name="shift-traffic", cache_policy=NO_CACHE)
def shift_traffic(ctx_args: dict, artifact: ArtifactRef, deployed: DeployResult) -> int:
    ctx = env_context(**ctx_args)
    seq = staged.shift_traffic(ctx, artifact, deployed)
    get_run_logger().info("%s → version %s (100%%)", ctx.target.name, deployed.version)
    return seq


@task(name="begin-reverify", cache_policy=NO_CACHE)
def begin_reverify(ctx_args: dict, artifact: ArtifactRef) -> tuple[int, str]:
    ctx = env_context(**ctx_args)
    seq, version = staged.begin_reverify(ctx, artifact)
    get_run_logger().info("%s already live on %s (version %s): re-verifying only", ctx.environment, artifact.release_id, version)
    return seq, version


@task(name="verify-release", cache_policy=NO_CACHE)
def verify_release(ctx_args: dict, artifact: ArtifactRef, version: str, started_seq: int) -> VerifyResult:
    ctx = env_context(**ctx_args)
    result = staged.verify(ctx, artifact, version, started_seq)
    for check in result.checks:
        get_run_logger().info("smoke %s: %s (version %s, %.0f ms)", check.name, check.detail, check.executed_version, check.duration_ms or 0)
    return result


@task(name="roll-back", cache_policy=NO_CACHE)
def roll_back_environment(ctx_args: dict, to_release: str | None, reason: str, automatic: bool, failed_run_id: str | None = None,
                          cause: dict | None = None) -> dict | None:
    ctx = env_context(**ctx_args)
    outcome = staged.roll_back(ctx, to_release=to_release, reason=reason, only_if_in_progress=automatic, only_if_run_id=failed_run_id,
                                cause=cause)
    logger = get_run_logger()
    if outcome is None:
        logger.info("nothing in progress in %s: no rollback needed", ctx.environment)
        return None
    logger.warning("rolled back %s: %s", ctx.environment, outcome.message)
    return outcome.__dict__


# ---- progressive delivery: canary / linear ------------------------------------------------------------
def _alarm_client(ctx_args: dict):
    """CloudWatch for alarm gates: the target block's AWS account (Lambda, ECS), else the artifact store's."""
    block_cls, _, _ = _target_kind(ctx_args.get("target_type", "lambda"))
    _, block = resolve_target_block(ctx_args["env_name"], ctx_args.get("target_block"), block_cls)
    credentials = getattr(block, "credentials", None)
    if credentials is not None:
        (cw,) = aws_clients(credentials, "cloudwatch", region=getattr(block, "region", None))
        return cw
    store = load_block(ArtifactStoreBlock, ctx_args["store_block"])
    (cw,) = aws_clients(store.credentials, "cloudwatch")
    return cw


@task(name="snapshot-alarms", **TRANSIENT_RETRIES)
def snapshot_alarms(ctx_args: dict, names: list[str]) -> dict:
    """The alarms' states before anything moves: only an alarm that is newly in ALARM later fails the stage."""
    from slipway.verify.alarms import AlarmGate

    gate = AlarmGate.open(_alarm_client(ctx_args), names)
    evidence = gate.evidence()
    already = [n for n, a in gate.before.items() if a.state == "ALARM"]
    logger = get_run_logger()
    logger.info("alarm gate on %s: %s", ", ".join(names), "all clear" if not already else f"already in ALARM (ignored): {', '.join(already)}")
    return evidence


def _gate_from(ctx_args: dict, names: list[str], snapshot: dict | None):
    from slipway.verify.alarms import AlarmGate

    if not names:
        return None
    return AlarmGate.resume(_alarm_client(ctx_args), names, snapshot)


@task(name="check-alarms", cache_policy=NO_CACHE)
def check_alarms(ctx_args: dict, artifact: ArtifactRef, version: str, names: list[str], snapshot: dict, percent: int = 100) -> None:
    """Between steps, before a promotion and after an all-at-once switch: an alarm newly in ALARM fails the stage
    (and rolls back)."""
    from slipway.rollout import progressive

    gate = _gate_from(ctx_args, names, snapshot)
    fired = gate.check() if gate else []
    if fired:
        ctx = env_context(**ctx_args)
        progressive._alarm_fired(ctx, artifact, version, percent, fired, gate, "after the switch" if percent == 100 else "between steps")


@task(name="begin-progressive", cache_policy=NO_CACHE)
def begin_progressive(ctx_args: dict, artifact: ArtifactRef, deployed: DeployResult, strategy: str, steps: list[int]) -> tuple[int, str | None]:
    from slipway.rollout import progressive

    ctx = env_context(**ctx_args)
    stable = ctx.target.serving()
    seq = progressive.begin_progressive(ctx, artifact, deployed, strategy, steps)
    return seq, stable


@task(name="shift-weight", **TRANSIENT_RETRIES)
def shift_weight(ctx_args: dict, artifact: ArtifactRef, stable_version: str, version: str, percent: int, started_seq: int) -> None:
    from slipway.rollout import progressive

    ctx = env_context(**ctx_args)
    progressive.shift(ctx, artifact, stable_version=stable_version, version=version, percent=percent, started_seq=started_seq)
    get_run_logger().info("%s: %d%% → version %s, %d%% on %s", ctx.target.name, percent, version, 100 - percent, stable_version)


@task(name="bake-and-judge", task_run_name="bake {percent}% ({label})", cache_policy=NO_CACHE)
def bake_and_judge(
    ctx_args: dict, artifact: ArtifactRef, stable_version: str, version: str, percent: int, started_seq: int,
    alarm_names: list[str], alarm_snapshot: dict | None, label: str = "", since: str | None = None,
) -> dict:
    """One bake: synthetic traffic (if any), alarm checks, then the verdict, recorded and returned (FAIL raises)."""
    from slipway.rollout import progressive
    from slipway.verify.canary import CanaryThresholds

    ctx = env_context(**ctx_args)
    env = ctx_args["spec"].environment(ctx_args["env_name"])
    traffic = env.traffic
    items = ([r.model_dump(mode="json") for r in traffic.requests] if traffic.requests else list(traffic.events)) if traffic else []
    settings = progressive.BakeSettings(
        duration_s=env.progressive.bake_s, thresholds=CanaryThresholds(**env.analysis.thresholds()),
        traffic_items=items, traffic_rate_per_s=traffic.rate_per_s if traffic else 0.0,
        traffic_max_requests=traffic.max_requests if traffic else 0,
    )
    logger = get_run_logger()
    logger.info("baking %d%% on version %s for %ss%s", percent, version, settings.duration_s,
                f" with synthetic traffic at {traffic.rate}" if traffic else "")
    progress = _bake_progress(ctx_args, percent, label)
    verdict = progressive.bake(
        ctx, artifact, stable_version=stable_version, version=version, percent=percent, started_seq=started_seq, settings=settings,
        alarm_gate=_gate_from(ctx_args, alarm_names, alarm_snapshot), label=label,
        window_start=datetime.fromisoformat(since) if since else None, on_progress=progress,
    )
    progress(100.0)
    logger.info("canary verdict at %d%%: %s: %s", percent, verdict.verdict, verdict.reason)
    return verdict.model_dump(mode="json")


@task(name="promote", cache_policy=NO_CACHE)
def promote(ctx_args: dict, artifact: ArtifactRef, version: str, started_seq: int) -> None:
    from slipway.rollout import progressive

    ctx = env_context(**ctx_args)
    progressive.promote(ctx, artifact, version, started_seq)
    get_run_logger().info("%s → version %s (100%%)", ctx.target.name, version)


@task(name="record-decision", **TRANSIENT_RETRIES)
def record_decision(ctx_args: dict, artifact: ArtifactRef, approved: bool, approver: str, reason: str, gate: str) -> None:
    """An approval (or a human's answer to an INCONCLUSIVE canary) goes into the ledger with who gave it."""
    _, ledger = open_store(ctx_args["store_block"])
    ledger.record(
        ctx_args["app"], ctx_args["env_name"], "approved" if approved else "rejected", release_id=artifact.release_id,
        commit=artifact.commit, run_id=str(flow_run.get_id() or "") or None, actor=approver or "unknown",
        message=f"{gate}: {'approved' if approved else 'rejected'} by {approver or 'unknown'}" + (f": {reason}" if reason else ""),
        detail={"gate": gate, "approver": approver, "reason": reason},
    )


# ---- maintenance ----------------------------------------------------------------------------------------
@task(name="check-environment", task_run_name="check {ctx_args[app]}/{ctx_args[env_name]}", **TRANSIENT_RETRIES)
def check_environment(ctx_args: dict, heal: bool = False) -> dict:
    ctx = env_context(**ctx_args)
    result = staged.check_live(ctx, heal=heal)
    log = get_run_logger().info if result["status"] in ("ok", "empty", "in-progress") else get_run_logger().warning
    log("%s/%s: %s: %s", ctx.app, ctx.environment, result["status"], result["detail"])
    return result


def _bake_progress(ctx_args: dict, percent: int, label: str):
    """A Prefect progress artifact for a bake (best effort: a UI mirror never fails the bake)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    try:
        artifact_id = create_progress_artifact(
            progress=0.0, description=f"{ctx_args['app']}/{ctx_args['env_name']}: bake at {percent}% ({label})")
    except Exception:  # noqa: BLE001
        return lambda done: None

    def update(done: float) -> None:
        try:
            update_progress_artifact(artifact_id=artifact_id, progress=min(100.0, max(0.0, done)))
        except Exception:  # noqa: BLE001
            pass

    return update

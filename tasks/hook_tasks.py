"""Lifecycle hooks and custom canary metrics, as thin tasks over ``slipway.rollout.hooks`` and
``slipway.verify.custom_metrics``: the hooks of one phase, and the read-only checks preflight runs before a release
(hook functions exist, webhook secrets are readable, every metric query is accepted by its server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from slipway.core.models import ArtifactRef
from slipway.rollout import hooks
from slipway.rollout.staged import EnvRef
from slipway.spec.schema import Hook, Spec
from tasks.secrets import resolved_environment
from tasks.wiring import account_client, env_context, env_ref, resolve_target_block, target_kind


@task(name="lifecycle-hooks", task_run_name="{phase} hooks", cache_policy=NO_CACHE)
def run_hooks(ref: EnvRef, artifact: ArtifactRef, phase: str, version: str, stable_version: str | None = None,
              percent: int | None = None) -> list[dict]:
    """The environment's hooks of ``phase``, in order; each answer is logged and recorded in the ledger. The first
    failure raises HookFailed (the stage fails and its rollback runs)."""
    ctx = env_context(ref)
    body = hooks.payload(phase=phase, app=ref.app, environment=ref.environment, release_id=artifact.release_id,
                         commit=artifact.commit, version=version, stable_version=stable_version, percent=percent, run_id=ctx.run_id)
    logger = get_run_logger()

    def record(answer: hooks.HookAnswer) -> None:
        (logger.info if answer.passed else logger.error)("%s hook %s: %s (%.1fs)", phase, answer.hook,
                                                         "passed" if answer.passed else "FAILED: " + answer.detail, answer.seconds)
        ctx.ledger.record(ref.app, ref.environment, "hook", release_id=artifact.release_id, version=version,
                          commit=artifact.commit, run_id=ctx.run_id,
                          message=f"{phase} hook {answer.hook}: {'passed' if answer.passed else 'FAILED'}: {answer.detail}",
                          detail=answer.to_dict())

    spec_hooks = ref.spec.environment(ref.environment).hooks.of(phase)
    answers = hooks.run(spec_hooks, phase, lambda hook: _call(ref, hook, phase, body), record, f"{ref.app}/{ref.environment}")
    return [a.to_dict() for a in answers]


def _call(ref: EnvRef, hook: Hook, phase: str, body: dict) -> hooks.HookAnswer:
    if hook.function:
        return hooks.call_lambda(account_client(ref, "lambda", read_timeout=max(60.0, hook.timeout + 5)), hook, phase, body)
    return hooks.call_webhook(hook, phase, body, _headers(ref.spec, ref.environment, ref.store_block, hook))


def _headers(spec: Spec, env_name: str, store_block: str, hook: Hook) -> dict[str, str]:
    """The webhook's headers with secret references read (the values go to the webhook only)."""
    env = spec.environment(env_name)
    _, block = resolve_target_block(env_name, env.target, target_kind(spec.target_type(env))[0])
    return resolved_environment(dict(hook.webhook.headers), env_name, credentials=getattr(block, "credentials", None),
                                region=getattr(block, "region", None), store_block=store_block)


def preflight_checks(spec: Spec, env_name: str, store_block: str) -> list:
    """Read-only, before anything is built or deployed: each hook function exists in the environment's account, each
    webhook's secret headers can be read, each custom metric's query is accepted (run once over the last minute)."""
    from slipway.artifact.preflight import PreflightCheck
    from slipway.core.errors import SlipwayError

    env = spec.environment(env_name)
    if not env.analysis.metrics and not any(env.hooks.of(phase) for phase in hooks.PHASES):
        return []
    ref = env_ref(spec, env_name, store_block)
    checks = []
    for phase in hooks.PHASES:
        for hook in env.hooks.of(phase):
            name = f"{env_name}: {phase} hook {hook.label}"
            try:
                if hook.function:
                    account_client(ref, "lambda").get_function_configuration(FunctionName=hook.function)
                    checks.append(PreflightCheck(name, True, "the function exists"))
                elif hook.webhook.headers:
                    _headers(spec, env_name, ref.store_block, hook)
                    checks.append(PreflightCheck(name, True, "secret headers readable"))
            except SlipwayError as exc:
                checks.append(PreflightCheck(name, False, exc.message, ref=exc.ref))
            except Exception as exc:  # noqa: BLE001 - an AWS error, named by its code
                from slipway.core.aws import error_code

                checks.append(PreflightCheck(name, False, f"{hook.function} cannot be read: {error_code(exc) or type(exc).__name__}; "
                                                          "create it in the environment's account or fix the name"))
    checks += _metric_checks(ref, env_name)
    return checks


def _metric_checks(ref: EnvRef, env_name: str) -> list:
    from slipway.artifact.preflight import PreflightCheck
    from slipway.core.errors import SlipwayError
    from slipway.verify.custom_metrics import MetricUnavailable, fill_placeholders
    from tasks.progressive_tasks import custom_checks

    try:
        checks = custom_checks(ref)
    except SlipwayError as exc:
        return [PreflightCheck(f"{env_name}: canary metrics", False, exc.message, ref=exc.ref)]
    end = datetime.now(timezone.utc)
    out = []
    for check in checks:
        values = {"version": "0", "window": "60s", "app": ref.app, "environment": env_name}
        name = f"{env_name}: metric {check.metric.name}"
        try:
            check.source.value(check.metric, lambda text: fill_placeholders(text, values), end - timedelta(seconds=60), end)
            out.append(PreflightCheck(name, True, f"{check.metric.source} accepts the query"))
        except MetricUnavailable as exc:
            out.append(PreflightCheck(name, False, f"{exc}; fix analysis.metrics in slipway.yaml or the slipway-prometheus block"))
    return out


__all__ = ["preflight_checks", "run_hooks"]

"""Canary and linear deploys, each step a thin task over ``slipway.rollout.progressive``: alarm gates, shift a
weight, bake and judge, promote."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from slipway.core.models import ArtifactRef, DeployResult
from slipway.rollout import progressive
from slipway.rollout.staged import EnvRef
from slipway.verify.alarms import AlarmGate
from slipway.verify.canary import CanaryThresholds
from tasks.wiring import TRANSIENT_RETRIES, alarm_client, env_context


@task(name="snapshot-alarms", **TRANSIENT_RETRIES)
def snapshot_alarms(ref: EnvRef, names: list[str]) -> dict:
    """The alarms' states before anything moves: only an alarm that is newly in ALARM later fails the stage."""
    gate = AlarmGate.open(alarm_client(ref), names)
    already = [n for n, a in gate.before.items() if a.state == "ALARM"]
    get_run_logger().info("alarm gate on %s: %s", ", ".join(names),
                          "all clear" if not already else f"already in ALARM (ignored): {', '.join(already)}")
    return gate.evidence()


def _gate_from(ref: EnvRef, names: list[str], snapshot: dict | None) -> AlarmGate | None:
    return AlarmGate.resume(alarm_client(ref), names, snapshot) if names else None


@task(name="check-alarms", cache_policy=NO_CACHE)
def check_alarms(ref: EnvRef, artifact: ArtifactRef, version: str, names: list[str], snapshot: dict, percent: int = 100) -> None:
    """Between steps, before a promotion and after an all-at-once switch: an alarm newly in ALARM fails the stage
    (and rolls back)."""
    gate = _gate_from(ref, names, snapshot)
    fired = gate.check() if gate else []
    if fired:
        progressive._alarm_fired(env_context(ref), artifact, version, percent, fired, gate,
                                 "after the switch" if percent == 100 else "between steps")


@task(name="begin-progressive", cache_policy=NO_CACHE)
def begin_progressive(ref: EnvRef, artifact: ArtifactRef, deployed: DeployResult, strategy: str, weights: list[int]) -> int:
    return progressive.begin_progressive(env_context(ref), artifact, deployed, strategy, weights)


@task(name="shift-weight", **TRANSIENT_RETRIES)
def shift_weight(ref: EnvRef, artifact: ArtifactRef, stable_version: str, version: str, percent: int, started_seq: int) -> None:
    ctx = env_context(ref)
    progressive.shift(ctx, artifact, stable_version=stable_version, version=version, percent=percent, started_seq=started_seq)
    get_run_logger().info("%s: %d%% → version %s, %d%% on %s", ctx.target.name, percent, version, 100 - percent, stable_version)


def _bake_settings(ref: EnvRef) -> progressive.BakeSettings:
    env = ref.spec.environment(ref.environment)
    traffic = env.traffic
    items = ([r.model_dump(mode="json") for r in traffic.requests] if traffic.requests else list(traffic.events)) if traffic else []
    return progressive.BakeSettings(
        duration_s=env.progressive.bake_s, thresholds=CanaryThresholds(**env.analysis.thresholds()),
        traffic_items=items, traffic_rate_per_s=traffic.rate_per_s if traffic else 0.0,
        traffic_max_requests=traffic.max_requests if traffic else 0, custom=custom_checks(ref),
    )


def custom_checks(ref: EnvRef) -> tuple:
    """The environment's ``analysis.metrics``, each with its source: Prometheus from the ``slipway-prometheus`` block it
    names, CloudWatch in the environment's account. A missing block stops the bake in one line (preflight says it first)."""
    from slipway.verify.custom_metrics import CloudWatchSource, CustomCheck, PrometheusSource

    checks = []
    for metric in ref.spec.environment(ref.environment).analysis.metrics:
        if metric.prometheus is not None:
            block = prometheus_block(metric.prometheus.server)
            source = PrometheusSource(block.url, block.token.get_secret_value() if block.token else None, block.timeout_s)
        else:
            source = CloudWatchSource(alarm_client(ref))
        checks.append(CustomCheck(metric, source, ref.app, ref.environment))
    return tuple(checks)


def prometheus_block(name: str):
    from blocks import PrometheusBlock
    from tasks.resolution import load_block

    return load_block(PrometheusBlock, name, missing=f"no slipway-prometheus block named {name!r} (analysis.metrics names it)",
                      hint=f'create it: PrometheusBlock(url="http://prometheus:9090").save("{name}")', ref="block-missing")


PROMOTE_NOW = "PROMOTE-NOW"  # bake_and_judge's answer when a person asked to skip the remaining bakes


@task(name="bake-and-judge", task_run_name="bake {percent}% ({label})", cache_policy=NO_CACHE)
def bake_and_judge(
    ref: EnvRef, artifact: ArtifactRef, stable_version: str, version: str, percent: int, started_seq: int,
    alarm_names: list[str], alarm_snapshot: dict | None, label: str = "", since: str | None = None,
) -> dict:
    """One bake: synthetic traffic (if any), alarm checks, then the verdict, recorded and returned (FAIL raises)."""
    settings = _bake_settings(ref)
    traffic = ref.spec.environment(ref.environment).traffic
    logger = get_run_logger()
    logger.info("baking %d%% on version %s for %ss%s", percent, version, settings.duration_s,
                f" with synthetic traffic at {traffic.rate}" if traffic else "")
    progress = _bake_progress(ref, percent, label)
    try:
        verdict = progressive.bake(
            env_context(ref), artifact, stable_version=stable_version, version=version, percent=percent, started_seq=started_seq,
            settings=settings, alarm_gate=_gate_from(ref, alarm_names, alarm_snapshot), label=label,
            window_start=datetime.fromisoformat(since) if since else None, on_progress=progress,
        )
    except progressive.PromoteNow as asked:  # a decision, not a verdict: the remaining bakes are skipped
        logger.warning("promote-now asked by %s (%s): skipping the remaining bakes at %d%%", asked.actor, asked.reason, percent)
        return {"verdict": PROMOTE_NOW, "actor": asked.actor, "reason": asked.reason}
    progress(100.0)
    logger.info("canary verdict at %d%%: %s: %s", percent, verdict.verdict, verdict.reason)
    return verdict.model_dump(mode="json")


@task(name="promote", cache_policy=NO_CACHE)
def promote(ref: EnvRef, artifact: ArtifactRef, version: str, started_seq: int) -> None:
    ctx = env_context(ref)
    progressive.promote(ctx, artifact, version, started_seq)
    get_run_logger().info("%s → version %s (100%%)", ctx.target.name, version)


def _bake_progress(ref: EnvRef, percent: int, label: str):
    """A Prefect progress artifact for a bake (best effort: a UI mirror never fails the bake)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    try:
        artifact_id = create_progress_artifact(progress=0.0, description=f"{ref.app}/{ref.environment}: bake at {percent}% ({label})")
    except Exception:  # noqa: BLE001
        return lambda done: None

    def update(done: float) -> None:
        try:
            update_progress_artifact(artifact_id=artifact_id, progress=min(100.0, max(0.0, done)))
        except Exception:  # noqa: BLE001
            pass

    return update

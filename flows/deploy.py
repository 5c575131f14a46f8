"""The ``deploy-environment`` flow: one environment of a release, under its lock.

approval gate (if any) → lock → reconcile → prepare a version → before-traffic hooks → all-at-once (shift, alarms) or
progressive (shift, during-bake hooks, bake, judge, …, promote) → after-traffic hooks → verify. A failure (or a crash, or a cancellation) fires the ``rollback`` subflow from the
state hooks.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.gates import ask
from flows.links import artifact_key, publish_history_artifact
from flows.rollback import roll_back_failed_stage, rollback_even_without_prefect
from slipway.core.errors import ApprovalRejected, CanaryFailed, EnvironmentFrozen
from slipway.core.models import ArtifactRef
from slipway.rollout.progressive import bake_schedule
from slipway.rollout.staged import EnvRef
from slipway.verify.canary import CanaryVerdict
from tasks import deploy_tasks as d, hook_tasks as h, progressive_tasks as p
from tasks.artifact_tasks import recorded_spec
from tasks.freeze import frozen, refusal
from tasks.locks import environment_lock
from tasks.wiring import env_ref


@flow(name="deploy-environment", flow_run_name="deploy {app}/{environment}", on_failure=[roll_back_failed_stage],
      on_crashed=[roll_back_failed_stage], on_cancellation=[roll_back_failed_stage])
def deploy_environment(
    app: str, environment: str, spec_digest: str, artifact: ArtifactRef, action: str = "deploy", reconcile_first: bool = False,
    store_block: str = "default", lock_wait: float = 600, checkout_path: str | None = None, allow_older: bool = False,
    override_freeze: str | None = None,
) -> dict:
    """``spec_digest``: the release's spec, recorded in the artifact store (its values, environment variables among
    them, never appear in this run's parameters). ``checkout_path``: the release's clone, which orders commits: a
    release older than the live one or than one waiting behind it ends superseded, unless ``allow_older``."""
    spec = recorded_spec(store_block, app, spec_digest)
    env = spec.environment(environment)
    ref = env_ref(spec, environment, store_block)
    ref, action = _with_flags(ref, action)
    if action != "verify-live":
        _freeze_gate(spec, ref, artifact, env, override_freeze)  # a freeze window: refused, or an approved override
    if env.approval == "required" and action != "verify-live":
        _approval_gate(ref, artifact, env)  # before the lock: a release waiting for a human blocks nobody
    with rollback_even_without_prefect(app, environment), environment_lock(app, environment, lock_wait):
        # Decided here, under the lock, not from the plan: a run killed while this one waited (for approval or the
        # lock) leaves an in-progress record only now visible. With nothing in progress this reads the head only.
        d.reconcile_environment(ref)
        superseded = None if allow_older else d.superseded_reason(ref, artifact, checkout_path)
        if superseded:
            d.record_superseded(ref, artifact, superseded)
            return {"environment": environment, "superseded": superseded}
        version, started_seq = _reverify(ref, artifact) if action == "verify-live" else _deploy(ref, env, artifact)
        result = d.verify_release(ref, artifact, version, started_seq)
    publish_history_artifact(store_block, app, environment)
    return {"environment": environment, "version": version, "passed": result.passed}


def _with_flags(ref: EnvRef, action: str) -> tuple[EnvRef, str]:
    """Lambda environments get their feature flags as configuration (docs/diagnosis.md: Feature flags). A re-release
    whose flags changed since the live version was deployed becomes a deploy of the same artifact with the new flags."""
    if ref.target_type != "lambda":
        return ref, action
    flags = d.read_env_flags(ref.store_block, ref.app, ref.environment)
    if action == "verify-live" and flags != (d.live_release_flags(ref.store_block, ref.app, ref.environment) or {}):
        get_run_logger().info("%s: feature flags changed since the live version was deployed: deploying the same artifact "
                              "with them", ref.environment)
        action = "deploy"
    return (ref if action == "verify-live" else ref.with_flags(flags)), action  # a re-verify keeps what the live version has


def _freeze_gate(spec, ref: EnvRef, artifact: ArtifactRef, env, override: str | None) -> None:
    """Checked at the environment's turn (a window may have begun since the release started). In a window: refused,
    touching nothing; with ``override`` (a reason), a person must approve entering it, recorded with the reason."""
    hit = frozen(spec, env.name)
    if hit is None:
        return
    window, until = hit
    if not override:
        raise refusal(spec, env.name, window, until, started=True)
    question = (f"{env.name} is frozen until {until.isoformat(timespec='minutes')} ({window.describe()}). Release "
                f"{artifact.release_id} of {ref.app} into it anyway? Override reason: {override}")
    approved, approver, reason = ask(question, env.approval_timeout, key=f"freeze-{env.name}")
    d.record_decision(ref, artifact, approved, approver, f"{override}" + (f"; {reason}" if reason else ""),
                      f"freeze override ({window.reason})")
    if not approved:
        raise EnvironmentFrozen(f"{env.name} is frozen ({window.describe()}) and the override was not approved: "
                                f"{reason or 'rejected'} ({approver})", target=f"{ref.app}/{env.name}",
                                hint="nothing in the environment was touched; release after the window")


def _approval_gate(ref: EnvRef, artifact: ArtifactRef, env) -> None:
    question = f"Approve release {artifact.release_id} (commit {artifact.commit[:12]}) of {ref.app} to {env.name}?"
    approved, approver, reason = ask(question, env.approval_timeout, key=f"approval-{env.name}")
    d.record_decision(ref, artifact, approved, approver, reason, "approval")
    if not approved:
        raise ApprovalRejected(f"{env.name} not approved: {reason or 'rejected'} ({approver})", target=f"{ref.app}/{env.name}",
                               hint="nothing in the environment was touched; release again to ask again")


def _reverify(ref: EnvRef, artifact: ArtifactRef) -> tuple[str, int]:
    started_seq, version = d.begin_reverify(ref, artifact)
    return version, started_seq


def _deploy(ref: EnvRef, env, artifact: ArtifactRef) -> tuple[str, int]:
    """A new version, then all traffic to it at once, or step by step when the strategy is progressive and something
    verified is live to compare with."""
    snapshot = p.snapshot_alarms(ref, env.alarms) if env.alarms else None
    deployed = d.prepare_version(ref, artifact)
    stable = deployed.previous_version
    _hooks(ref, env, artifact, "before_traffic", deployed.version, stable)  # the new version exists, with no traffic yet
    if env.progressive is not None and stable and stable != deployed.version:
        started_seq = _progressive(ref, env, artifact, stable, deployed, snapshot)
    else:
        if env.progressive is not None:
            get_run_logger().info("%s: nothing live to compare a canary with, so this first release goes all-at-once", env.name)
        started_seq = d.shift_traffic(ref, artifact, deployed)
        if env.alarms:
            p.check_alarms(ref, artifact, deployed.version, env.alarms, snapshot, 100)
    _hooks(ref, env, artifact, "after_traffic", deployed.version, stable, 100)  # all the traffic, not yet verified
    return deployed.version, started_seq


def _hooks(ref: EnvRef, env, artifact: ArtifactRef, phase: str, version: str, stable: str | None, percent: int | None = None) -> None:
    """The environment's lifecycle hooks of ``phase`` (no task run when it has none). A failure fails the stage."""
    if env.hooks.of(phase):
        h.run_hooks(ref, artifact, phase, version, stable, percent)


def _progressive(ref: EnvRef, env, artifact: ArtifactRef, stable: str, deployed, snapshot: dict | None) -> int:
    """Shift, bake and judge step by step; promote to 100% when every bake passed. Returns the started seq."""
    version = deployed.version
    started_seq = p.begin_progressive(ref, artifact, deployed, env.progressive.name, env.progressive.steps())
    baked = bake_schedule(env.progressive.steps())
    for i, percent in enumerate(baked, 1):
        if env.alarms and i > 1:  # between bakes (the metrics delay, a human's pause): alarms first
            p.check_alarms(ref, artifact, version, env.alarms, snapshot, baked[i - 2])
        p.shift_weight(ref, artifact, stable, version, percent, started_seq)
        _hooks(ref, env, artifact, "during_bake", version, stable, percent)  # a load test, an external check
        if _bake_step(ref, env, artifact, stable, version, percent, started_seq, snapshot, f"step {i}/{len(baked)}") == p.PROMOTE_NOW:
            break  # `slipway promote-now`: the remaining bakes are skipped (the request is in the ledger, with who and why)
    if env.alarms:
        p.check_alarms(ref, artifact, version, env.alarms, snapshot, baked[-1] if baked else 100)
    p.promote(ref, artifact, version, started_seq)
    return started_seq


def _bake_step(ref: EnvRef, env, artifact: ArtifactRef, stable: str, version: str, percent: int, started_seq: int,
               snapshot: dict | None, step: str) -> str:
    """Bake one step until a verdict lets it go on: PASS, or INCONCLUSIVE extended or approved as the spec says.
    Returns the verdict that let it go on (PROMOTE-NOW: a person asked to skip the remaining bakes)."""
    extensions, since = 0, None
    while True:
        label = step + (f", extension {extensions}" if extensions else "")
        try:
            verdict = p.bake_and_judge(ref, artifact, stable, version, percent, started_seq, env.alarms, snapshot, label, since)
        except CanaryFailed as exc:
            _publish_verdict(ref, artifact, exc.evidence.get("verdict"), label, exc.message)
            raise
        if verdict["verdict"] == p.PROMOTE_NOW:
            return p.PROMOTE_NOW
        _publish_verdict(ref, artifact, verdict, label)
        if verdict["verdict"] == "PASS":
            return "PASS"
        if env.analysis.inconclusive == "extend" and extensions < env.analysis.max_extensions:  # never a silent pass
            extensions += 1
            since = (verdict.get("window") or {}).get("start")  # the extension judges the whole step so far
            get_run_logger().warning("canary at %d%% INCONCLUSIVE (%s): extending the bake (%d/%d)",
                                     percent, verdict["reason"], extensions, env.analysis.max_extensions)
            continue
        _decide_inconclusive(ref, env, artifact, verdict, percent, extensions)
        return "INCONCLUSIVE"


def _decide_inconclusive(ref: EnvRef, env, artifact: ArtifactRef, verdict: dict, percent: int, extensions: int) -> None:
    """An INCONCLUSIVE canary goes on only when a human approves it (``analysis.inconclusive: pause``); else it fails."""
    where = f"{ref.app}/{env.name}"
    if env.analysis.inconclusive == "pause":
        question = (f"Canary of {artifact.release_id} in {env.name} at {percent}% is INCONCLUSIVE: {verdict['reason']}. "
                    "Approve to go on to the next step, reject to roll back.")
        approved, approver, reason = ask(question, env.approval_timeout, key=f"inconclusive-{env.name}-{percent}-{extensions}")
        d.record_decision(ref, artifact, approved, approver, reason, f"inconclusive canary at {percent}%")
        if approved:
            return
        raise CanaryFailed(f"canary at {percent}% INCONCLUSIVE and not approved to go on ({approver}: {reason or 'rejected'})",
                           target=where, hint="traffic goes back to the stable version",
                           evidence={"verdict": verdict, "percent": percent}, ref="canary-inconclusive")
    raise CanaryFailed(
        f"canary at {percent}% INCONCLUSIVE" + (f" after {extensions} extension(s)" if extensions else "") + f": {verdict['reason']}",
        target=where, hint="traffic goes back to the stable version; add synthetic traffic (traffic:) or lengthen the bake, "
                           "or set analysis.inconclusive to pause",
        evidence={"verdict": verdict, "percent": percent}, ref="canary-inconclusive",
    )


def _publish_verdict(ref: EnvRef, artifact: ArtifactRef, verdict: dict | None, label: str, error: str | None = None) -> None:
    """The verdict and its evidence as a markdown artifact (best effort: the ledger holds the same)."""
    try:
        body = CanaryVerdict.model_validate(verdict).markdown() if verdict else f"## Canary stopped\n\n{error}\n"
        header = f"# Canary of {artifact.release_id} in {ref.app}/{ref.environment} ({label})\n\n" + (f"**{error}**\n\n" if error else "")
        create_markdown_artifact(key=artifact_key("canary", ref.app, ref.environment), markdown=header + body,
                                 description=f"Canary verdict for {artifact.release_id} in {ref.environment} ({label})")
    except Exception as exc:  # noqa: BLE001 - never turn a verdict into a failure over a UI mirror
        get_run_logger().warning("could not publish the canary report: %s", exc)


__all__ = ["deploy_environment"]

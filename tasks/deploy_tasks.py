"""The staged deploy of one environment and its rollback, each step a thin task over ``slipway.rollout.staged``:
reconcile → prepare a version → shift traffic (or re-verify) → verify; roll back; record a human's decision; read
the ledger and the flags. Every step takes the environment as a typed ``EnvRef``.

The steps that change what serves (prepare, shift, verify, roll back) are tasks: retried on transient errors and shown
in the UI. Reading the ledger and the flags, reconciling first (a no-op unless a run died) and recording a decision
are plain functions: botocore already retries their AWS calls, and each task run costs the Prefect server several
writes (states, events), which on SQLite also means contention that the client answers with 2 s retries."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from slipway.core.errors import RollbackError
from slipway.core.models import ArtifactRef, DeployResult, VerifyResult
from slipway.record.ledger import EnvHead, deployed_flags
from slipway.rollout import staged
from slipway.rollout.staged import EnvRef, RollbackOutcome
from slipway.spec.schema import Spec
from tasks.hook_tasks import preflight_checks as hook_and_metric_checks
from tasks.wiring import (
    TRANSIENT_RETRIES, alarm_client, env_context, known_context, lambda_account_clients, location_for, open_store, store_client,
)



# ---- the ledger ------------------------------------------------------------------------------------------------
def read_heads(store_block: str, app: str, environments: list[str]) -> dict[str, EnvHead]:
    _, ledger = open_store(store_block)
    return {env: ledger.head(app, env) for env in environments}


def ledger_since(store_block: str, app: str, env: str, seq: int) -> list[dict]:
    """What this release recorded in ``env`` (entries after ``seq``): kind, message, verdict."""
    _, ledger = open_store(store_block)
    # the detail goes into failure records: without the target's coordinates, which hold container environment values
    return [{"kind": e.kind, "message": e.message, "verdict": e.detail.get("verdict"), "percent": e.detail.get("percent"),
             "release_id": e.release_id, "version": e.version, "at": e.at,
             "detail": {k: v for k, v in e.detail.items() if k not in ("location", "environment")}}
            for e in ledger.entries_after(app, env, seq)]


def record_decision(ref: EnvRef, artifact: ArtifactRef, approved: bool, approver: str, reason: str, gate: str) -> None:
    """An approval (or a human's answer to an INCONCLUSIVE canary) goes into the ledger with who gave it."""
    _, ledger = open_store(ref.store_block)
    ledger.record(
        ref.app, ref.environment, "approved" if approved else "rejected", release_id=artifact.release_id,
        commit=artifact.commit, run_id=str(flow_run.get_id() or "") or None, actor=approver or "unknown",
        message=f"{gate}: {'approved' if approved else 'rejected'} by {approver or 'unknown'}" + (f": {reason}" if reason else ""),
        detail={"gate": gate, "approver": approver, "reason": reason},
    )


# ---- feature flags -----------------------------------------------------------------------------------------------
def live_release_flags(store_block: str, app: str, env_name: str) -> dict | None:
    """The flags the live version was deployed with ({} when none were recorded; None when nothing is live)."""
    _, ledger = open_store(store_block)
    head = ledger.head(app, env_name)
    return deployed_flags(ledger, app, env_name, head.live, scan=200) if head.live else None


def read_env_flags(store_block: str, app: str, env_name: str) -> dict:
    """The environment's feature flags now (SSM, in the artifact store's account): {name: {version, value}}."""
    from slipway.record.flags import flags_fingerprint, read_flags

    fingerprint = flags_fingerprint(read_flags(store_client(store_block, "ssm"), app, env_name))
    if fingerprint:
        get_run_logger().info("feature flags of %s/%s: %s", app, env_name,
                              ", ".join(f"{n}={d['value']} (v{d['version']})" for n, d in fingerprint.items()))
    return fingerprint


# ---- before anything moves -----------------------------------------------------------------------------------------
@task(name="preflight-targets", cache_policy=NO_CACHE)
def preflight_targets(spec: Spec, environments: list[str], store_block: str) -> list[dict]:
    """Before the first deploy: each environment's credentials work, its target exists or can be created, its alarms
    exist (one already firing is reported, not blocking). Read-only (see slipway.rollout.preflight_account)."""
    from slipway.artifact import preflight
    from slipway.rollout import preflight_account

    checks = []
    for env_name in environments:
        env = spec.environment(env_name)
        ref = EnvRef(app=spec.app, environment=env_name, store_block=store_block, target_type=spec.target_type(env), target_block=env.target)
        if ref.target_type == "lambda":
            block, sts, lam, iam = lambda_account_clients(env_name, env.target)
            checks.append(preflight_account.check_identity(sts, env_name))
            if checks[-1].passed:
                checks.append(preflight_account.check_lambda_target(lam, iam, env_name, location_for(spec, env_name)["function"], block.role_arn))
        if env.alarms:
            checks.append(preflight_account.check_alarms(alarm_client(ref), env_name, env.alarms))
        checks += _secrets_check(spec, env_name, store_block)
        checks += hook_and_metric_checks(spec, env_name, store_block)
    logger = get_run_logger()
    for check in checks:
        (logger.info if check.passed else logger.error)("preflight %s: %s: %s", check.name, "ok" if check.passed else "FAILED", check.detail)
    preflight.raise_for_failures(checks, hint="nothing was deployed; fix the environment's credentials, role, alarms, hooks or metrics and release again")
    return [c.to_dict() for c in checks]


def _secrets_check(spec: Spec, env_name: str, store_block: str) -> list:
    """The environment's secret references can be read (the values are read and dropped, never logged)."""
    from slipway.artifact.preflight import PreflightCheck
    from slipway.core.errors import CredentialsError
    from tasks.secrets import resolved_environment, secret_names
    from tasks.wiring import _container_env, resolve_target_block, target_kind

    values = _container_env(spec, env_name, {})
    names = secret_names(values)
    if not names:
        return []
    env = spec.environment(env_name)
    _, block = resolve_target_block(env_name, env.target, target_kind(spec.target_type(env))[0])
    try:
        resolved_environment(values, env_name, credentials=getattr(block, "credentials", None), region=getattr(block, "region", None),
                             store_block=store_block)
    except CredentialsError as exc:
        return [PreflightCheck(f"{env_name}: secrets readable", False, exc.message, ref="secret-unreadable")]
    return [PreflightCheck(f"{env_name}: secrets readable", True, f"{len(names)} secret reference(s) read: {', '.join(names)}")]


# ---- newer releases win -----------------------------------------------------------------------------------------------
def superseded_reason(ref: EnvRef, artifact: ArtifactRef, checkout_path: str | None) -> str | None:
    """Under the environment's lock: why this release must not go on (None: it goes on). A release whose commit is an
    ancestor of the live verified one, or of a release of the same app still waiting for this environment, is
    superseded (CodePipeline's SUPERSEDED): an older commit never replaces a newer one, and of several queued releases
    only the newest deploys. Ancestry comes from the release's own clone; a commit it does not hold decides nothing."""
    from pathlib import Path

    from slipway.source.git import is_ancestor

    if not checkout_path or not Path(checkout_path).is_dir():
        return None
    live = env_context(ref).head().live
    if live and live.commit and live.commit != artifact.commit and is_ancestor(Path(checkout_path), artifact.commit, live.commit):
        return (f"{ref.environment} already runs {live.release_id} (commit {live.commit[:12]}), newer than commit "
                f"{artifact.commit[:12]}")
    for name, commit in _other_waiting_releases(ref):
        if commit != artifact.commit and is_ancestor(Path(checkout_path), artifact.commit, commit):
            return f"a newer release of {ref.app} (commit {commit[:12]}, run {name}) is waiting for {ref.environment}"
    return None


def _other_waiting_releases(ref: EnvRef) -> list[tuple[str, str]]:
    """(run name, commit) of the other deploy runs of this app and environment that Prefect shows running or pending."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    me = str(flow_run.get_id() or "")
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"deploy {ref.app}/{ref.environment}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
            ), limit=20)
    except Exception:  # noqa: BLE001 - cannot tell who waits: only the live release decides
        return []
    return [(r.name, ((r.parameters or {}).get("artifact") or {}).get("commit") or "") for r in runs if str(r.id) != me]


def record_superseded(ref: EnvRef, artifact: ArtifactRef, reason: str) -> None:
    _, ledger = open_store(ref.store_block)
    ledger.record(ref.app, ref.environment, "superseded", release_id=artifact.release_id, commit=artifact.commit,
                  run_id=str(flow_run.get_id() or "") or None, message=f"superseded: {reason}; nothing was touched")
    get_run_logger().warning("%s: superseded: %s; nothing was touched", ref.environment, reason)


# ---- one environment's deploy ----------------------------------------------------------------------------------------
def reconcile_environment(ref: EnvRef) -> str | None:
    """Under the lock: finish what a dead run left in progress (back to the verified release), and tell Prefect that run
    is dead. It held this lock while it worked, and the lock is ours now, so a run Prefect still shows as running was
    killed where no worker saw it (a CLI process, a server that restarted): it is marked Crashed."""
    ctx = env_context(ref)
    head = ctx.head()
    stale = head.in_progress
    try:
        outcome = staged.reconcile(ctx, head)
    except RollbackError as exc:  # the deploy that follows replaces what is there; it must not be blocked
        get_run_logger().warning("could not reconcile %s first (%s); deploying over it", ctx.environment, exc)
        return None
    if outcome:
        get_run_logger().warning("reconciled %s: %s", ctx.environment, outcome.message)
    if stale is not None and stale.run_id and stale.run_id != ctx.run_id:
        mark_crashed(stale.run_id, f"found dead by {ctx.run_id or 'another run'}, which reconciled {ctx.app}/{ctx.environment}")
    return outcome.message if outcome else None


def mark_crashed(run_id: str, why: str) -> list[str]:
    """Mark a dead run (and the release run above it) Crashed if Prefect still shows it running; best effort."""
    from uuid import UUID

    from prefect import get_client
    from prefect.states import Crashed

    marked = []
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            if run.state is None or run.state.is_final() or run.state.is_paused():
                return []  # it ended (and said so), or waits for a human: not ours to mark
            family = [run]
            if run.parent_task_run_id:  # the release run whose subflow this was (its process died with it)
                family.append(client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id))
            for candidate in family:
                if candidate.state is not None and not candidate.state.is_final() and not candidate.state.is_paused():
                    client.set_flow_run_state(candidate.id, Crashed(message=f"Slipway: {why}"), force=True)
                    marked.append(str(candidate.id))
    except Exception as exc:  # noqa: BLE001 - the ledger is reconciled either way; only Prefect's view lags
        get_run_logger().warning("could not mark run %s Crashed in Prefect: %s", run_id, exc)
    if marked:
        get_run_logger().warning("marked %s Crashed: %s", ", ".join(marked), why)
    return marked


@task(name="prepare-version", **TRANSIENT_RETRIES)
def prepare_version(ref: EnvRef, artifact: ArtifactRef) -> DeployResult:
    if artifact.image is None:  # an image is pulled by digest, which the registry verifies
        open_store(ref.store_block)[0].check_intact(artifact)
    ctx = env_context(ref)
    result = staged.publish(ctx, artifact)
    get_run_logger().info(
        "%s version %s on %s (%s)", "prepared" if result.new_version else "reused", result.version, ctx.target.name, result.code_sha256
    )
    return result


@task(name="shift-traffic", cache_policy=NO_CACHE)
def shift_traffic(ref: EnvRef, artifact: ArtifactRef, deployed: DeployResult) -> int:
    ctx = env_context(ref)
    seq = staged.shift_traffic(ctx, artifact, deployed)
    get_run_logger().info("%s → version %s (100%%)", ctx.target.name, deployed.version)
    return seq


@task(name="begin-reverify", cache_policy=NO_CACHE)
def begin_reverify(ref: EnvRef, artifact: ArtifactRef) -> tuple[int, str]:
    ctx = env_context(ref)
    seq, version = staged.begin_reverify(ctx, artifact)
    get_run_logger().info("%s already live on %s (version %s): re-verifying only", ctx.environment, artifact.release_id, version)
    return seq, version


@task(name="verify-release", cache_policy=NO_CACHE)
def verify_release(ref: EnvRef, artifact: ArtifactRef, version: str, started_seq: int) -> VerifyResult:
    result = staged.verify(env_context(ref), artifact, version, started_seq)
    for check in result.checks:
        get_run_logger().info("smoke %s: %s (version %s, %.0f ms)", check.name, check.detail, check.executed_version, check.duration_ms or 0)
    return result


@task(name="roll-back", cache_policy=NO_CACHE)
def roll_back_environment(ref: EnvRef, to_release: str | None, reason: str, automatic: bool, failed_run_id: str | None = None,
                          cause: dict | None = None) -> RollbackOutcome | None:
    ctx = env_context(ref)
    outcome = staged.roll_back(ctx, to_release=to_release, reason=reason, only_if_in_progress=automatic, only_if_run_id=failed_run_id,
                               cause=cause)
    logger = get_run_logger()
    if outcome is None:
        logger.info("nothing in progress in %s: no rollback needed", ctx.environment)
        return None
    logger.warning("rolled back %s: %s", ctx.environment, outcome.message)
    return outcome


@task(name="check-environment", task_run_name="check {ref.app}/{ref.environment}", **TRANSIENT_RETRIES)
def check_environment(ref: EnvRef, heal: bool = False) -> dict:
    ctx = env_context(ref)
    result = staged.check_live(ctx, heal=heal)
    log = get_run_logger().info if result["status"] in ("ok", "empty", "in-progress") else get_run_logger().warning
    log("%s/%s: %s: %s", ctx.app, ctx.environment, result["status"], result["detail"])
    return result


def roll_back_without_prefect(app: str, environment: str, failed_run_id: str | None, reason: str,
                              cause: dict | None = None) -> RollbackOutcome | None:
    """The Prefect API is gone (its server died mid-deploy): roll back what this run left in progress with the ledger and
    the target this process already holds, without the lock (no run can take it while the server is down; the
    ledger's conditional writes still serialise). Plain code, no task: there is no API to report a task to."""
    import logging

    ctx = known_context(app, environment)
    if ctx is None:
        return None  # this process never touched the environment
    outcome = staged.roll_back(ctx, only_if_in_progress=True, only_if_run_id=failed_run_id or ctx.run_id, cause=cause,
                               reason=f"{reason} (the Prefect API was unreachable: rolled back from the ledger and the target)")
    if outcome:
        logging.getLogger("slipway").warning("rolled back %s/%s without the Prefect API: %s", app, environment, outcome.message)
    return outcome


def serving_now(app: str, environment: str) -> str | None:
    """What the environment's target serves now, read from the target this process deployed with (None: unknown)."""
    ctx = known_context(app, environment)
    try:
        return ctx.target.serving() if ctx is not None else None
    except Exception:  # noqa: BLE001 - a report detail; the ledger's word stands
        return None

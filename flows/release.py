"""Composition only: which steps, in what order, with which hooks.

release: validate → check store → clone → spec → plan → (reuse | test → build → publish) → per environment,
in promotion order, the ``deploy-environment`` subflow (publish version → shift traffic → verify). A failed
stage fires the ``rollback`` subflow from the subflow's ``on_failure``/``on_crashed`` hooks; later
environments are not touched, and the release ends Failed naming the stage, the check and the evidence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from slipway import BUILDER_VERSION
from slipway.artifact.image import image_tag
from slipway.verify.canary import CanaryVerdict
from slipway.core.errors import ApprovalRejected, CanaryFailed, ReleaseFailed, SlipwayError, SpecError
from slipway.source.git import discard_checkout, validate_ref, validate_repo_url
from slipway.core.models import ArtifactRef, StageOutcome
from slipway.rollout.planning import plan_rollout, select_environments
from slipway.rollout.progressive import bake_schedule
from slipway.record.report import failure_report_markdown, history_rows, outcome_from_head, release_report_markdown, render_summary
from slipway.spec.schema import Spec
from tasks import release_tasks as t
from tasks.locks import environment_lock
from flows.diagnose import artifact_key as diagnosis_key, diagnose
from flows.events import emit
from flows.gates import ask
from slipway.record.diagnose import FailureRecord
from tasks import diagnose_tasks as td


def _artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    import re

    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def _run_ui_url() -> str | None:
    """The run's page, the same link the CLI prints (``/runs/flow-run/<id>``)."""
    try:
        from prefect.runtime import flow_run

        from deployments.runner import ui_url_for_run

        run_id = flow_run.get_id()
        return ui_url_for_run(run_id) if run_id else None
    except Exception:  # noqa: BLE001 - a link is a nicety
        return None


def _artifact_url(key: str) -> str | None:
    """The UI page of the latest artifact with this key."""
    run_url = _run_ui_url()
    return f"{run_url.split('/runs/flow-run/')[0]}/artifacts/key/{key}" if run_url else None


def _app_name_from_spec_file(checkout, spec_path: str | None) -> str | None:
    """For a spec that does not validate: its ``app:`` if it is a usable name, so the failure can still be diagnosed."""
    import re

    import yaml

    try:
        data = yaml.safe_load((checkout.path / (spec_path or "slipway.yaml")).read_text())
        app = data.get("app") if isinstance(data, dict) else None
    except Exception:  # noqa: BLE001 - unreadable: nothing to file the record under
        return None
    return app if isinstance(app, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", app) else None


def _diagnose_failure(
    progress: dict, checkout, repo_url: str, ref: str, exc: BaseException, store_block: str, *, environment: str | None = None,
    ledger_entries: list[dict] | None = None, outcome: StageOutcome | None = None,
) -> dict | None:
    """Record the failure (with the diff against the last verified release, computed while the clone exists) and run
    the diagnose subflow on it. Best effort: the release's own error is what the run reports."""
    logger = get_run_logger()
    if isinstance(exc, ApprovalRejected) or checkout is None:
        return None  # a decision, not a failure; or nothing cloned (the error says why)
    try:
        spec = progress.get("spec")
        app = spec.app if spec is not None else _app_name_from_spec_file(checkout, progress.get("spec_path"))
        if not app:
            return None
        heads = progress.get("heads") or {}
        diff_env = environment or progress.get("first_env")
        artifact, built = progress.get("artifact"), progress.get("built")
        release_id = artifact.release_id if artifact else (t.release_id_for(checkout.commit, built["sha256"]) if built else None)
        new_size = artifact.size if artifact and not artifact.image else (built or {}).get("size")
        # the flags this release delivered (None: it failed before a deploy, so no flags went anywhere)
        delivered = next(((e.get("detail") or {}).get("flags") for e in ledger_entries or []
                          if e.get("kind") == "deploy-started" and "flags" in (e.get("detail") or {})), None)
        diff = None
        if diff_env and diff_env in heads:
            diff = td.release_diff(store_block, checkout, app, diff_env, progress.get("spec_path") or "slipway.yaml",
                                   heads[diff_env].live, new_size, delivered)
        env_keys: list[str] = []
        if spec is not None and diff_env:
            env_keys = sorted({**getattr(spec.artifact, "environment", {}), **spec.environment(diff_env).environment})
            env_keys += sorted(f"SLIPWAY_FLAG_{name.upper()}" for name in delivered or {})
        error = exc.to_dict() if isinstance(exc, SlipwayError) else {
            "stage": "orchestration", "ref": type(exc).__name__, "message": f"{type(exc).__name__}: {str(exc)[:500]}", "evidence": {}}
        try:
            from prefect.runtime import flow_run

            run_id = str(flow_run.get_id() or "") or None
        except Exception:  # noqa: BLE001
            run_id = None
        record = FailureRecord(
            app=app, environment=environment, run_id=run_id, run_url=_run_ui_url(), repo=repo_url, ref=ref, commit=checkout.commit,
            subject=checkout.subject, release_id=release_id, stage=error.get("stage") or "deploy", error=error,
            outcome=outcome.message if outcome else None, outcome_status=outcome.status if outcome else None,
            ledger=ledger_entries or [], preflight=progress.get("preflight") or [], env_keys=env_keys, diff=diff,
        )
        key = td.record_failure(store_block, record)
        result = diagnose(app=app, environment=environment, record_key=key, store_block=store_block)
        result["url"] = _artifact_url(diagnosis_key(app))
        return result
    except Exception as err:  # noqa: BLE001 - never hide the release's own failure behind the diagnosis's
        logger.warning("could not diagnose the failed release: %s", err)
        return None


def publish_history_artifact(store_block: str, app: str, env: str) -> None:
    """Mirror the ledger in the UI. Best effort: the ledger in S3 is the record, the artifact a view of it."""
    try:
        _, ledger = t.open_store(store_block)
        rows = history_rows(ledger.history(app, env, limit=50))
        create_table_artifact(key=_artifact_key("history", app, env), table=rows, description=f"Ledger of {app}/{env}, newest first")
    except Exception as exc:  # noqa: BLE001 - never turn a verified deploy into a failure over a UI mirror
        get_run_logger().warning("could not publish the history artifact of %s/%s: %s", app, env, exc)


# ---- rollback -----------------------------------------------------------------------------------------
@flow(name="rollback", log_prints=False)
def rollback(
    app: str = "",
    environment: str = "",
    to: str | None = None,
    reason: str = "",
    automatic: bool = False,
    store_block: str = "default",
    failed_run_id: str | None = None,
    lock_wait: float = 600,
    cause: dict | None = None,
) -> dict | None:
    """Put ENV back on the previous verified release (or ``to``), verify it, record it.

    Automatic rollbacks (from a failed deploy) are idempotent: with nothing in progress they do nothing.
    With only ``failed_run_id`` (a deployment trigger on a failed or crashed run), the environments come from that
    run: a ``deploy-environment`` run's own, or every ``deploy-environment`` subflow of a ``release`` run (a release
    process killed mid-deploy leaves its subflow Running and the release Crashed).
    """
    failed_run_id = failed_run_id.removeprefix("prefect.flow-run.") if failed_run_id else None  # an event's resource id
    if failed_run_id and not (app and environment):
        return _roll_back_after_failed_run(failed_run_id, reason, store_block, lock_wait)
    _, ledger = t.open_store(store_block)
    head = ledger.head(app, environment)
    location = head.location or ({"function": head.function, "alias": head.alias or "live"} if head.function else None)
    if not location and automatic:
        return None  # the failed (or cancelled) run never touched this environment: nothing to roll back
    if not location:
        raise ReleaseFailed(
            f"nothing has been deployed to {app}/{environment}", hint="check the app and environment names (`slipway history APP`)",
            ref="nothing-deployed",
        )
    ctx_args = dict(app=app, env_name=environment, store_block=store_block, target_type=head.target_type or "lambda",
                    location=location, target_block=head.target_block)
    with environment_lock(app, environment, lock_wait):
        try:
            outcome = t.roll_back_environment(ctx_args, to, reason, automatic, failed_run_id, cause)
        except Exception as exc:
            emit("slipway.rollback.failed", app, environment, reason=reason, error=str(exc)[:500], failed_run_id=failed_run_id)
            raise
    if outcome:
        emit("slipway.rollback.completed", app, environment, reason=reason, to_release=outcome.get("to_release"),
             from_version=outcome.get("from_version"), automatic=automatic, failed_run_id=failed_run_id)
    publish_history_artifact(store_block, app, environment)
    return outcome


def _roll_back_after_failed_run(failed_run_id: str, reason: str, store_block: str, lock_wait: float) -> dict:
    """Roll back what a failed/crashed run left in progress, found from the run itself (idempotent)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(failed_run_id)
        runs = [run] if (run.parameters or {}).get("environment") else client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    targets = [(r.parameters["app"], r.parameters["environment"], str(r.id), r.parameters.get("store_block", store_block))
               for r in runs if r.name.startswith("deploy ") and "app" in (r.parameters or {}) and "environment" in r.parameters]
    why = reason or f"run {run.name} ended {run.state.name if run.state else '?'}"
    done = {}
    for app, env, run_id, block in targets:
        logger.info("rolling back %s/%s if run %s left it in progress", app, env, run_id)
        done[f"{app}/{env}"] = rollback(app=app, environment=env, reason=why, automatic=True, store_block=block,
                                        failed_run_id=run_id, lock_wait=lock_wait)
    return {"failed_run_id": failed_run_id, "rolled_back": {k: v for k, v in done.items() if v}, "checked": sorted(done)}


def _roll_back_failed_stage(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook of deploy-environment: fire the rollback subflow for that environment."""
    import logging

    params = flow_run.parameters
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read must not stop the rollback
        exc = None
    if isinstance(exc, ApprovalRejected):
        return  # stopped before the environment was touched: nothing to roll back
    reason = exc.message if isinstance(exc, SlipwayError) else f"{state.name}: {state.message}"
    cause = None
    if isinstance(exc, CanaryFailed):  # the rollback is recorded with the verdict (or the alarm) that caused it
        verdict = exc.evidence.get("verdict") or {}
        cause = {"ref": exc.ref, "percent": exc.evidence.get("percent"), "verdict": verdict.get("verdict"),
                 "reason": verdict.get("reason"), "alarms": exc.evidence.get("alarms")}
    try:
        rollback(
            app=params["app"],
            environment=params["environment"],
            reason=reason,
            automatic=True,
            store_block=params.get("store_block", "default"),
            failed_run_id=str(flow_run.id),
            cause=cause,
        )
    except Exception as err:  # noqa: BLE001 - recorded as rollback-failed in the ledger; the release reports it
        logging.getLogger("slipway").error("automatic rollback of %s/%s failed: %s", params["app"], params["environment"], err)


# ---- one environment ------------------------------------------------------------------------------------
@flow(name="deploy-environment", flow_run_name="deploy {app}/{environment}", on_failure=[_roll_back_failed_stage],
      on_crashed=[_roll_back_failed_stage], on_cancellation=[_roll_back_failed_stage])
def deploy_environment(
    app: str,
    environment: str,
    spec: Spec,
    artifact: ArtifactRef,
    action: str = "deploy",
    reconcile_first: bool = False,
    store_block: str = "default",
    lock_wait: float = 600,
) -> dict:
    env = spec.environment(environment)
    checks = [c.model_dump(mode="json", exclude_none=True) for c in spec.verify.smoke]
    ctx_args = dict(app=app, env_name=environment, store_block=store_block, target_type=spec.target_type(env),
                    location=t.location_for(spec, environment), target_block=env.target, spec=spec, checks=checks)
    if ctx_args["target_type"] == "lambda":  # flags are delivered as Lambda configuration (see docs/diagnosis.md: Feature flags)
        flags = t.read_env_flags(store_block, app, environment)
        if action == "verify-live" and flags != (t.live_release_flags(store_block, app, environment) or {}):
            get_run_logger().info("%s: feature flags changed since the live version was deployed: deploying the same artifact "
                                  "with them", environment)
            action = "deploy"  # a new version of the same code with the new flags, gated, verified (or canaried) like any deploy
        if action != "verify-live":  # a re-verify keeps what the live version has
            ctx_args["flags"] = flags
    if env.approval == "required" and action != "verify-live":
        _approval_gate(ctx_args, artifact, env)  # before the lock: a release waiting for a human blocks nobody
    with environment_lock(app, environment, lock_wait):
        return _deploy_environment(ctx_args, env, artifact, action, reconcile_first)


def _approval_gate(ctx_args: dict, artifact: ArtifactRef, env) -> None:
    question = (f"Approve release {artifact.release_id} (commit {artifact.commit[:12]}) of {ctx_args['app']} "
                f"to {env.name}?")
    approved, approver, reason = ask(question, env.approval_timeout, key=f"approval-{env.name}")
    t.record_decision(ctx_args, artifact, approved, approver, reason, "approval")
    if not approved:
        raise ApprovalRejected(
            f"{env.name} not approved: {reason or 'rejected'} ({approver})", target=f"{ctx_args['app']}/{env.name}",
            hint="nothing in the environment was touched; release again to ask again",
        )


def _deploy_environment(ctx_args: dict, env, artifact: ArtifactRef, action: str, reconcile_first: bool) -> dict:
    app, environment, store_block = ctx_args["app"], ctx_args["env_name"], ctx_args["store_block"]
    logger = get_run_logger()
    # Decided here, under the lock, not from the plan: a run killed while this one waited (for approval or the lock)
    # leaves an in-progress record only now visible. With nothing in progress this reads the head and does nothing.
    t.reconcile_environment(ctx_args)
    snapshot = t.snapshot_alarms(ctx_args, env.alarms) if env.alarms and action != "verify-live" else None
    strategy = env.progressive
    if action == "verify-live":
        started_seq, version = t.begin_reverify(ctx_args, artifact)
    else:
        deployed = t.prepare_version(ctx_args, artifact)
        version = deployed.version
        stable = deployed.previous_version
        if strategy is not None and stable and stable != version:
            started_seq = _progressive(ctx_args, env, artifact, stable, deployed, snapshot)
        else:
            if strategy is not None:
                logger.info("%s: nothing live to compare a canary with, so this first release goes all-at-once", environment)
            started_seq = t.shift_traffic(ctx_args, artifact, deployed)
            if env.alarms:
                t.check_alarms(ctx_args, artifact, version, env.alarms, snapshot, 100)
    result = t.verify_release(ctx_args, artifact, version, started_seq)
    publish_history_artifact(store_block, app, environment)
    return {"environment": environment, "version": version, "passed": result.passed}


def _progressive(ctx_args: dict, env, artifact: ArtifactRef, stable: str, deployed, snapshot: dict | None) -> int:
    """Shift, bake and judge step by step; promote to 100% when every bake passed. Returns the started seq."""
    strategy, analysis = env.progressive, env.analysis
    steps = strategy.steps()
    version = deployed.version
    started_seq, _ = t.begin_progressive(ctx_args, artifact, deployed, strategy.name, steps)
    baked = bake_schedule(steps)
    for i, percent in enumerate(baked, 1):
        if env.alarms and i > 1:  # between bakes (the metrics delay, a human's pause): alarms first
            t.check_alarms(ctx_args, artifact, version, env.alarms, snapshot, baked[i - 2])
        t.shift_weight(ctx_args, artifact, stable, version, percent, started_seq)
        extensions, since = 0, None
        while True:
            label = f"step {i}/{len(baked)}" + (f", extension {extensions}" if extensions else "")
            try:
                verdict = t.bake_and_judge(ctx_args, artifact, stable, version, percent, started_seq, env.alarms, snapshot, label, since)
            except CanaryFailed as exc:
                _publish_verdict(ctx_args, artifact, exc.evidence.get("verdict"), label, exc.message)
                raise
            _publish_verdict(ctx_args, artifact, verdict, label)
            if verdict["verdict"] == "PASS":
                break
            # INCONCLUSIVE: never a silent pass
            if analysis.inconclusive == "extend" and extensions < analysis.max_extensions:
                extensions += 1
                since = (verdict.get("window") or {}).get("start")  # the extension judges the whole step so far
                get_run_logger().warning("canary at %d%% INCONCLUSIVE (%s): extending the bake (%d/%d)",
                                         percent, verdict["reason"], extensions, analysis.max_extensions)
                continue
            if analysis.inconclusive == "pause":
                question = (f"Canary of {artifact.release_id} in {env.name} at {percent}% is INCONCLUSIVE: {verdict['reason']}. "
                            "Approve to go on to the next step, reject to roll back.")
                approved, approver, reason = ask(question, env.approval_timeout, key=f"inconclusive-{env.name}-{percent}-{extensions}")
                t.record_decision(ctx_args, artifact, approved, approver, reason, f"inconclusive canary at {percent}%")
                if approved:
                    break
                raise CanaryFailed(
                    f"canary at {percent}% INCONCLUSIVE and not approved to go on ({approver}: {reason or 'rejected'})",
                    target=f"{ctx_args['app']}/{env.name}", hint="traffic goes back to the stable version",
                    evidence={"verdict": verdict, "percent": percent}, ref="canary-inconclusive",
                )
            raise CanaryFailed(
                f"canary at {percent}% INCONCLUSIVE" + (f" after {extensions} extension(s)" if extensions else "") + f": {verdict['reason']}",
                target=f"{ctx_args['app']}/{env.name}",
                hint="traffic goes back to the stable version; add synthetic traffic (traffic:) or lengthen the bake, "
                     "or set analysis.inconclusive to pause",
                evidence={"verdict": verdict, "percent": percent}, ref="canary-inconclusive",
            )
    if env.alarms:
        t.check_alarms(ctx_args, artifact, version, env.alarms, snapshot, baked[-1] if baked else 100)
    t.promote(ctx_args, artifact, version, started_seq)
    return started_seq


def _publish_verdict(ctx_args: dict, artifact: ArtifactRef, verdict: dict | None, label: str, error: str | None = None) -> None:
    """The verdict and its evidence as a markdown artifact (best effort: the ledger holds the same)."""
    try:
        if verdict:
            body = CanaryVerdict.model_validate(verdict).markdown()
        else:
            body = f"## Canary stopped\n\n{error}\n"
        header = f"# Canary of {artifact.release_id} in {ctx_args['app']}/{ctx_args['env_name']} ({label})\n\n"
        if error:
            header += f"**{error}**\n\n"
        create_markdown_artifact(
            key=_artifact_key("canary", ctx_args["app"], ctx_args["env_name"]), markdown=header + body,
            description=f"Canary verdict for {artifact.release_id} in {ctx_args['env_name']} ({label})",
        )
    except Exception as exc:  # noqa: BLE001 - never turn a verdict into a failure over a UI mirror
        get_run_logger().warning("could not publish the canary report: %s", exc)


# ---- the release ----------------------------------------------------------------------------------------
@flow(name="release", flow_run_name="release {repo_url}@{ref}")
def release(
    repo_url: str,
    ref: str = "HEAD",
    spec_path: str | None = None,
    only: list[str] | None = None,
    store_block: str = "default",
    git_token_block: str | None = None,
    registry_block: str = "default",
    lock_wait: float = 600,
) -> dict:
    """Release an artifact (Lambda zip or container image) from git through the spec's environments, verified,
    with automatic rollback."""
    logger = get_run_logger()
    validate_repo_url(repo_url)  # refused before anything runs
    validate_ref(ref)
    t.check_artifact_store(store_block)
    checkout = None
    progress: dict = {"spec_path": spec_path}
    try:
        checkout = t.clone_repo(repo_url, ref, git_token_block)
        return _release_checkout(checkout, ref, spec_path, only, store_block, registry_block, lock_wait, progress)
    except ReleaseFailed:
        raise  # it published its own report
    except Exception as exc:  # noqa: BLE001 - every failure after the clone leaves a record; re-raised below
        from prefect.exceptions import Abort, Pause

        if isinstance(exc, (Abort, Pause)):  # cancellation and pauses are Prefect's control flow, not failures
            raise
        diagnosis = _diagnose_failure(progress, checkout, repo_url, ref, exc, store_block)
        if not isinstance(exc, SlipwayError):
            raise
        create_markdown_artifact(
            key="release-failure",
            markdown=failure_report_markdown(repo=repo_url, ref=ref, commit=checkout.commit if checkout else None, error=exc.to_dict(),
                                             diagnosis=diagnosis),
            description=f"Release of {repo_url}@{ref} stopped at {exc.stage}",
        )
        raise
    finally:
        if checkout is not None:
            discard_checkout(checkout)


def _release_checkout(
    checkout, ref: str, spec_path: str | None, only: list[str] | None, store_block: str, registry_block: str, lock_wait: float,
    progress: dict | None = None,
) -> dict:
    logger = get_run_logger()
    progress = {} if progress is None else progress  # what a diagnosis of a failure needs (filled as the release goes)
    spec = t.load_release_spec(checkout, spec_path)
    progress["spec"] = spec
    names = [e.name for e in spec.environments]
    heads = t.read_heads(store_block, spec.app, names)
    progress["heads"] = heads
    progress["first_env"] = (select_environments(spec, only) or [None])[0]
    plan_rollout(spec, checkout.commit, heads, only)  # validates --only and promotion gates before any build
    locations: dict[str, str] = {}
    for env_name in select_environments(spec, only):  # targets must resolve before anything is built
        location = t.location_for(spec, env_name)
        identity = {k: location[k] for k in ("function", "alias", "listen_port", "cluster", "service") if k in location}
        where = json.dumps(identity, sort_keys=True)
        if where in locations:
            raise SpecError(
                f"slipway.yaml: environments {locations[where]} and {env_name} would be served by the same target ({where})",
                hint="give each environment its own function_name / service (or a target whose template has {env})",
                ref="shared-function",
            )
        locations[where] = env_name
    if spec.artifact.type == "docker-image":  # the engine and the registry must be there before anything is built
        t.docker_client()
        t.registry_coordinates(registry_block, spec.app)

    # read-only checks of every environment's account before any test or build: fail fast, touch nothing
    target_checks = t.preflight_targets(spec, select_environments(spec, only), store_block)
    build_key = spec.build_key(checkout.commit, BUILDER_VERSION)
    preflight: list[dict] = []
    artifact = t.find_published_artifact(store_block, spec.app, build_key)
    if artifact is None:
        # the registry is asked first: an unreachable one or refused credentials stop the release before the tests
        image = t.find_pushed_image(registry_block, spec.app, image_tag(checkout.commit, build_key)) if spec.artifact.type == "docker-image" else None
        tests = t.run_app_tests(checkout, spec, build_key)
        if spec.artifact.type == "docker-image":
            if image is None:
                built = t.build_container_image(checkout, spec, build_key)
                image = t.push_container_image(registry_block, spec.app, built)
            artifact = t.record_image(store_block, image, checkout, spec, build_key, tests)
        else:
            built = t.build_artifact(checkout, spec)
            progress["built"] = built
            try:
                preflight = t.preflight_zip(built, checkout, spec)  # touch nothing before the zip is known to import
                progress["preflight"] = preflight + target_checks
                artifact = t.publish_artifact(store_block, built, checkout, spec, build_key, tests)
            finally:
                shutil.rmtree(Path(built["path"]).parent, ignore_errors=True)
    progress["artifact"] = artifact
    preflight += target_checks
    plan = plan_rollout(spec, checkout.commit, heads, only, release_id=artifact.release_id)
    logger.info("plan for %s:\n  %s", artifact.release_id, "\n  ".join(plan.describe()))
    emit("slipway.release.started", spec.app, release_id=artifact.release_id, commit=checkout.commit,
         environments=[step.environment for step in plan.steps])

    outcomes: list[StageOutcome] = []
    verdicts: dict[str, list[str]] = {}
    failure: str | None = None
    failed_at: tuple | None = None  # (environment, leaf error, ledger entries, outcome) of the first failure
    for step in plan.steps:
        if failure:
            head = t.read_heads(store_block, spec.app, [step.environment])[step.environment]
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "not-reached", "untouched"))
            continue
        state = deploy_environment(
            app=spec.app, environment=step.environment, spec=spec, artifact=artifact, action=step.action,
            reconcile_first=step.reconcile_first, store_block=store_block, lock_wait=lock_wait, return_state=True,
        )
        head = t.read_heads(store_block, spec.app, [step.environment])[step.environment]
        recorded = t.ledger_since(store_block, spec.app, step.environment, heads[step.environment].last_seq)
        touched = t.environment_touched(recorded)
        judged = [f"{e['verdict']} at {e['percent']}%" for e in recorded if e["kind"] == "canary-verdict"]
        judged += [e["message"] for e in recorded if e["kind"] == "alarm-fired"]
        if judged:
            verdicts[step.environment] = judged
        if state.is_completed():
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "live", "verified"))
            continue
        exc = state.result(raise_on_failure=False)
        reason = exc.message if isinstance(exc, SlipwayError) else (state.message or "failed")
        stage = exc.stage if isinstance(exc, SlipwayError) else "deploy"
        before = heads[step.environment]
        if not touched:  # failed before any deploy or rollback was recorded (a rejected approval, a held lock, …)
            live = (f"{head.live.release_id}" + (f" (version {head.live.version})" if head.live.version != head.live.release_id else "")
                    if head.live else "nothing")
            back = f"unchanged (still serving {live})"
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "failed", back))
        elif (head.in_progress is None and head.live and head.live.release_id == artifact.release_id
              and not any(e["kind"] == "rolled-back" for e in recorded)):  # (a flag redeploy rolls back to the same release)
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "live", f"verified, then: {reason}"))
            continue
        elif head.in_progress is None:
            back = f"rolled back to {head.live.release_id} (version {head.live.version})" if head.live else "nothing verified to return to (see `slipway history`)"
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "rolled-back", back))
        else:
            back = f"ROLLBACK DID NOT COMPLETE: {head.in_progress.message or 'see the rollback run'}"
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "rollback-failed", back))
        failure = f"release {artifact.release_id} failed at {stage}: {reason}; {step.environment} {back}"
        failed_at = (step.environment, exc, recorded, outcomes[-1])
    for env_name in plan.skipped:
        head = t.read_heads(store_block, spec.app, [env_name])[env_name]
        outcomes.append(outcome_from_head(env_name, head, artifact.release_id, "skipped", "not in --only"))
    order = {n: i for i, n in enumerate(names)}
    outcomes.sort(key=lambda o: order[o.environment])
    not_reached = [o.environment for o in outcomes if o.status == "not-reached"]
    if failure and not_reached:
        failure += f"; {', '.join(not_reached)} not touched"

    diagnosis = None
    if failed_at is not None:
        env_name, exc, recorded, outcome = failed_at
        diagnosis = _diagnose_failure(progress, checkout, checkout.repo_url, ref, exc, store_block, environment=env_name,
                                      ledger_entries=recorded, outcome=outcome)
    summary = {
        "app": spec.app, "release_id": artifact.release_id, "commit": checkout.commit, "artifact": artifact.model_dump(mode="json"),
        "outcomes": [o.model_dump(mode="json") for o in outcomes], "error": failure,
        "diagnosis": {k: diagnosis[k] for k in ("classification", "title", "next_action", "url")} if diagnosis else None,
    }
    create_markdown_artifact(
        key=_artifact_key("release", spec.app),
        markdown=release_report_markdown(
            app=spec.app, release_id=artifact.release_id, commit=checkout.commit, subject=checkout.subject, repo=checkout.repo_url,
            ref=ref, artifact={**artifact.model_dump(mode="json"), "uri": artifact.uri}, outcomes=outcomes, error=failure,
            verdicts=verdicts, ui_url=_run_ui_url(), preflight=preflight, diagnosis=diagnosis,
        ),
        description=f"Release {artifact.release_id} of {spec.app}",
    )
    logger.info("%s", render_summary(outcomes, artifact.release_id))
    emit("slipway.release.failed" if failure else "slipway.release.succeeded", spec.app, release_id=artifact.release_id,
         commit=checkout.commit, error=failure, outcomes={o.environment: o.status for o in outcomes})
    if failure:
        raise ReleaseFailed(failure, evidence=summary)
    return summary


__all__ = ["release", "rollback", "deploy_environment"]

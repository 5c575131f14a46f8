"""The ``release`` flow, read as the pipeline:

validate → check the store → clone → spec → plan and check the targets → (reuse | test → build → preflight → publish)
→ per environment, in promotion order, the ``deploy-environment`` subflow (flows/deploy.py), or, for one already live on
the release with nothing in progress, a re-verification in place (tasks/reverify.py) → report.

A failed stage fires the ``rollback`` subflow (flows/rollback.py) from the subflow's state hooks; later environments
are not touched, and the release ends Failed naming the stage, the check and the evidence. What happened to each
environment is decided from the ledger by ``slipway.rollout.outcome``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.deploy import deploy_environment
from flows.events import emit
from flows.failure import diagnose_failure
from flows.links import artifact_key, extend_history_artifact, run_ui_url
from flows.rollback import rollback
from slipway import BUILDER_VERSION
from slipway.artifact.image import image_tag
from slipway.core.errors import ReleaseFailed, SlipwayError, SpecError
from slipway.core.models import ArtifactRef, StageOutcome
from slipway.record.ledger import LedgerEntry
from slipway.record.report import failure_report_markdown, outcome_from_head, release_report_markdown, render_summary
from slipway.rollout import outcome as decide
from slipway.rollout.outcome import ReleaseProgress, StageFailure
from slipway.rollout.planning import RolloutPlan, plan_rollout, select_environments
from slipway.source.git import Checkout, discard_checkout, validate_ref, validate_repo_url
from slipway.spec.schema import Spec
from tasks import artifact_tasks as a, deploy_tasks as d, image_tasks as i, reverify as r
from tasks.freeze import refuse_frozen
from tasks.resolution import one_resolution_per_run
from tasks.wiring import docker_client, location_for, registry_coordinates


@flow(name="release", flow_run_name="release {repo_url}@{ref}")
def release(
    repo_url: str, ref: str = "HEAD", spec_path: str | None = None, only: list[str] | None = None, store_block: str = "default",
    git_token_block: str | None = None, registry_block: str = "default", lock_wait: float = 600, app: str | None = None,
    spec_digest: str | None = None, allow_older: bool = False, override_freeze: str | None = None,
) -> dict:
    """Release an artifact (Lambda zip or container image) from git through the spec's environments, verified,
    with automatic rollback. ``app``: the app this release must be (a spec naming another is refused);
    ``spec_digest``: use the spec an earlier release of ``app`` recorded, not the checkout's (promote does);
    ``allow_older``: deploy even where a newer commit is live (a deliberate downgrade; else that stage is superseded);
    ``override_freeze``: why this release may enter environments in a freeze window (each asks for an approval)."""
    validate_repo_url(repo_url)  # refused before anything runs
    validate_ref(ref)
    with one_resolution_per_run():  # the environments' subflows share this run's blocks and clients
        a.check_artifact_store(store_block)
        checkout, progress = None, ReleaseProgress(spec_path=spec_path, app=app, spec_digest=spec_digest, allow_older=allow_older,
                                                     override_freeze=override_freeze)
        try:
            checkout = a.clone_repo(repo_url, ref, git_token_block)
            spec = prepare(checkout, progress, only, store_block, registry_block)
            artifact = obtain_artifact(checkout, spec, progress, store_block, registry_block)
            return deploy_and_report(checkout, ref, spec, artifact, progress, only, store_block, lock_wait)
        except ReleaseFailed:
            raise  # it published its own report
        except Exception as exc:  # noqa: BLE001 - every failure after the clone leaves a record; re-raised below
            report_early_failure(exc, progress, checkout, repo_url, ref, store_block)
            raise
        finally:
            if checkout is not None:
                discard_checkout(checkout)


def prepare(checkout: Checkout, progress: ReleaseProgress, only: list[str] | None, store_block: str, registry_block: str) -> Spec:
    """The spec, the ledger heads and the plan; every target resolved and checked (read-only) before anything is built."""
    spec = progress.spec = a.release_spec(checkout, progress.spec_path, store_block, progress.app, progress.spec_digest)
    progress.heads = d.read_heads(store_block, spec.app, [e.name for e in spec.environments])
    selected = select_environments(spec, only)
    progress.first_env = (selected or [None])[0]
    plan_rollout(spec, checkout.commit, progress.heads, only)  # validates --only and promotion gates before any build
    _refuse_shared_targets(spec, selected)
    # an environment in a freeze window: refused here, before the build, unless overridden; one already live on this
    # commit would only be re-verified, which is no release (its deploy-environment run decides on the exact release)
    refuse_frozen(spec, [e for e in selected if not (progress.heads[e].live and progress.heads[e].live.commit == checkout.commit)],
                  progress.override_freeze)
    if spec.artifact.type == "docker-image":  # the engine and the registry must be there before anything is built
        docker_client()
        registry_coordinates(registry_block, spec.app)
    progress.preflight = d.preflight_targets(spec, selected, store_block)  # every environment's account, read-only
    return spec


def _refuse_shared_targets(spec: Spec, environments: list[str]) -> None:
    seen: dict[str, str] = {}
    for env_name in environments:
        location = location_for(spec, env_name)
        where = json.dumps({k: location[k] for k in ("function", "alias", "listen_port", "cluster", "service") if k in location},
                           sort_keys=True)
        if where in seen:
            raise SpecError(f"slipway.yaml: environments {seen[where]} and {env_name} would be served by the same target ({where})",
                            hint="give each environment its own function_name / service (or a target whose template has {env})",
                            ref="shared-function")
        seen[where] = env_name


def obtain_artifact(checkout: Checkout, spec: Spec, progress: ReleaseProgress, store_block: str, registry_block: str) -> ArtifactRef:
    """Build once: reuse what this commit and build configuration already published, else test, build and publish."""
    build_key = spec.build_key(checkout.commit, BUILDER_VERSION)
    artifact = a.find_published_artifact(store_block, spec.app, build_key, checkout.commit)
    if artifact is None and spec.artifact.type == "docker-image":
        # the registry is asked first: an unreachable one or refused credentials stop the release before the tests
        image = i.find_pushed_image(registry_block, spec.app, image_tag(checkout.commit, build_key))
        tests = a.run_app_tests(checkout, spec, build_key)
        if image is None:
            image = i.push_container_image(registry_block, spec.app, i.build_container_image(checkout, spec, build_key))
        artifact = i.record_image(store_block, image, checkout, spec, build_key, tests)
    elif artifact is None:
        tests = a.run_app_tests(checkout, spec, build_key)
        built = progress.built = a.build_artifact(checkout, spec)
        try:
            progress.preflight = a.preflight_zip(built, checkout, spec) + progress.preflight  # nothing published before it imports
            artifact = a.publish_artifact(store_block, built, checkout, spec, build_key, tests)
        finally:
            shutil.rmtree(Path(built.path).parent, ignore_errors=True)
    progress.artifact = artifact
    return artifact


def deploy_and_report(checkout: Checkout, ref: str, spec: Spec, artifact: ArtifactRef, progress: ReleaseProgress,
                      only: list[str] | None, store_block: str, lock_wait: float) -> dict:
    plan = plan_rollout(spec, checkout.commit, progress.heads, only, release_id=artifact.release_id)
    get_run_logger().info("plan for %s:\n  %s", artifact.release_id, "\n  ".join(plan.describe()))
    emit("slipway.release.started", spec.app, release_id=artifact.release_id, commit=checkout.commit,
         environments=[step.environment for step in plan.steps])
    spec_digest = a.record_spec(store_block, spec)
    outcomes, verdicts, failed = deploy_stages(spec, spec_digest, artifact, plan, progress, store_block, lock_wait, str(checkout.path))
    outcomes = decide.in_spec_order(outcomes, [e.name for e in spec.environments])
    failure = decide.finish_failure_line(failed.line if failed else None, outcomes)
    diagnosis = None
    if failed is not None:
        diagnosis = diagnose_failure(progress, checkout, checkout.repo_url, ref, failed.error, store_block,
                                     environment=failed.environment, ledger_entries=failed.recorded, outcome=failed.outcome)
    summary = report_release(checkout, ref, spec, artifact, outcomes, verdicts, failure, progress, diagnosis)
    if failure:
        raise ReleaseFailed(failure, evidence=summary)
    return summary


def deploy_stages(spec: Spec, spec_digest: str, artifact: ArtifactRef, plan: RolloutPlan, progress: ReleaseProgress,
                  store_block: str, lock_wait: float, checkout_path: str) -> tuple[list[StageOutcome], dict[str, list[str]], StageFailure | None]:
    """Each planned environment in order, until one fails or is superseded; the ones after it are not touched."""
    outcomes: list[StageOutcome] = []
    verdicts: dict[str, list[str]] = {}
    failed: StageFailure | None = None
    reverified: list[LedgerEntry] = []  # the verified entries recorded in place
    for step in plan.steps:
        if failed is not None or (outcomes and outcomes[-1].status == "superseded"):
            head = d.read_heads(store_block, spec.app, [step.environment])[step.environment]
            why = "untouched" if failed is not None else f"untouched: superseded in {outcomes[-1].environment}"
            outcomes.append(outcome_from_head(step.environment, head, artifact.release_id, "not-reached", why))
            continue
        if step.action == "verify-live" and not step.reconcile_first:  # unchanged here: no subflow, no lock, if it passes
            if quick := r.reverify_live(spec.app, step.environment, spec, artifact, store_block, progress.heads[step.environment]):
                outcomes.append(quick.outcome)
                reverified.append(quick.entry)
                continue
        state = deploy_environment(app=spec.app, environment=step.environment, spec_digest=spec_digest, artifact=artifact, action=step.action,
                                   reconcile_first=step.reconcile_first, store_block=store_block, lock_wait=lock_wait,
                                   checkout_path=checkout_path, allow_older=progress.allow_older,
                                   override_freeze=progress.override_freeze, return_state=True)
        outcome, failed, judged = stage_result(spec, artifact, step.environment, state, progress, store_block)
        outcomes.append(outcome)
        if judged:
            verdicts[step.environment] = judged
    for env_name in plan.skipped:
        head = d.read_heads(store_block, spec.app, [env_name])[env_name]
        outcomes.append(outcome_from_head(env_name, head, artifact.release_id, "skipped", "not in --only"))
    for entry in reverified:  # the other environments' deploy-environment runs published theirs
        extend_history_artifact(store_block, entry)
    return outcomes, verdicts, failed


def stage_result(spec: Spec, artifact: ArtifactRef, env_name: str, state, progress: ReleaseProgress,
                 store_block: str) -> tuple[StageOutcome, StageFailure | None, list[str]]:
    """What one environment's stage did, read from the ledger (``slipway.rollout.outcome.stage_outcome``)."""
    head = d.read_heads(store_block, spec.app, [env_name])[env_name]
    if state.is_completed() and (superseded := (state.result() or {}).get("superseded")):
        return outcome_from_head(env_name, head, artifact.release_id, "superseded", f"untouched: {superseded}"), None, []
    recorded = d.ledger_since(store_block, spec.app, env_name, progress.heads[env_name].last_seq)
    exc = None if state.is_completed() else state.result(raise_on_failure=False)
    outcome, line = decide.stage_outcome(
        env_name, head, recorded, artifact.release_id, completed=state.is_completed(),
        stage=exc.stage if isinstance(exc, SlipwayError) else "deploy",
        reason=exc.message if isinstance(exc, SlipwayError) else (state.message or "failed"),
        serving=None if state.is_completed() else d.serving_now(spec.app, env_name),  # the target's word, not only the ledger's
    )
    failed = StageFailure(env_name, exc, recorded, outcome, line) if line else None
    return outcome, failed, decide.canary_judgements(recorded)


def report_release(checkout: Checkout, ref: str, spec: Spec, artifact: ArtifactRef, outcomes: list[StageOutcome],
                   verdicts: dict[str, list[str]], failure: str | None, progress: ReleaseProgress, diagnosis: dict | None) -> dict:
    """The summary (the flow's result), the release report artifact, the log line and the event."""
    summary = {
        "app": spec.app, "release_id": artifact.release_id, "commit": checkout.commit, "artifact": artifact.model_dump(mode="json"),
        "outcomes": [o.model_dump(mode="json") for o in outcomes], "error": failure,
        "diagnosis": {k: diagnosis[k] for k in ("classification", "title", "next_action", "url")} if diagnosis else None,
    }
    create_markdown_artifact(
        key=artifact_key("release", spec.app),
        markdown=release_report_markdown(
            app=spec.app, release_id=artifact.release_id, commit=checkout.commit, subject=checkout.subject, repo=checkout.repo_url,
            ref=ref, artifact={**artifact.model_dump(mode="json"), "uri": artifact.uri}, outcomes=outcomes, error=failure,
            verdicts=verdicts, ui_url=run_ui_url(), preflight=progress.preflight, diagnosis=diagnosis,
        ),
        description=f"Release {artifact.release_id} of {spec.app}",
    )
    get_run_logger().info("%s", render_summary(outcomes, artifact.release_id))
    emit("slipway.release.failed" if failure else "slipway.release.succeeded", spec.app, release_id=artifact.release_id,
         commit=checkout.commit, error=failure, outcomes={o.environment: o.status for o in outcomes})
    return summary


def report_early_failure(exc: BaseException, progress: ReleaseProgress, checkout: Checkout | None, repo_url: str, ref: str,
                         store_block: str) -> None:
    """A failure before any environment (clone, spec, plan, tests, build, preflight, publish): record, diagnose, report."""
    from prefect.exceptions import Abort, Pause

    if isinstance(exc, (Abort, Pause)):  # cancellation and pauses are Prefect's control flow, not failures
        return
    diagnosis = diagnose_failure(progress, checkout, repo_url, ref, exc, store_block)
    if isinstance(exc, SlipwayError):
        create_markdown_artifact(
            key="release-failure",
            markdown=failure_report_markdown(repo=repo_url, ref=ref, commit=checkout.commit if checkout else None, error=exc.to_dict(),
                                             diagnosis=diagnosis),
            description=f"Release of {repo_url}@{ref} stopped at {exc.stage}",
        )


__all__ = ["release", "rollback", "deploy_environment"]

"""A failed release leaves a failure record (with the diff against the last verified release, computed while the
clone still exists) and runs the ``diagnose`` subflow on it. Best effort: the release's own error is what the run
reports, never the diagnosis's."""

from __future__ import annotations

from prefect import get_run_logger

from flows.diagnose import artifact_key as diagnosis_key, diagnose
from flows.links import artifact_url, current_run_id, run_ui_url
from slipway.core.errors import ApprovalRejected, ReleaseAborted, SlipwayError
from slipway.core.models import StageOutcome
from slipway.record.diagnose import FailureRecord
from slipway.rollout.outcome import ReleaseProgress
from slipway.source.git import Checkout
from slipway.spec.loading import declared_app
from tasks import diagnose_tasks as td
from tasks.artifact_tasks import release_id_for


def _delivered_flags(ledger_entries: list[dict] | None) -> dict | None:
    """The flags this release delivered (None: it failed before a deploy, so no flags went anywhere)."""
    return next(((e.get("detail") or {}).get("flags") for e in ledger_entries or []
                 if e.get("kind") == "deploy-started" and "flags" in (e.get("detail") or {})), None)


def _error_dict(exc: BaseException) -> dict:
    if isinstance(exc, SlipwayError):
        return exc.to_dict()
    return {"stage": "orchestration", "ref": type(exc).__name__, "message": f"{type(exc).__name__}: {str(exc)[:500]}", "evidence": {}}


def failure_record(
    progress: ReleaseProgress, checkout: Checkout, app: str, repo_url: str, ref: str, exc: BaseException, store_block: str,
    environment: str | None, ledger_entries: list[dict] | None, outcome: StageOutcome | None,
) -> FailureRecord:
    spec, artifact, built = progress.spec, progress.artifact, progress.built
    diff_env = environment or progress.first_env
    delivered = _delivered_flags(ledger_entries)
    new_size = artifact.size if artifact and not artifact.image else (built.size if built else None)
    diff = None
    heads = progress.heads
    if not (diff_env and diff_env in heads) and (newest := td.newest_live(store_block, app)):
        diff_env, heads = newest[0], {newest[0]: newest[1]}  # failed before the spec was read: the last verified release
    if diff_env and diff_env in heads:
        diff = td.release_diff(store_block, checkout, app, diff_env, progress.spec_path or "slipway.yaml",
                               heads[diff_env].live, new_size, delivered)
    env_keys: list[str] = []
    if spec is not None and diff_env:
        env_keys = sorted({**getattr(spec.artifact, "environment", {}), **spec.environment(diff_env).environment})
        env_keys += sorted(f"SLIPWAY_FLAG_{name.upper()}" for name in delivered or {})
    error = _error_dict(exc)
    return FailureRecord(
        app=app, environment=environment, run_id=current_run_id(), run_url=run_ui_url(), repo=repo_url, ref=ref, commit=checkout.commit,
        subject=checkout.subject, release_id=artifact.release_id if artifact else (release_id_for(checkout.commit, built.sha256) if built else None),
        stage=error.get("stage") or "deploy", error=error, outcome=outcome.message if outcome else None,
        outcome_status=outcome.status if outcome else None, ledger=ledger_entries or [], preflight=progress.preflight,
        env_keys=env_keys, diff=diff,
    )


def diagnose_failure(
    progress: ReleaseProgress, checkout: Checkout | None, repo_url: str, ref: str, exc: BaseException, store_block: str, *,
    environment: str | None = None, ledger_entries: list[dict] | None = None, outcome: StageOutcome | None = None,
) -> dict | None:
    """Record the failure and diagnose it; the diagnosis's headline, or None."""
    if isinstance(exc, (ApprovalRejected, ReleaseAborted)) or checkout is None:
        return None  # a decision, not a failure; or nothing cloned (the error says why)
    try:
        app = progress.spec.app if progress.spec is not None else declared_app(checkout.path, progress.spec_path)
        if not app:
            return None
        record = failure_record(progress, checkout, app, repo_url, ref, exc, store_block, environment, ledger_entries, outcome)
        key = td.record_failure(store_block, record)
        result = diagnose(app=app, environment=environment, record_key=key, store_block=store_block)
        result["url"] = artifact_url(diagnosis_key(app))
        return result
    except Exception as err:  # noqa: BLE001 - never hide the release's own failure behind the diagnosis's
        get_run_logger().warning("could not diagnose the failed release: %s", err)
        return None

"""An unchanged re-release's fast way through an environment already live on the release: the smoke checks against
the live version and a ``verified`` entry, as one task run in the release's own flow run (no ``deploy-environment``
subflow, no environment lock, nothing deployed or moved). Whenever it cannot decide alone it records nothing and
answers None, and the environment takes the full way (``flows/deploy.py``: under the lock, re-verify, roll back on
failure): something in progress, another release live, feature flags changed since the live version was deployed,
a failing check, the ledger moved on meanwhile, or an error on the way."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from slipway.core.models import ArtifactRef, StageOutcome
from slipway.record.ledger import EnvHead, LedgerEntry, deployed_flags
from slipway.record.report import outcome_from_head
from slipway.rollout import staged
from slipway.spec.schema import Spec
from tasks.deploy_tasks import read_env_flags
from tasks.wiring import env_context, env_ref


@dataclass(frozen=True)
class InPlace:
    """An environment re-verified in place: its outcome and the ``verified`` entry recorded."""

    outcome: StageOutcome
    entry: LedgerEntry


@task(name="reverify-live", task_run_name="re-verify {app}/{environment}", cache_policy=NO_CACHE)
def reverify_live(app: str, environment: str, spec: Spec, artifact: ArtifactRef, store_block: str, head: EnvHead) -> InPlace | None:
    """``app``: the spec's (named for the task run's name); ``head``: the environment's ledger head as the release read
    it. The environment's outcome when re-verified here; None when the full way must decide (nothing was recorded)."""
    logger = get_run_logger()
    try:
        ref = env_ref(spec, environment, store_block)
        ctx = env_context(ref)
        if ref.target_type == "lambda" and head.live is not None and (
                read_env_flags(store_block, app, environment) != deployed_flags(ctx.ledger, app, environment, head.live, scan=200)):
            return None  # the same artifact is deployed with the new flags, under the lock
        done = staged.reverify_in_place(ctx, artifact, head)
    except Exception as exc:  # noqa: BLE001 - the full way meets the same error and handles it (rollback, diagnosis)
        logger.warning("%s: could not re-verify in place (%s); taking the full way", environment, exc)
        return None
    if done is None:
        logger.info("%s: not re-verified in place; taking the full way (under the lock)", environment)
        return None
    result, entry, head = done
    for check in result.checks:
        logger.info("smoke %s: %s (version %s, %.0f ms)", check.name, check.detail, check.executed_version, check.duration_ms or 0)
    logger.info("%s already live on %s (version %s): re-verified in place", environment, artifact.release_id, head.live.version)
    return InPlace(outcome_from_head(environment, head, artifact.release_id, "live", "re-verified"), entry)

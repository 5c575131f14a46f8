"""The ``rollback`` flow: put an environment back on a verified release, verify it, record it.

It runs three ways: as the subflow a failed ``deploy-environment`` run's state hook fires; from a deployment trigger
where that hook could not do it (a crashed run, with only ``failed_run_id``; a ``slipway.rollback.needed`` event from a
hook whose rollback failed); and on demand (``slipway rollback``, the UI).
"""

from __future__ import annotations

import contextlib

from prefect import flow, get_run_logger

from flows.events import emit
from flows.links import publish_history_artifact
from slipway.core.errors import ApprovalRejected, CanaryFailed, ReleaseFailed, SlipwayError
from slipway.record.ledger import EnvHead
from slipway.rollout.staged import EnvRef
from tasks.deploy_tasks import roll_back_environment, roll_back_without_prefect
from tasks.locks import environment_lock
from tasks.wiring import open_store


def _rollback_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    if params.get("app") and params.get("environment"):
        return f"rollback {params['app']}/{params['environment']}"
    return f"rollback after run {str(params.get('failed_run_id') or '?').removeprefix('prefect.flow-run.')[:8]}"


@flow(name="rollback", flow_run_name=_rollback_run_name, log_prints=False)
def rollback(
    app: str = "", environment: str = "", to: str | None = None, reason: str = "", automatic: bool = False,
    store_block: str = "default", failed_run_id: str | None = None, lock_wait: float = 600, cause: dict | None = None,
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
    ref = recorded_env_ref(app, environment, store_block, automatic)
    if ref is None:
        return None  # the failed (or cancelled) run never touched this environment: nothing to roll back
    with environment_lock(app, environment, lock_wait):
        try:
            outcome = roll_back_environment(ref, to, reason, automatic, failed_run_id, cause)
        except Exception as exc:
            emit("slipway.rollback.failed", app, environment, reason=reason, error=str(exc)[:500], failed_run_id=failed_run_id)
            raise
    if outcome:
        emit("slipway.rollback.completed", app, environment, reason=reason, to_release=outcome.to_release,
             from_version=outcome.from_version, automatic=automatic, failed_run_id=failed_run_id)
    publish_history_artifact(store_block, app, environment)
    return outcome.__dict__ if outcome else None


def recorded_env_ref(app: str, environment: str, store_block: str, automatic: bool, head: EnvHead | None = None) -> EnvRef | None:
    """The environment as the ledger recorded it at its last deploy (``head``, read here when not given): a rollback
    needs no spec."""
    head = head or open_store(store_block)[1].head(app, environment)
    location = head.location or ({"function": head.function, "alias": head.alias or "live"} if head.function else None)
    if not location and automatic:
        return None
    if not location:
        raise ReleaseFailed(f"nothing has been deployed to {app}/{environment}",
                            hint="check the app and environment names (`slipway history APP`)", ref="nothing-deployed")
    return EnvRef(app=app, environment=environment, store_block=store_block, target_type=head.target_type or "lambda",
                  location=location, target_block=head.target_block)


def _roll_back_after_failed_run(failed_run_id: str, reason: str, store_block: str, lock_wait: float) -> dict:
    """Roll back what a failed/crashed run left in progress, found from the run itself (idempotent)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(failed_run_id)
        runs = [run] if (run.parameters or {}).get("environment") else client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    targets = [(r.parameters["app"], r.parameters["environment"], str(r.id), r.parameters.get("store_block", store_block))
               for r in runs if r.name.startswith("deploy ") and "app" in (r.parameters or {}) and "environment" in r.parameters]
    why = reason or f"run {run.name} ended {run.state.name if run.state else '?'}"
    done, checked = {}, []
    for app, env, run_id, block in targets:
        checked.append(f"{app}/{env}")
        if not _left_in_progress(app, env, run_id, block):  # read only: no subflow run (and no lock) for nothing to do
            get_run_logger().info("%s/%s: nothing of run %s is in progress (its own rollback ran): nothing to do", app, env, run_id)
            continue
        get_run_logger().info("rolling back %s/%s: run %s left it in progress", app, env, run_id)
        done[f"{app}/{env}"] = rollback(app=app, environment=env, reason=why, automatic=True, store_block=block,
                                        failed_run_id=run_id, lock_wait=lock_wait)
    return {"failed_run_id": failed_run_id, "rolled_back": {k: v for k, v in done.items() if v}, "checked": sorted(checked)}


def _left_in_progress(app: str, environment: str, run_id: str, store_block: str) -> bool:
    """Does the ledger show a deploy of ``run_id`` still in progress (the rollback under the lock decides again)?"""
    in_progress = open_store(store_block)[1].head(app, environment).in_progress
    return in_progress is not None and (in_progress.run_id in (None, run_id))


def _cause_of(exc: BaseException | None) -> dict | None:
    """A rollback caused by a canary is recorded with the verdict (or the alarm) that caused it."""
    if not isinstance(exc, CanaryFailed):
        return None
    verdict = exc.evidence.get("verdict") or {}
    return {"ref": exc.ref, "percent": exc.evidence.get("percent"), "verdict": verdict.get("verdict"),
            "reason": verdict.get("reason"), "alarms": exc.evidence.get("alarms")}


@contextlib.contextmanager
def rollback_even_without_prefect(app: str, environment: str):
    """Around an environment's deploy: when it fails and the Prefect API is unreachable (the server died), the rollback
    that the state hooks would start as a subflow cannot start; roll back here, from the ledger and the target, before
    the failure propagates. With the API up, nothing happens here and the hooks do it as usual."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Exception) and not prefect_reachable():
            reason = exc.message if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # recorded as rollback-failed in the ledger; the failure goes on up
                roll_back_without_prefect(app, environment, None, reason, _cause_of(exc))
        raise


def prefect_reachable(timeout: float = 3.0) -> bool:
    """Does the Prefect API answer its health check now (one request, no retries)?"""
    import httpx

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return True  # an ephemeral in-process API: it lives as long as this process
    try:  # any answer below 500 (a 401 from a server with authentication among them) is a server that is there
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def roll_back_failed_stage(flow, flow_run, state) -> None:
    """on_failure / on_crashed / on_cancellation hook of deploy-environment: fire the rollback subflow for it."""
    import logging

    params = flow_run.parameters
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read must not stop the rollback
        exc = None
    if isinstance(exc, ApprovalRejected):
        return  # stopped before the environment was touched: nothing to roll back
    reason = exc.message if isinstance(exc, SlipwayError) else f"{state.name}: {state.message}"
    try:
        rollback(app=params["app"], environment=params["environment"], reason=reason, automatic=True,
                 store_block=params.get("store_block", "default"), failed_run_id=str(flow_run.id), cause=_cause_of(exc))
    except Exception as err:  # noqa: BLE001 - recorded as rollback-failed in the ledger; the release reports it
        logging.getLogger("slipway").error("automatic rollback of %s/%s failed: %s", params["app"], params["environment"], err)
        # the rollback deployment's trigger (prefect.yaml) tries again on a worker: a failed run starts nothing else
        emit("slipway.rollback.needed", params["app"], params["environment"], failed_run_id=str(flow_run.id),
             reason=reason, error=str(err)[:300])


__all__ = ["rollback", "roll_back_failed_stage"]

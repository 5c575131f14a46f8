"""One release or rollback at a time per app and environment: a Prefect global concurrency limit.

The limit is created on demand (limit 1) and acquired with ``strict=True``: a missing limit must never silently
disable the lock (Prefect skips unknown limits otherwise). A run killed while holding it blocks others until the
lease expires (``lease_duration``, at least 60 s) — the ledger's in-progress record is what the next run
reconciles once it gets the lock.
"""

from __future__ import annotations

import contextlib
import re

from prefect import get_client
from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from slipway.errors import DeployError

LEASE_SECONDS = 60  # renewed while held; a killed holder blocks the environment for at most this long


def lock_name(app: str, env: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"slipway-{app}-{env}".lower())


def ensure_lock(app: str, env: str) -> str:
    name = lock_name(app, env)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, 1)
    return name


@contextlib.contextmanager
def environment_lock(app: str, env: str, wait_seconds: float):
    """Hold the environment's lock; wait up to ``wait_seconds`` for it (0: refuse at once if another run holds it)."""
    name = ensure_lock(app, env)
    acquired = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=max(wait_seconds, 0.5), strict=True, lease_duration=LEASE_SECONDS):
            acquired = True
            yield
    except AcquireConcurrencySlotTimeoutError as exc:
        if acquired:
            raise
        hint = f"waited {wait_seconds:g}s; retry later, or pass a longer --lock-wait"
        if _paused_here(app, env):
            hint = (f"a release of {app} is paused in {env} waiting for a decision: `slipway approve {app} {env}` "
                    f"lets it go on, `slipway approve {app} {env} --reject` stops it (a canary rolls back)")
        raise DeployError(f"another release or rollback of {app}/{env} is running", hint=hint, ref="environment-locked") from exc


def _paused_here(app: str, env: str) -> bool:
    """Is the run holding the lock a release paused for a human (approval or an INCONCLUSIVE canary)?"""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    try:
        with get_client(sync_client=True) as client:
            return bool(client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"deploy {app}/{env}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
            ), limit=1))
    except Exception:  # noqa: BLE001 - only improves a hint
        return False

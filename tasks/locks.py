"""One release or rollback at a time per app and environment: a Prefect global concurrency limit.

The limit is created on demand (limit 1) and acquired with ``strict=True``: a missing limit must never silently
disable the lock (Prefect skips unknown limits otherwise). The slot is held under a lease (``LEASE_SECONDS``, renewed
while the holder lives). A holder killed with SIGKILL cannot give it back; so the holder's lease id and flow runs are
kept in a Prefect variable, and the next run that finds the lock held by runs that have all ended (the worker marks a
killed run Crashed) gives that lease back at once instead of waiting for it to expire. Otherwise a dead holder blocks
the environment until its lease expires (at most ``LEASE_SECONDS``). Either way the ledger's in-progress record is
what the next run reconciles once it has the lock.
"""

from __future__ import annotations

import contextlib
import re

from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.exceptions import ObjectNotFound

from slipway.core.errors import DeployError
from tasks.prefect_gaps import (
    AcquireConcurrencySlotTimeoutError,
    acquire_concurrency_slots_with_lease,
    maintain_concurrency_lease,
    release_concurrency_slots_with_lease,
)

LEASE_SECONDS = 60  # renewed while held; a killed holder blocks the environment for at most this long
# Prefect's acquire timeout covers its HTTP round trips too: on a busy server a free lock can take seconds to grant,
# so a short wait is never shorter than this. "Refuse at once" (wait 0) reads the slot count instead.
MIN_ACQUIRE_SECONDS = 10.0


def lock_name(app: str, env: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"slipway-{app}-{env}".lower())


def ensure_lock(app: str, env: str) -> str:
    return _ensure(app, env)[0]


def _ensure(app: str, env: str) -> tuple[str, int]:
    """The lock's name and how many slots are held right now (creating the limit when missing)."""
    name = lock_name(app, env)
    with get_client(sync_client=True) as client:
        try:
            return name, client.read_global_concurrency_limit_by_name(name).active_slots
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, 1)
    return name, 0


@contextlib.contextmanager
def environment_lock(app: str, env: str, wait_seconds: float):
    """Hold the environment's lock; wait up to ``wait_seconds`` for it (0: refuse at once if another run holds it)."""
    name, held = _ensure(app, env)
    if held and _free_if_holder_ended(name):
        held = 0
    try:
        if wait_seconds <= 0 and held:
            raise AcquireConcurrencySlotTimeoutError(f"{name} is held")
        lease = acquire_concurrency_slots_with_lease([name], 1, timeout_seconds=max(wait_seconds, MIN_ACQUIRE_SECONDS),
                                                     lease_duration=LEASE_SECONDS, strict=True).lease_id
    except AcquireConcurrencySlotTimeoutError as exc:
        hint = f"waited {wait_seconds:g}s; retry later, or pass a longer --lock-wait"
        if _paused_here(app, env):
            hint = (f"a release of {app} is paused in {env} waiting for a decision: `slipway approve {app} {env}` "
                    f"lets it go on, `slipway approve {app} {env} --reject` stops it (a canary rolls back)")
        raise DeployError(f"another release or rollback of {app}/{env} is running", hint=hint, ref="environment-locked") from exc
    try:
        _set_holder(name, lease)
        with maintain_concurrency_lease(lease, LEASE_SECONDS, raise_on_lease_renewal_failure=True):
            yield
    finally:
        # The holder record is left in place: giving the slot back revokes its lease, and giving back a revoked lease
        # is a no-op on the server, so a stale record can never free another run's lock (the next holder overwrites
        # it). Deleting it cost one more write to the Prefect database per deploy, which a busy SQLite server answers
        # with 503 and Prefect's client retries after about 2 s.
        release_concurrency_slots_with_lease(lease)


# ---- who holds it: a Prefect variable per lock ------------------------------------------------------------------
def _holder_variable(name: str) -> str:
    return f"{name}-holder"[:255]


def _set_holder(name: str, lease: UUID) -> None:
    """Record the lease and the runs holding it: this run and the release it belongs to (the run a worker marks Crashed).
    One write: update the variable, create it on the first use (Prefect's ``Variable.set`` reads it twice more)."""
    import httpx
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.runtime import flow_run

    from tasks.resolution import resolution_run_id

    runs = [run for run in dict.fromkeys([flow_run.get_id(), resolution_run_id() or flow_run.get_root_flow_run_id()]) if run]
    value = {"lease": str(lease), "runs": [str(run) for run in runs]}
    try:
        with get_client(sync_client=True) as client:
            try:
                client.update_variable(VariableUpdate(name=_holder_variable(name), value=value))
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                client.create_variable(VariableCreate(name=_holder_variable(name), value=value))
    except Exception:  # noqa: BLE001 - only lets a dead holder's lock go sooner; the lease still expires
        pass


def _free_if_holder_ended(name: str) -> bool:
    """Give back the lock of a holder whose flow runs have ended (crashed, failed, cancelled): True when done.

    A run that ended cannot still be working under the lock: its process died (SIGKILL, OOM, a lost machine) without
    releasing the slot, and the worker or Prefect marked it. A run still Running is never touched: its lease decides.
    """
    from prefect.variables import Variable

    try:
        holder = Variable.get(_holder_variable(name), default=None)
        if not isinstance(holder, dict) or not holder.get("runs") or not holder.get("lease"):
            return False
        with get_client(sync_client=True) as client:
            states = {}
            for run in holder["runs"]:
                state = client.read_flow_run(UUID(run)).state
                states[run] = state
            ended = {run: state.name for run, state in states.items() if state is not None and state.is_final()}
            if not ended:
                return False
        release_concurrency_slots_with_lease(UUID(holder["lease"]))
        Variable.unset(_holder_variable(name))
    except Exception:  # noqa: BLE001 - cannot tell: wait for the lease as before
        return False
    try:
        get_run_logger().warning("the lock %s was held by %s, which ended without giving it back: released it", name,
                                 ", ".join(f"flow run {run} ({state})" for run, state in ended.items()))
    except Exception:  # noqa: BLE001 - outside a run
        pass
    return True


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


# ---- a guarded manual release: `slipway unlock APP ENV` ---------------------------------------------------------------
def unlock_environment(app: str, env: str) -> dict:
    """Free the lock of APP/ENV when no live holder has it: its holder's runs all ended, or the server no longer knows
    the holder's lease (a server restarted with leases in memory forgets them, and the slot then stays taken for good).
    Refused while the holder's lease is alive or a run of APP/ENV is still running: the lock is then doing its job.
    The ledger's in-progress record, if any, is reconciled by the next release or rollback under the lock."""
    import httpx

    from prefect.variables import Variable

    name = lock_name(app, env)
    with get_client(sync_client=True) as client:
        try:
            held = client.read_global_concurrency_limit_by_name(name).active_slots
        except ObjectNotFound:
            held = 0
        if not held:
            return {"lock": name, "released": False, "detail": f"{app}/{env} is not locked"}
        holder = Variable.get(_holder_variable(name), default=None)
        lease = holder.get("lease") if isinstance(holder, dict) else None
        alive = False
        if lease:
            try:
                client.renew_concurrency_lease(UUID(lease), LEASE_SECONDS)  # 410 Gone: the server does not know it
                alive = True
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code not in (404, 410):
                    raise
        running = _running_runs(client, app, env)
        if alive and running:
            raise DeployError(
                f"{app}/{env} is locked by a live run ({', '.join(running)})",
                hint="it is released when that run ends, or within 60 s if its process died; cancel the run in the Prefect UI "
                     "to stop it", ref="environment-locked",
            )
        if alive:  # the lease lives on but every run of the holder ended: give the lease back (as the next run would)
            release_concurrency_slots_with_lease(UUID(lease))
            how = "released the lease of a holder whose runs ended"
        elif running:
            raise DeployError(
                f"{app}/{env} is locked and a run of it is still running ({', '.join(running)}), although its lease is unknown",
                hint="if that run's process is gone, cancel or mark it crashed in the Prefect UI, then unlock again",
                ref="environment-locked",
            )
        else:
            client.release_concurrency_slots(names=[name], slots=held, occupancy_seconds=0)
            how = "freed a slot whose lease the server no longer knows" if lease else "freed a slot held with no recorded holder"
        with contextlib.suppress(Exception):
            Variable.unset(_holder_variable(name))
    return {"lock": name, "released": True, "detail": f"{app}/{env}: {how}; the next release or rollback reconciles what was in "
                                                      "progress (`slipway history` shows it)"}


def _running_runs(client, app: str, env: str) -> list[str]:
    """Runs of this environment's deploy or rollback that Prefect still shows as running."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        name=FlowRunFilterName(any_=[f"deploy {app}/{env}", f"rollback {app}/{env}"]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING, StateType.PAUSED])),
    ), limit=5)
    return [f"flow run {r.id} {r.state.name if r.state else '?'}" for r in runs]

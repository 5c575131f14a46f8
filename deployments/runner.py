"""The Prefect side of the ``slipway`` CLI: run the flows in this process against the configured API.

``slipway.cli.main`` imports this module lazily, only for commands that need Prefect, so that ``slipway``
itself stays Prefect-free and quick to start.
"""

from __future__ import annotations

import logging
from typing import Any

from slipway.core.errors import SlipwayError


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def ui_url_for_run(flow_run_id: Any) -> str | None:
    from flows.links import ui_url_for_run as url

    return url(flow_run_id)


class _NoTracebackForUserErrors(logging.Filter):
    """Terminal output only: a Slipway error (bad input, failed check) is told in one line, without a
    traceback. The Prefect API/UI logs keep the full record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SlipwayError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_console_tracebacks() -> None:
    seen = set()
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler) not in seen:
                seen.add(id(handler))
                if not any(isinstance(f, _NoTracebackForUserErrors) for f in handler.filters):
                    handler.addFilter(_NoTracebackForUserErrors())


def flush_prefect_workers(timeout: float = 10) -> None:
    """Send queued logs and events now (before a server this process talks to goes away)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


def _run(flow_fn, **params) -> tuple[Any, Any]:
    """Run a flow in this process, return (result or exception, flow_run_id).

    Without flow-run heartbeats: a sync flow run (and each subflow run) ends by joining the heartbeat thread, which
    sleeps in 1 s steps, so heartbeats cost up to a second per flow run. Nothing in Slipway reads them. A run that
    this process started and that is killed stays Running in Prefect either way (heartbeats only let an automation
    notice it); the ledger's in-progress record is what the next release reconciles. Runs on a worker keep
    Prefect's default: the worker marks a killed run Crashed and its rollback trigger fires."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    quiet_console_tracebacks()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = flow_fn(**params, return_state=True)
    result = state.result(raise_on_failure=False)
    run_id = getattr(state.state_details, "flow_run_id", None)
    return result, run_id


def run_release(
    repo_url: str, ref: str, spec_path: str | None, only: list[str] | None, store_block: str = "default",
    git_token_block: str | None = None, lock_wait: float = 600, allow_older: bool = False, override_freeze: str | None = None,
) -> dict:
    from flows.release import release

    result, run_id = _run(
        release, repo_url=repo_url, ref=ref, spec_path=spec_path, only=only or None, store_block=store_block,
        git_token_block=git_token_block, lock_wait=lock_wait, allow_older=allow_older, override_freeze=override_freeze,
    )
    return {"result": result, "run_url": ui_url_for_run(run_id) if run_id else None}


def run_rollback(app: str, environment: str, to: str | None, store_block: str = "default", lock_wait: float = 600) -> dict:
    from flows.rollback import rollback

    result, run_id = _run(
        rollback, app=app, environment=environment, to=to, reason="manual (slipway rollback)", store_block=store_block, lock_wait=lock_wait,
    )
    return {"result": result, "run_url": ui_url_for_run(run_id) if run_id else None}


def unlock(app: str, environment: str) -> dict:
    """`slipway unlock`: free the environment's lock unless a live run holds it (tasks.locks.unlock_environment)."""
    from tasks.locks import unlock_environment

    return unlock_environment(app, environment)


def check_blocks(spec) -> list[str]:
    """`slipway check --blocks`: the artifact store and each environment's target block exist on the server (one line
    each; the first missing one raises its one-line error)."""
    from tasks.wiring import resolve_target_block, store_block, target_kind

    lines = [f"artifact store: block 'default' ({store_block('default').bucket})"]
    for env in spec.environments:
        name, _ = resolve_target_block(env.name, env.target, target_kind(spec.target_type(env))[0])
        lines.append(f"{env.name}: {spec.target_type(env)} target block {name!r}")
    return lines


def read_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def serve_webhook(host: str, port: int, secret: bytes):
    from deployments.webhook import serve

    return serve(host, port, secret)


def declared_environments(app: str, store_block: str = "default") -> list[str] | None:
    """The environments APP's latest recorded spec declares (else those its ledger knows); None: APP was never released."""
    store, ledger = _store_and_ledger(store_block)
    spec = store.latest_spec(app)
    if spec is not None:
        return [e.name for e in spec.environments]
    return ledger.environments(app) or None


def _store_and_ledger(store_block: str):
    """The artifact store and the ledger, read without Prefect when the block allows it (see _fast_store)."""
    fast = _fast_store(store_block, "s3")
    if fast is None:
        from tasks.wiring import open_store

        return open_store(store_block)
    from slipway.artifact.store import ArtifactStore
    from slipway.record.ledger import Ledger

    block, (s3,) = fast
    return (ArtifactStore(s3, block["bucket"], block["prefix"], block["kms_key_id"], signer=block.get("signer")),
            Ledger(s3, block["bucket"], block["prefix"], kms_key_id=block["kms_key_id"], signer=block.get("signer")))


def read_diagnosis(app: str, environment: str | None, store_block: str = "default") -> dict:
    """The diagnosis of the latest failed release of APP (in ENV), from the record the release left: read-only, no
    flow (the release already published it in the UI as ``diagnosis-<app>``)."""
    from slipway.core.errors import InputError
    from slipway.record.diagnose import FailureRecord, diagnosis_environment, diagnosis_view, pick_failure_record

    store, ledger = _store_and_ledger(store_block)
    found = pick_failure_record(store.failure_records(app), environment)
    if found is None:
        raise InputError(f"no failed release of {app + '/' + environment if environment else app} is on record",
                         hint="diagnose reads the record a failed release leaves in the artifact store; `slipway history APP` shows what ran",
                         ref="nothing-to-diagnose")
    record = FailureRecord.model_validate(found[1])
    env = diagnosis_environment(record)
    return diagnosis_view(record, found[0].removeprefix(store.prefix), ledger.head(app, env) if env else None)


def run_diagnose(app: str, environment: str | None, store_block: str = "default") -> dict:
    from flows.diagnose import diagnose

    result, run_id = _run(diagnose, app=app, environment=environment, store_block=store_block)
    return {"result": result, "run_url": ui_url_for_run(run_id) if run_id else None}


def _fast_store(store_block: str, *services: str):
    """The store block read without importing Prefect (deployments/block_reader.py), or None to load it with Prefect."""
    import os

    from deployments.block_reader import store_clients

    api_url = os.environ.get("PREFECT_API_URL")
    return store_clients(api_url, store_block, *services) if api_url else None


def flags_client(store_block: str = "default"):
    """SSM in the artifact store's account and region: flags live beside the ledger."""
    fast = _fast_store(store_block, "ssm")
    if fast is not None:
        return fast[1][0]
    from tasks.wiring import store_client

    return store_client(store_block, "ssm")


def paused_runs(app: str, environment: str) -> list[Any]:
    """Paused ``deploy-environment`` runs of APP/ENV (waiting for an approval or a canary decision), oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterName, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"deploy {app}/{environment}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
            ),
            sort=FlowRunSort.START_TIME_ASC,
        )


def approve(app: str, environment: str, *, approve: bool, reason: str, approver: str) -> dict:
    """Answer the paused release of APP/ENV (Prefect has no CLI to resume a paused run)."""
    from prefect.flow_runs import resume_flow_run

    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    runs = [r for r in paused_runs(app, environment)  # a run killed while paused stays PAUSED until its pause expires
            if not (r.state and r.state.state_details.pause_timeout and r.state.state_details.pause_timeout < now)]
    if not runs:
        raise SlipwayError(
            f"no release of {app} is waiting for a decision in {environment}",
            hint="`slipway history APP` shows what happened; a release pauses only when its environment has approval: required "
                 "or analysis.inconclusive: pause",
            ref="nothing-to-approve",
        )
    if len(runs) > 1:
        names = ", ".join(str(r.id) for r in runs)
        raise SlipwayError(f"{len(runs)} paused runs of {app}/{environment}: {names}", hint="answer each in the Prefect UI", ref="ambiguous-approval")
    run = runs[0]
    try:
        resume_flow_run(run.id, run_input={"approve": approve, "reason": reason, "approver": approver})
    except Exception as exc:  # noqa: BLE001 - the server refused (answered meanwhile, expired, invalid input)
        raise SlipwayError(f"could not answer the paused run {run.id} of {app}/{environment}: {exc}",
                           hint="answer it in the Prefect UI, or see `slipway history APP`", ref="approval-refused") from exc
    release_id = ((run.parameters or {}).get("artifact") or {}).get("release_id")
    return {"flow_run_id": str(run.id), "run_url": ui_url_for_run(run.id), "release_id": release_id}


def request_control(app: str, environment: str, action: str, reason: str, store_block: str = "default") -> dict:
    """`slipway abort` / `slipway promote-now`: the request goes into the ledger, where the baking canary finds it."""
    from slipway.rollout.progressive import request_control as record

    return record(_store_and_ledger(store_block)[1], app, environment, action, reason)


def read_history(app: str, environment: str | None, store_block: str = "default"):
    """The ledger of APP (one environment or all) and the heads: a read that starts no flow."""
    return ledger_view(_store_and_ledger(store_block)[1], app, environment)


def ledger_view(ledger, app: str, environment: str | None):
    """(entries newest first, head per environment), each entry read once: the heads are folded from the entries
    (what the checkpoint caches), so a history costs one list and one read per entry."""
    import functools

    from slipway.record.ledger import EnvHead, fold

    envs = [environment] if environment else ledger.environments(app)
    entries = {env: ledger.entries(app, env) for env in envs}
    heads = {env: functools.reduce(fold, entries[env], EnvHead(app=app, environment=env)) for env in envs}
    return sorted((e for found in entries.values() for e in found), key=lambda e: (e.at, e.seq), reverse=True), heads


def read_stats(app: str | None, since: str = "30d", store_block: str = "default", until: str | None = None) -> list:
    """The DORA figures of APP (or every app in the ledger) over the window, from the ledger and each release's
    provenance (commit dates) and failure records (causes): a read that starts no flow."""
    from datetime import datetime, timezone

    from slipway.record.stats import collect, parse_since

    store, ledger = _store_and_ledger(store_block)
    now = datetime.now(timezone.utc)
    return collect(store, ledger, [app] if app else ledger.apps(), parse_since(since, now), parse_since(until, now) if until else now)


def save_local_blocks(
    endpoint: str, bucket: str, role_arn: str, region: str, registry: str | None = None, proxy_root: str | None = None,
    health_timeout: float = 60,
) -> list[str]:
    from deployments.local_blocks import save_local_blocks as save

    return save(endpoint, bucket, role_arn, region, registry=registry, proxy_root=proxy_root, health_timeout=health_timeout)


__all__ = ["run_release", "run_rollback", "read_history", "read_stats", "save_local_blocks", "approve", "paused_runs", "SlipwayError"]

"""Thin tasks for failure triage: compute the diff against the last verified release, store the failure record."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from slipway.record.diagnose import FailureRecord, ReleaseDiff, compute_diff, pick_failure_record
from slipway.source.git import Checkout
from slipway.record.ledger import LiveRelease, deployed_flags
from tasks.wiring import TRANSIENT_RETRIES, open_store


def _flag_lines(old: dict, new: dict) -> list[str]:
    from slipway.record.flags import diff_flags

    return diff_flags(old, new)


@task(name="release-diff", cache_policy=NO_CACHE)
def newest_live(store_block: str, app: str):
    """(environment, head) of the environment whose live release was verified last: the baseline of a failure that
    came before the spec was read (a typo'd key, a renamed handler), when no environment is known yet. Best effort."""
    try:
        _, ledger = open_store(store_block)
        live = [(env, head) for env in ledger.environments(app) if (head := ledger.head(app, env)).live is not None]
    except Exception as exc:  # noqa: BLE001 - a diagnosis without a diff is still a diagnosis
        get_run_logger().warning("could not read the ledger of %s for a baseline: %s", app, exc)
        return None
    return max(live, key=lambda pair: pair[1].live.verified_at or "") if live else None


def release_diff(
    store_block: str, checkout: Checkout, app: str, environment: str, spec_path: str, baseline: LiveRelease | None,
    new_size: int | None, new_flags: dict | None = None,
) -> ReleaseDiff | None:
    """Best effort: a diagnosis without a diff is still a diagnosis."""
    try:
        store, ledger = open_store(store_block)
        baseline_size = None
        if baseline is not None and baseline.artifact_sha256 and not baseline.image:
            manifest = store.read_manifest(app, baseline.artifact_sha256)
            baseline_size = manifest.artifact_size if manifest else None
        baseline_flags = deployed_flags(ledger, app, environment, baseline) if baseline else {}
        return compute_diff(
            checkout.path, environment=environment, new_commit=checkout.commit, spec_path=spec_path,
            baseline_release=baseline.release_id if baseline else None, baseline_commit=baseline.commit if baseline else None,
            baseline_size=baseline_size, new_size=new_size, baseline_flags=baseline_flags, new_flags=new_flags,
            flag_lines=_flag_lines if new_flags is not None else None,  # not deployed: no flags were delivered
        )
    except Exception as exc:  # noqa: BLE001 - never hide the release's own failure behind the diff's
        get_run_logger().warning("could not compute the diff against the last verified release of %s/%s: %s", app, environment, exc)
        return None


@task(name="record-failure", **TRANSIENT_RETRIES)
def record_failure(store_block: str, record: FailureRecord) -> str:
    store, _ = open_store(store_block)
    key = store.put_failure_record(record.app, record.at, record.run_id, record.model_dump(mode="json"))  # idempotent on retry
    get_run_logger().info("failure record: s3://%s/%s", store.bucket, key)
    return key.removeprefix(store.prefix)


@task(name="read-failure-record", **TRANSIENT_RETRIES)
def read_failure_record(store_block: str, app: str, environment: str | None, record_key: str | None) -> tuple[str, dict] | None:
    store, _ = open_store(store_block)
    if record_key:
        data = store.read_failure_record(record_key)
        return (record_key, data) if data else None
    found = pick_failure_record(store.failure_records(app), environment)
    return (found[0].removeprefix(store.prefix), found[1]) if found else None

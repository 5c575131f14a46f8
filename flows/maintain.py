"""Operating what is live: ``verify`` (is every environment still serving its verified release, and passing its
checks?), ``promote`` (move a verified release to the next environment without rebuilding) and ``control`` (abort a
baking canary, or promote it now: what `slipway abort` / `slipway promote-now` do, from the Prefect UI)."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.events import emit
from flows.links import artifact_key
from flows.release import release
from flows.rollback import recorded_env_ref
from slipway.core.errors import DeployError, ReleaseFailed
from tasks.deploy_tasks import check_environment
from tasks.locks import environment_lock
from tasks.wiring import open_store


@flow(name="verify", flow_run_name="verify live environments")
def verify_live(apps: list[str] | None = None, heal: bool = False, store_block: str = "default") -> dict:
    """For every app and environment in the ledger: the target serves the live release and its smoke checks pass.

    Drift (the target serves another version than the ledger's live one) and failing checks are reported in a
    table artifact and as ``slipway.verify.drift`` / ``slipway.verify.failing`` events; with ``heal``, a drifted
    environment is put back on its live release. An environment a release is working on is skipped (its lock is
    held). Ends Failed when a problem remains, so a schedule's failures show in the UI and can notify.
    """
    logger = get_run_logger()
    _, ledger = open_store(store_block)
    rows, problems = [], []
    for app in apps or ledger.apps():
        for env in ledger.environments(app):
            head = ledger.head(app, env)
            ref = recorded_env_ref(app, env, store_block, automatic=True, head=head) if head.live else None
            if ref is None:
                continue
            try:
                with environment_lock(app, env, 0):
                    result = check_environment(ref, heal)
            except DeployError as exc:
                if exc.ref != "environment-locked":
                    raise
                result = {"status": "busy", "detail": "a release or rollback holds the lock: not checked"}
            rows.append({"app": app, "environment": env, "status": result["status"], "release": result.get("release_id"),
                         "serving": result.get("serving"), "healed": result.get("healed", False), "detail": result["detail"]})
            if result["status"] in ("drift", "failing"):
                emit(f"slipway.verify.{result['status']}", app, env, **{k: v for k, v in result.items() if k != "status"})
                if not result.get("healed"):
                    problems.append(f"{app}/{env}: {result['status']}: {result['detail']}")
    create_table_artifact(key=artifact_key("verify", "live"), table=rows or [{"status": "nothing live"}],
                          description="What runs vs. what the ledger says is live")
    logger.info("checked %d environment(s): %d problem(s)", len(rows), len(problems))
    if problems:
        raise ReleaseFailed(f"{len(problems)} environment(s) not as the ledger says: " + "; ".join(problems),
                            hint="heal=true puts drifted environments back; a failing live release needs a rollback or a fix",
                            ref="verify-failed")
    return {"checked": rows}


@flow(name="promote", flow_run_name="promote {app} {from_env} → {to_env}")
def promote(
    app: str,
    from_env: str,
    to_env: str,
    release_id: str | None = None,
    spec_path: str | None = None,
    store_block: str = "default",
    git_token_block: str | None = None,
    registry_block: str = "default",
    lock_wait: float = 600,
) -> dict:
    """Release what is verified in ``from_env`` (its live release, or ``release_id``) to ``to_env``: the same commit,
    the same artifact (found through the store's build pointer: nothing is rebuilt or re-tested), the same gates."""
    store, ledger = open_store(store_block)
    head = ledger.head(app, from_env)
    chosen = head.verified_release(release_id) if release_id else head.live
    if chosen is None or not head.eligible(chosen):
        what = f"release {release_id}" if release_id else "nothing"
        raise ReleaseFailed(f"{what} is verified and live-eligible in {app}/{from_env}", hint="see `slipway history APP`",
                            ref="nothing-to-promote")
    provenance = store.provenance(app, (chosen.artifact_sha256 or "").removeprefix("sha256:"), chosen.release_id)
    if provenance is None:
        raise ReleaseFailed(f"no provenance manifest for {chosen.release_id} in the artifact store",
                            hint="release it from git instead (`slipway release`)", ref="manifest-missing")
    get_run_logger().info("promoting %s (commit %s) from %s to %s", chosen.release_id, chosen.commit, from_env, to_env)
    # the spec the release was made with, recorded by its digest; a release older than that record: the checkout's,
    # which must still describe this app
    recorded = provenance.spec_digest if not spec_path and store.has_spec(app, provenance.spec_digest) else None
    return release(repo_url=provenance.repo, ref=chosen.commit or provenance.commit, spec_path=spec_path, only=[to_env],
                   store_block=store_block, git_token_block=git_token_block, registry_block=registry_block, lock_wait=lock_wait,
                   app=app, spec_digest=recorded)


__all__ = ["verify_live", "promote", "control", "delivery_stats"]


@flow(name="control", flow_run_name="{action} {app}/{environment}")
def control(app: str, environment: str, action: Literal["abort", "promote-now"], reason: str = "", store_block: str = "default") -> dict:
    """``abort``: the canary baking in ENVIRONMENT stops and traffic goes back to the stable version; ``promote-now``:
    its remaining bakes are skipped and it is promoted to 100%. Recorded in the ledger with the reason; the release's
    own run acts on it within seconds."""
    from prefect.runtime import flow_run

    from slipway.rollout.progressive import request_control

    out = request_control(open_store(store_block)[1], app, environment, action, reason, actor=f"Prefect UI (run {flow_run.get_name()})")
    get_run_logger().info("%s recorded for release %s of %s/%s", action, out["release_id"], app, environment)
    return out


@flow(name="stats", flow_run_name="delivery figures")
def delivery_stats(apps: list[str] | None = None, since: str = "30d", store_block: str = "default") -> list[dict]:
    """The four DORA figures (deployment frequency, lead time for changes, change failure rate, time to restore) per
    app and environment, from the ledger, and failed releases by cause and week: one markdown artifact per app
    (``dora-<app>``). Schedule it (daily) to watch whether releases fail less."""
    from datetime import datetime, timezone

    from prefect.artifacts import create_markdown_artifact

    from slipway.record.stats import collect, parse_since, render_markdown

    store, ledger = open_store(store_block)
    now = datetime.now(timezone.utc)
    stats = collect(store, ledger, apps or ledger.apps(), parse_since(since, now), now)
    for s in stats:
        create_markdown_artifact(key=artifact_key("dora", s.app), markdown=render_markdown(s),
                                 description=f"Delivery figures of {s.app} since {s.since:%Y-%m-%d}")
    get_run_logger().info("delivery figures for %d app(s) since %s", len(stats), since)
    return [s.row(e) for s in stats for e in s.environments]

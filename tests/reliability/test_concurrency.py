"""Concurrency and load (issue 7).

1. Five releases of one app to one environment started at the same moment, in one process (one thread each): the
   environment's lock (a Prefect global concurrency limit) lets them deploy one at a time. Checked from the durable
   record, not from logs: the ledger's entries never interleave, none is lost, the last release to finish is live,
   and the Lambda alias serves what the ledger says.
2. Twenty apps released in parallel through one Prefect server and one process worker (runs of the release/release
   deployment, as `prefect deployment run` creates them, on the worker of tests/flows/test_worker_e2e.py), marked
   ``load``: every release completes and every app's ledger holds exactly one verified entry. Prints the wall time,
   per-release times and (with SLIPWAY_LOAD_COUNTS=1,5,20) a growth table.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest


# tests/flows is on sys.path when pytest collects it (rootdir-relative "prepend" imports); make it so when this file
# runs alone, to share the worker fixture the way tests/flows share helpers (`from test_cli import slipway`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from test_worker_e2e import worker  # noqa: E402,F401  (a module-scoped fixture, re-exported)

OUTCOMES = {"verified", "verify-failed", "rolled-back", "rollback-failed"}
DEPLOY_KINDS = {"deploy-started", "deployed", "traffic-shifted", "canary-verdict", "verified", "verify-failed"}  # the deploying run's own


def ledger(app: str, env: str):
    from tasks.wiring import open_store

    store_ledger = open_store("default")[1]
    return store_ledger.entries(app, env), store_ledger.head(app, env)


def lambda_client(prefect_api):
    import boto3

    return boto3.client("lambda", endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def flow_runs(ids) -> dict:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return {str(i): client.read_flow_run(i) for i in ids}


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def segments(entries) -> list[list]:
    """The ledger cut at every deploy-started: one segment per deploy, in ledger order."""
    cut: list[list] = []
    for entry in entries:
        if entry.kind == "deploy-started":
            cut.append([entry])
        else:
            assert cut, f"entry {entry.seq} ({entry.kind}) comes before any deploy-started"
            cut[-1].append(entry)
    return cut


async def deploy_subflows_running(run_name: str, count: int, timeout: float) -> set[str]:
    """Wait (event-driven, bounded) until ``count`` flow runs named ``run_name`` have entered Running."""
    import anyio
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.schemas.events import ResourceSpecification

    wanted = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Running"]),
                         resource=EventResourceFilter(labels=ResourceSpecification({"prefect.resource.name": run_name})))
    seen: set[str] = set()
    with anyio.move_on_after(timeout):
        async with get_events_subscriber(filter=wanted) as events:  # the server backfills events already emitted
            async for event in events:
                seen.add(event.resource.id)
                if len(seen) >= count:
                    break
    return seen


# ---- 1. five concurrent releases of one app to one environment --------------------------------------------------
def test_five_concurrent_releases_of_one_app_to_dev_deploy_one_at_a_time_and_lose_nothing(prefect_api, app_repo):
    from flows.release import release
    from tasks.locks import environment_lock

    repo = app_repo("conc-five")
    src = repo.path / "src" / "app.py"
    refs = {"v1": "1"}  # tag -> the VERSION its handler reports
    for n in range(2, 6):  # distinct code: distinct artifacts and Lambda versions, so the alias check means something
        src.write_text(src.read_text().replace(f'VERSION = "{n - 1}"', f'VERSION = "{n}"'))
        repo.commit(f"v{n}", tag=f"v{n}")
        refs[f"v{n}"] = str(n)

    # Prefect's settings (PREFECT_API_URL from the prefect_api fixture) live in context variables, which a new thread
    # does not inherit: each thread runs its flow in a copy of this thread's context, or it would start an
    # ephemeral server of its own.
    results: dict[str, dict] = {}
    threads: list[threading.Thread] = []

    async def start_and_wait_until_all_wait_for_the_lock() -> set[str]:
        loop = asyncio.get_running_loop()
        one_finished = asyncio.Event()  # a release that ends before its deploy (a failed build) stops the wait

        def run(ref: str) -> None:
            started = time.monotonic()
            try:
                # allow_older: all five deploy, one after the other, whatever their order (without it the older ones
                # are superseded by the newest waiting: tests/flows/test_superseded.py); this test is about the lock
                state = release(repo_url=repo.url, ref=ref, only=["dev"], lock_wait=900, allow_older=True, return_state=True)
                results[ref] = {"state": state, "seconds": time.monotonic() - started}
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results[ref] = {"error": repr(exc), "seconds": time.monotonic() - started}
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed once all five were waiting
                    loop.call_soon_threadsafe(one_finished.set)

        threads.extend(threading.Thread(target=contextvars.copy_context().run, args=(run, ref), name=f"release-{ref}", daemon=True)
                       for ref in refs)
        for thread in threads:
            thread.start()
        running = asyncio.ensure_future(deploy_subflows_running(f"deploy {repo.app}/dev", len(refs), timeout=600))
        early = asyncio.ensure_future(one_finished.wait())
        await asyncio.wait({running, early}, return_when=asyncio.FIRST_COMPLETED)
        early.cancel()
        if not running.done():
            running.cancel()
            return set()
        return running.result()

    # The five builds finish at different times; to make all five contend for the lock at once, this test holds it
    # until every release's deploy-environment subflow is running (waiting for it), then lets go.
    wall = time.monotonic()
    with environment_lock(repo.app, "dev", wait_seconds=5):
        waiting = asyncio.run(start_and_wait_until_all_wait_for_the_lock())
        ended_early = {ref: r.get("error") or f"{r['state'].name}: {r['state'].message}" for ref, r in results.items()}
        assert len(waiting) == len(refs), f"ended before all five were waiting for the lock this test holds: {ended_early}"
        assert ledger(repo.app, "dev")[0] == []  # all five wait: nothing is recorded while the lock is held
        let_go = datetime.now(timezone.utc)
    for thread in threads:
        thread.join(timeout=900)
    wall = time.monotonic() - wall
    assert not any(thread.is_alive() for thread in threads), "a release thread did not finish within 900 s"
    assert not [r for r in results.values() if "error" in r], {k: r.get("error") for k, r in results.items()}

    # the ledger first: a broken lock shows here as interleaved deploys (and then as failed releases)
    entries, head = ledger(repo.app, "dev")
    kinds = [(e.seq, e.kind, e.release_id) for e in entries]
    # no lost entries: every sequence number from 1 to N claimed exactly once, in order
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), kinds
    # each deploy-started is followed by its own outcome before the next deploy-started (runs never overlap)
    deploys = segments(entries)
    assert len(deploys) == len(refs), kinds
    for deploy in deploys:
        started, own = deploy[0], [e for e in deploy if e.kind in DEPLOY_KINDS]
        assert {(e.release_id, e.run_id) for e in own} == {(started.release_id, started.run_id)}, f"interleaved: {kinds}"
        assert any(e.kind in OUTCOMES for e in deploy), f"deploy of {started.release_id} (seq {started.seq}) has no outcome: {kinds}"

    states = {ref: r["state"] for ref, r in results.items()}
    failed = {ref: (s.name, s.message) for ref, s in states.items() if not s.is_completed()}
    completed = {ref: s for ref, s in states.items() if s.is_completed()}
    release_of = {ref: s.result()["release_id"] for ref, s in completed.items()}
    ref_of = {rid: ref for ref, rid in release_of.items()}
    verified = [e for e in entries if e.kind == "verified"]
    assert len(verified) == len(completed), kinds
    assert not failed, f"with lock_wait=900 every release should complete: {failed}"
    assert len(set(release_of.values())) == len(refs)
    assert all([e.kind for e in deploy] == ["deploy-started", "deployed", "verified"] for deploy in deploys), kinds
    assert sorted(d[0].release_id for d in deploys) == sorted(release_of.values())
    # each deploy ran under its own deploy-environment subflow, and those subflows never overlapped in time
    subflows = flow_runs(d[0].run_id for d in deploys)
    for before, after in zip(deploys, deploys[1:]):
        ended = subflows[before[0].run_id].end_time
        assert ended is not None and ended <= at(after[0].at), (
            f"{before[0].release_id}'s deploy ended at {ended}, after {after[0].release_id}'s deploy-started at {after[0].at}")

    # the last release to finish is live, and the alias serves the ledger's live version
    releases = flow_runs(s.state_details.flow_run_id for s in completed.values())
    finished_last = max(completed, key=lambda ref: releases[str(completed[ref].state_details.flow_run_id)].end_time)
    assert head.in_progress is None and head.live is not None
    assert head.live.release_id == verified[-1].release_id == release_of[finished_last], (
        head.live.release_id, verified[-1].release_id, finished_last)
    client = lambda_client(prefect_api)
    alias = client.get_alias(FunctionName=f"{repo.app}-dev", Name="live")
    assert alias["FunctionVersion"] == head.live.version == verified[-1].version
    assert not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    reply = client.invoke(FunctionName=f"{repo.app}-dev", Qualifier="live", Payload=b'{"path": "/health"}')
    body = json.loads(json.loads(reply["Payload"].read())["body"])
    assert body == {"ok": True, "version": refs[finished_last]}

    # figures: "waited" = from the test letting go of the lock (or the subflow's start, if later) to the release's
    # deploy-started entry: the lock wait plus the reconcile and the Lambda version publish that precede the entry under
    # the lock; "held" = deploy-started to the subflow's end; "ended" = the subflow's end, from the test letting go
    waits = {ref_of[d[0].release_id]: (at(d[0].at) - max(subflows[d[0].run_id].start_time, let_go)).total_seconds() for d in deploys}
    holds = {ref_of[d[0].release_id]: (subflows[d[0].run_id].end_time - at(d[0].at)).total_seconds() for d in deploys}
    print(f"\n5 concurrent releases of {repo.app} to dev: wall {wall:.1f}s; ledger entries {len(entries)} "
          f"(seq 1..{entries[-1].seq}, contiguous), deploys {len(deploys)}, verified {len(verified)}, "
          f"completed releases {len(completed)}, failed {len(failed)}; max lock wait {max(waits.values()):.1f}s")
    print(f"{'ref':<4} {'release':<20} {'order':>5} {'seconds':>8} {'waited':>7} {'held':>6} {'ended':>6}")
    for i, deploy in enumerate(deploys, 1):
        ref = ref_of[deploy[0].release_id]
        ended = (subflows[deploy[0].run_id].end_time - let_go).total_seconds()
        print(f"{ref:<4} {deploy[0].release_id:<20} {i:>5} {results[ref]['seconds']:>8.1f} {waits[ref]:>7.1f} {holds[ref]:>6.1f} {ended:>6.1f}")
    print(f"live: {head.live.release_id} (version {head.live.version}, {finished_last}, finished last); alias live -> {alias['FunctionVersion']}")


# ---- 2. many apps in parallel through one Prefect server and one process worker ----------------------------------
# The local stack's Prefect server runs on SQLite, on the same 2 cores as the worker's flow processes. Unlimited, 20
# releases at once overload it ("database is locked" → 503 after the client's retries: a run the worker could not
# submit ends Crashed). docs/scale.md says to bound parallel releases with the pool's concurrency limit:
# this test does that; SLIPWAY_LOAD_POOL_LIMIT=0 runs them unbounded (to reproduce the overload).
POOL_LIMIT = int(os.environ.get("SLIPWAY_LOAD_POOL_LIMIT", "4"))
# Growth figures: SLIPWAY_LOAD_COUNTS=1,5,20 releases 1, then 5, then 20 apps (about 50 s more than 20 alone).
COUNTS = [int(n) for n in os.environ.get("SLIPWAY_LOAD_COUNTS", "20").split(",")]


@contextlib.contextmanager
def pool_concurrency_limit(limit: int | None):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    with get_client(sync_client=True) as client:
        before = client.read_work_pool("slipway").concurrency_limit
        client.update_work_pool("slipway", WorkPoolUpdate(concurrency_limit=limit))
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            client.update_work_pool("slipway", WorkPoolUpdate(concurrency_limit=before))


async def release_through_the_worker(repos, timeout: float) -> dict:
    """Queue a run of the release/release deployment per repo, as `prefect deployment run release/release -p repo_url=...
    -p ref=load -p 'only=["dev"]'` does (the same client call, made here: twenty `prefect` CLI processes would cost ~50
    CPU-seconds of a 2-core machine before any release runs), one request after the other (twenty concurrent
    create-flow-run requests already meet "database is locked" on the local SQLite server); then wait for every run to
    end with the client's event-driven wait helper. Returns the finished runs by app and the times."""
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run

    started = time.monotonic()
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("release/release")
        created = [await client.create_flow_run_from_deployment(
            deployment.id, parameters={"repo_url": repo.url, "ref": "load", "only": ["dev"]}) for repo in repos]
        submitted = time.monotonic() - started
        assert all(run.state.type == StateType.SCHEDULED for run in created)

        async def finish(run_id):
            try:
                return await wait_for_flow_run(run_id, timeout=timeout, client=client)
            except FlowRunWaitTimeout:  # reported with the state it is stuck in
                return await client.read_flow_run(run_id)

        finished = await asyncio.gather(*(finish(run.id) for run in created))
    return {"runs": {repo.app: run for repo, run in zip(repos, finished)}, "wall": time.monotonic() - started,
            "submitted": submitted}


def without_tests(repo):
    """The load here is orchestration (server, worker, locks, ledger): the app's own pytest run is left out."""
    spec = (repo.path / "slipway.yaml").read_text().replace('test:\n  command: ["python", "-m", "pytest", "-q"]\n', "")
    assert "test:" not in spec
    repo.write("slipway.yaml", spec).commit("no tests", tag="load")
    return repo


@pytest.mark.load
@pytest.mark.timeout(900)
def test_twenty_apps_release_in_parallel_through_one_server_and_one_worker(worker, app_repo):
    figures = {}
    with pool_concurrency_limit(POOL_LIMIT or None):
        for count in COUNTS:
            repos = [without_tests(app_repo(f"load{count}-{i:02d}")) for i in range(count)]
            outcome = asyncio.run(release_through_the_worker(repos, timeout=420))
            runs = outcome["runs"]
            not_completed = {app: (run.state.name, (run.state.message or "")[:300], str(run.id)) if run.state else None
                             for app, run in runs.items() if not (run.state and run.state.is_completed())}
            assert not not_completed, f"{len(not_completed)} of {count} releases did not complete: {not_completed}"
            for repo in repos:
                entries, head = ledger(repo.app, "dev")
                kinds = [e.kind for e in entries]
                assert kinds == ["deploy-started", "deployed", "verified"], (repo.app, kinds)  # exactly one verified
                assert head.live is not None and head.live.release_id == entries[-1].release_id and head.in_progress is None
            running = sorted((run.end_time - run.start_time).total_seconds() for run in runs.values())
            total = sorted((run.end_time - run.created).total_seconds() for run in runs.values())
            at_once = max(sum(1 for other in runs.values() if other.start_time <= run.start_time < other.end_time)
                          for run in runs.values())
            assert not POOL_LIMIT or at_once <= POOL_LIMIT, f"{at_once} releases ran at once with the pool limited to {POOL_LIMIT}"
            figures[count] = {**outcome, "running": running, "total": total, "at_once": at_once}
            print(f"\n{count} app(s), pool limit {POOL_LIMIT or 'none'}: wall {outcome['wall']:.1f}s (runs created in "
                  f"{outcome['submitted']:.2f}s); per release, running (start→end): {' '.join(f'{s:.1f}' for s in running)}; "
                  f"created→end: {' '.join(f'{s:.1f}' for s in total)}; most running at once: {at_once}")

    print(f"\nreleases through one worker, pool limit {POOL_LIMIT or 'none'}, {os.cpu_count()} cores")
    print(f"{'apps':>4} {'wall s':>7} {'run min':>7} {'median':>7} {'max':>6} {'created→end max':>15} {'at once':>7} "
          f"{'releases/min':>12}")
    for count, f in figures.items():
        running = f["running"]
        print(f"{count:>4} {f['wall']:>7.1f} {running[0]:>7.1f} {running[len(running) // 2]:>7.1f} {running[-1]:>6.1f} "
              f"{f['total'][-1]:>15.1f} {f['at_once']:>7} {60 * count / f['wall']:>12.1f}")

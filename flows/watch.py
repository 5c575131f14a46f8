"""The ``watch`` flow: release on push, by polling (run it on a schedule from the ``watch`` deployment).

For each watched repository and branch: ``git ls-remote`` (nothing is cloned when nothing changed); a head not seen
before is claimed in the artifact store and released once, pinned to that commit, as a run of the ``release``
deployment. A burst of pushes between two checks releases only the newest commit; no commit is released twice.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from slipway.source.git import remote_head
from slipway.source.watch import Watched, claim_new_head
from tasks.wiring import open_store


@flow(name="watch", flow_run_name="watch {store_block}")
def watch(repos: list[dict], store_block: str = "default", deployment: str = "release/release", dry_run: bool = False) -> dict:
    """``repos``: ``[{repo_url, branch (default main), spec_path?, only?}]``. Returns {repo@branch: commit started}.
    ``dry_run``: claim and report the new heads without starting releases."""
    store, _ = open_store(store_block)
    started: dict[str, str] = {}
    for item in repos:
        watched = Watched(**{**item, "only": tuple(item["only"]) if item.get("only") else None})
        head = remote_head(watched.repo_url, watched.branch)
        if not claim_new_head(store.s3, store.bucket, store.prefix, watched, head):
            continue
        started[f"{watched.repo_url}@{watched.branch}"] = head
        get_run_logger().info("%s@%s: new head %s: %s", watched.repo_url, watched.branch, head[:12],
                              "not released (dry run)" if dry_run else "releasing it")
        if not dry_run:
            _start_release(deployment, watched, head)
    return started


def _start_release(deployment: str, watched: Watched, head: str) -> None:
    from prefect.deployments import run_deployment

    params = {"repo_url": watched.repo_url, "ref": head, "spec_path": watched.spec_path,
              "only": list(watched.only) if watched.only else None}
    run_deployment(deployment, parameters={k: v for k, v in params.items() if v is not None}, timeout=0,
                   flow_run_name=f"release {watched.repo_url}@{watched.branch} {head[:12]}")

"""Where things are shown: Prefect artifact keys, the UI links of runs and artifacts, and the UI mirrors of the
ledger (history tables). Best effort: the ledger in the artifact store is the record; these are views of it."""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from slipway.record.ledger import LedgerEntry, entry_row
from slipway.record.report import history_rows
from tasks.wiring import open_store


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def ui_url_for_run(flow_run_id: Any) -> str | None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    base = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def current_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.get_id() or "") or None
    except Exception:  # noqa: BLE001 - outside a run
        return None


def run_ui_url() -> str | None:
    """This run's page, the same link the CLI prints (``/runs/flow-run/<id>``)."""
    try:
        run_id = current_run_id()
        return ui_url_for_run(run_id) if run_id else None
    except Exception:  # noqa: BLE001 - a link is a nicety
        return None


def artifact_url(key: str) -> str | None:
    """The UI page of the latest artifact with this key."""
    run_url = run_ui_url()
    return f"{run_url.split('/runs/flow-run/')[0]}/artifacts/key/{key}" if run_url else None


HISTORY_ROWS = 20  # the UI's table of the newest entries; `slipway history` shows all of them


def publish_history_artifact(store_block: str, app: str, env: str) -> None:
    """Mirror the ledger in the UI. Best effort: never turn a verified deploy into a failure over a UI mirror."""
    try:
        _, ledger = open_store(store_block)
        rows = history_rows(ledger.history(app, env, limit=HISTORY_ROWS))
        create_table_artifact(key=artifact_key("history", app, env), table=rows, description=f"Ledger of {app}/{env}, newest first")
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not publish the history artifact of %s/%s: %s", app, env, exc)


def extend_history_artifact(store_block: str, entry: LedgerEntry) -> None:
    """The UI's history table with ``entry`` (just recorded) on top. When the table published last ends right before
    it (its newest row is the entry before), that table is extended without reading the ledger; else, or when the
    table cannot be read, it is rebuilt from the ledger."""
    import json

    from prefect.artifacts import Artifact

    app, env = entry.app, entry.environment
    key = artifact_key("history", app, env)
    try:
        latest = Artifact.get(key)
        rows = json.loads(latest.data) if latest is not None and isinstance(latest.data, str) else None
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and rows[0].get("seq") == entry.seq - 1:
            create_table_artifact(key=key, table=[entry_row(entry), *rows][:HISTORY_ROWS],
                                  description=f"Ledger of {app}/{env}, newest first")
            return
    except Exception:  # noqa: BLE001 - rebuilt from the ledger below
        pass
    publish_history_artifact(store_block, app, env)

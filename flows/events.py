"""Slipway's Prefect events: ``slipway.release.*``, ``slipway.rollback.*``, ``slipway.verify.*``.

Automations (a notification on rollback, a webhook on drift) match on these names; the resource is the app's
environment (``slipway.env.<app>.<env>``) or the app (``slipway.app.<app>``). Emitting is best effort: an event
that cannot be sent never changes the outcome of a release.
"""

from __future__ import annotations

import logging
from typing import Any


def emit(event: str, app: str, environment: str | None = None, **payload: Any) -> None:
    from prefect.events import emit_event

    resource = {
        "prefect.resource.id": f"slipway.env.{app}.{environment}" if environment else f"slipway.app.{app}",
        "prefect.resource.name": f"{app}/{environment}" if environment else app,
        "slipway.app": app,
    }
    if environment:
        resource["slipway.environment"] = environment
    try:
        emit_event(event=event, resource=resource, payload={k: v for k, v in payload.items() if v is not None})
    except Exception as exc:  # noqa: BLE001 - events are a mirror, never a reason to fail
        logging.getLogger("slipway").warning("could not emit %s: %s", event, exc)

"""Human gates: an approval before an environment is touched, and a decision on an INCONCLUSIVE canary.

Both pause the ``deploy-environment`` run with a form in the Prefect UI (approve or reject, a reason, your
name) and wait; ``slipway approve APP ENV [--reject]`` answers from a shell, because Prefect has no CLI to
resume a paused run. No answer within the timeout counts as a rejection.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field


class Decision(RunInput):
    """The form a paused release shows in the Prefect UI."""

    approve: bool = Field(True, description="Tick to let the release go on; untick to stop it.")
    reason: str = Field("", description="Why (recorded in the ledger).", max_length=500)
    approver: str = Field("", description="Your name (recorded in the ledger as the approver).", max_length=100)


def poll_interval_s() -> int:
    """How often a paused run looks for an answer (Prefect's default is 10 s)."""
    try:
        return max(1, int(os.environ.get("SLIPWAY_APPROVAL_POLL_S", "5")))
    except ValueError:
        return 5


GRACE_S = 60  # Prefect's own pause timeout runs this much longer than ours (see ask)


def ask(question: str, timeout_s: float, key: str) -> tuple[bool, str, str]:
    """Pause this flow run until someone answers; returns (approved, approver, reason).

    No answer within ``timeout_s`` is a rejection. Prefect's own pause timeout cannot be used for that: once it
    expires, the server refuses every later state of the run (it fails it with "never resumed"), so the run
    could neither record the rejection nor report it. Instead a timer answers *for* nobody at ``timeout_s``,
    resuming the run with a rejection, and Prefect's timeout is set ``GRACE_S`` later as a backstop.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    logger.warning("%s: waiting for a decision (Prefect UI: Resume, or `slipway approve`), at most %ds", question, int(timeout_s))
    expired = f"no decision within {int(timeout_s)}s (timed out = rejected)"
    # the timer's thread runs in a copy of this context, so it talks to the same Prefect API (settings are context-local)
    timer = threading.Timer(max(1.0, float(timeout_s)), contextvars.copy_context().run, args=(_answer_for_nobody, flow_run.id, expired))
    timer.daemon = True
    timer.start()
    try:
        answer = pause_flow_run(
            wait_for_input=Decision.with_initial_data(description=question, approve=True),
            timeout=max(1, int(timeout_s)) + GRACE_S, poll_interval=poll_interval_s(), key=key,
        )
    except FlowPauseTimeout:
        return False, "nobody", expired
    finally:
        timer.cancel()
    approver = (answer.approver or "").strip() or "someone in the Prefect UI"
    return bool(answer.approve), approver, (answer.reason or "").strip()


def _answer_for_nobody(flow_run_id, reason: str) -> None:
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(flow_run_id, run_input={"approve": False, "reason": reason, "approver": "nobody"})
    except Exception as exc:  # noqa: BLE001 - someone answered at the same moment: their answer stands
        logging.getLogger("slipway").info("approval timer: run %s not resumed (%s)", flow_run_id, exc)

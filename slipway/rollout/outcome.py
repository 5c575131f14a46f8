"""What a release did to each environment, decided from the ledger alone (no Prefect state, no target calls).

The release flow runs a ``deploy-environment`` subflow per environment; when it returns, ``stage_outcome`` reads
what that stage recorded (the entries after the head the release started from, and the head now) and says what the
environment serves and why. The same rules give the per-environment summary, the report and the exit code, so they
are written once, here, and unit-tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slipway.core.models import ArtifactRef, StageOutcome
from slipway.record.ledger import EnvHead
from slipway.record.report import outcome_from_head
from slipway.spec.schema import Spec

TOUCHING = ("deploy-started", "rollback-started")  # decisions and verdicts alone do not change what serves


@dataclass
class ReleaseProgress:
    """What a release has done so far: filled stage by stage, read when a failure has to be recorded and diagnosed."""

    spec_path: str | None = None
    app: str | None = None  # the app the release must be (None: whatever the spec names)
    spec_digest: str | None = None  # a recorded spec to use instead of the checkout's
    allow_older: bool = False  # a deliberate downgrade: deploy even where a newer commit is live
    override_freeze: str | None = None  # why this release may enter a frozen environment (each asks for an approval)
    spec: Spec | None = None
    heads: dict[str, EnvHead] = field(default_factory=dict)
    first_env: str | None = None
    built: Any = None  # the built zip (slipway.core.models.BuiltZip) before it was published
    preflight: list[dict] = field(default_factory=list)
    artifact: ArtifactRef | None = None


@dataclass(frozen=True)
class StageFailure:
    """The first environment that failed: its outcome, the stage's error and what it recorded (for the diagnosis)."""

    environment: str
    error: Any
    recorded: list[dict]
    outcome: StageOutcome
    line: str


def environment_touched(recorded: list[dict]) -> bool:
    """Did a deploy or a rollback start? (Decisions and verdicts alone do not change what serves.)"""
    return any(e["kind"] in TOUCHING for e in recorded)


def _live_text(head: EnvHead) -> str:
    if head.live is None:
        return "nothing"
    version = f" (version {head.live.version})" if head.live.version != head.live.release_id else ""
    return f"{head.live.release_id}{version}"


def stage_outcome(
    environment: str, head: EnvHead, recorded: list[dict], release_id: str, *, completed: bool, stage: str = "deploy",
    reason: str = "failed", serving: str | None = None,
) -> tuple[StageOutcome, str | None]:
    """The outcome of one environment's stage and, when it failed, the line that says so.

    ``head``: the environment's ledger head after the stage; ``recorded``: what the stage wrote to the ledger;
    ``completed``: the stage's run ended Completed; ``stage``/``reason``: where and why it failed otherwise;
    ``serving``: what the target serves now, read from it (None: not read). A failed stage that touched the
    environment and left its target serving something other than the ledger's live version says so, whatever the
    ledger says."""
    if completed:
        return outcome_from_head(environment, head, release_id, "live", "verified"), None
    if (serving is not None and head.in_progress is None and serving != (head.live.version if head.live else None)
            and environment_touched(recorded)):  # untouched by this stage: a target changed by hand is drift, reported as such
        back = (f"ROLLBACK DID NOT COMPLETE: the target serves version {serving}, the ledger says {_live_text(head)} "
                "(`slipway history`, then `slipway rollback`)")
        return (outcome_from_head(environment, head, release_id, "rollback-failed", back),
                f"release {release_id} failed at {stage}: {reason}; {environment} {back}")
    if not environment_touched(recorded):  # failed before any deploy or rollback was recorded (a rejected approval, a held lock)
        back = f"unchanged (still serving {_live_text(head)})"
        if serving is not None and head.live is not None and serving != head.live.version:
            back = f"unchanged (the target serves version {serving}, not the ledger's {_live_text(head)}: changed outside Slipway)"
        outcome = outcome_from_head(environment, head, release_id, "failed", back)
    elif (head.in_progress is None and head.live and head.live.release_id == release_id
          and not any(e["kind"] == "rolled-back" for e in recorded)):  # verified, then something after it failed
        return outcome_from_head(environment, head, release_id, "live", f"verified, then: {reason}"), None
    elif head.in_progress is None:
        back = (f"rolled back to {head.live.release_id} (version {head.live.version})" if head.live
                else "nothing verified to return to (see `slipway history`)")
        outcome = outcome_from_head(environment, head, release_id, "rolled-back", back)
    else:
        back = f"ROLLBACK DID NOT COMPLETE: {head.in_progress.message or 'see the rollback run'}"
        outcome = outcome_from_head(environment, head, release_id, "rollback-failed", back)
    return outcome, f"release {release_id} failed at {stage}: {reason}; {environment} {back}"


def canary_judgements(recorded: list[dict]) -> list[str]:
    """The canary verdicts and fired alarms a stage recorded, for the report."""
    judged = [f"{e['verdict']} at {e['percent']}%" for e in recorded if e["kind"] == "canary-verdict"]
    return judged + [e["message"] for e in recorded if e["kind"] == "alarm-fired"]


def finish_failure_line(failure: str | None, outcomes: list[StageOutcome]) -> str | None:
    """The release's failure line, naming the environments it never reached."""
    not_reached = [o.environment for o in outcomes if o.status == "not-reached"]
    return f"{failure}; {', '.join(not_reached)} not touched" if failure and not_reached else failure


def in_spec_order(outcomes: list[StageOutcome], names: list[str]) -> list[StageOutcome]:
    order = {n: i for i, n in enumerate(names)}
    return sorted(outcomes, key=lambda o: order[o.environment])

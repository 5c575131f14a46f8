"""Plan a rollout as plain data before anything is touched (chalice's planner/executor split).

The plan says, per environment in promotion order, what will happen: reconcile an abandoned run first,
deploy the release, or (when the environment is already live on this release) only re-verify it.
Promotion is gated: an environment receives a commit only when it is in this run after its predecessor, or
when the predecessor has already verified that commit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from slipway.core.errors import InputError
from slipway.record.ledger import EnvHead
from slipway.spec.schema import Spec

StepAction = Literal["deploy", "verify-live"]


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: str
    action: StepAction
    reconcile_first: bool = False
    reason: str = ""


class RolloutPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    app: str
    commit: str
    steps: list[PlanStep]
    skipped: list[str]  # environments not in --only

    def describe(self) -> list[str]:
        lines = []
        for step in self.steps:
            pre = "reconcile the abandoned run, then " if step.reconcile_first else ""
            lines.append(f"{step.environment}: {pre}{step.action}" + (f" ({step.reason})" if step.reason else ""))
        return lines


def select_environments(spec: Spec, only: list[str] | None) -> list[str]:
    """The environments to release to, in promotion order. Unknown names are an error."""
    names = [e.name for e in spec.environments]
    if not only:
        return names
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InputError(
            f"unknown environment{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} for app {spec.app}",
            hint=f"--only takes names from slipway.yaml: {', '.join(names)}",
            ref="unknown-environment",
        )
    return [n for n in names if n in only]


def plan_rollout(
    spec: Spec, commit: str, heads: dict[str, EnvHead], only: list[str] | None = None, release_id: str | None = None
) -> RolloutPlan:
    """Validate the request and say what happens where. Without ``release_id`` (before the build) every
    chosen environment gets ``deploy``; with it, environments already live on that release only re-verify."""
    names = [e.name for e in spec.environments]
    chosen = select_environments(spec, only)
    steps: list[PlanStep] = []
    for name in chosen:
        idx = names.index(name)
        if idx > 0:
            pred = names[idx - 1]
            if pred not in chosen:
                pred_head = heads.get(pred)
                # before the build the gate knows the commit; after it, the exact release (same artifact)
                if pred_head is None or not pred_head.has_verified(commit=commit, release_id=release_id):
                    what = f"release {release_id}" if release_id else f"commit {commit[:12]}"
                    raise InputError(
                        f"{what} has not been verified in {pred}, which comes before {name}",
                        hint=f"release to {pred} first (add it to --only) — promotion follows {' → '.join(names)}",
                        ref="promotion-gate",
                    )
        head = heads.get(name)
        reconcile = head is not None and head.in_progress is not None
        live = head.live if head else None
        if release_id and live is not None and live.release_id == release_id and not reconcile:
            steps.append(PlanStep(environment=name, action="verify-live", reason=f"already live on {live.release_id}"))
        else:
            steps.append(PlanStep(environment=name, action="deploy", reconcile_first=reconcile,
                                  reason="an earlier run did not finish" if reconcile else ""))
    return RolloutPlan(app=spec.app, commit=commit, steps=steps, skipped=[n for n in names if n not in chosen])

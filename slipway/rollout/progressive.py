"""Canary and linear deploys: shift a share of traffic, bake, judge the canary against stable, repeat.

The steps, each recorded in the ledger (the same ``deploy-started`` … ``verified`` frame as an all-at-once
deploy, so a killed run is reconciled the same way):

    deploy-started ─ traffic-shifted 10% ─ canary-verdict PASS ─ traffic-shifted 50% ─ canary-verdict PASS
                   ─ deployed (100%, routing cleared) ─ verified

A FAIL verdict (or an alarm newly in ALARM) raises ``CanaryFailed``; the caller's rollback puts 100% of the
traffic back on the stable version at once (``rollout.roll_back``: ``point(stable)`` clears the split) without
analysing anything again. INCONCLUSIVE is returned to the caller, whose policy (``analysis.inconclusive``)
extends the bake, pauses for a human or fails.

Time comes from injected ``clock``/``sleep`` (the bake schedule and synthetic traffic) and ``wall`` (the
metrics window, which must be real time because the metrics carry real timestamps), so tests run a 5-minute
bake in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from slipway.verify.canary import CanaryThresholds, CanaryVerdict, judge
from slipway.core.errors import CanaryFailed, DeployError, ReleaseAborted
from slipway.core.models import ArtifactRef, DeployResult
from slipway.rollout.staged import EnvContext, begin

CHECK_EVERY_S = 15.0  # alarms and an early FAIL are looked at this often during a bake
CONTROL_EVERY_S = 2.0  # an abort or promote-now asked for (in the ledger) is looked for this often during a bake


class PromoteNow(Exception):
    """A person asked the canary to skip its remaining bakes (``slipway promote-now``): not an error, a decision."""

    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(f"promote now, asked by {actor}: {reason}")
        self.actor, self.reason = actor, reason


def request_control(ledger, app: str, environment: str, action: str, reason: str, actor: str | None = None) -> dict:
    """``slipway abort`` / ``slipway promote-now`` (and the ``control`` flow): record the request in the environment's
    ledger, where the baking canary looks for it every ``CONTROL_EVERY_S``. Refused (nothing recorded) unless a canary
    is baking there. ``action``: abort | promote-now."""
    from slipway.core.errors import InputError
    from slipway.record.ledger import default_actor

    if action not in ("abort", "promote-now"):
        raise InputError(f"unknown action {action!r}: abort or promote-now", ref="invalid-input")
    head = ledger.head(app, environment)
    running = head.in_progress
    if running is None or running.kind != "deploy" or not head.canary:
        raise InputError(f"no canary of {app} is baking in {environment}: nothing to {action}",
                         hint=f"`slipway history {app} --env {environment}` shows what happened; `slipway rollback` moves a live release back",
                         ref="nothing-running")
    if running.control:
        raise InputError(f"{running.control['kind']} was already asked for this release by {running.control['actor']}",
                         hint="the running stage acts on it within seconds", ref="nothing-running")
    kind = "abort-requested" if action == "abort" else "promote-requested"
    who = actor or default_actor()
    entry, _ = ledger.record(app, environment, kind, release_id=running.release_id, version=running.version, actor=who,
                             message=f"{action} asked by {who}" + (f": {reason}" if reason else ""), detail={"reason": reason})
    return {"app": app, "environment": environment, "action": action, "release_id": running.release_id, "seq": entry.seq,
            "canary": head.canary}


def check_controls(ctx: EnvContext, started_seq: int) -> None:
    """Raise for an abort (ReleaseAborted: the stage fails and its rollback puts stable back) or a promote-now
    (PromoteNow) asked for this run's deploy; return when neither was. Also raises when another run took over."""
    current = ctx.head().in_progress
    if current is None or current.started_seq != started_seq:
        raise DeployError(f"another run changed {ctx.environment} during this canary", target=f"{ctx.app}/{ctx.environment}",
                          hint="see `slipway history`; release again once the other run has finished", ref="concurrent-change")
    control = current.control or {}
    if control.get("kind") == "abort":
        raise ReleaseAborted(f"aborted by {control.get('actor')}" + (f": {control['reason']}" if control.get("reason") else ""),
                             target=f"{ctx.app}/{ctx.environment}", hint="traffic goes back to the stable version")
    if control.get("kind") == "promote":
        raise PromoteNow(control.get("actor") or "someone", control.get("reason") or "")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Clock:
    """Where a bake gets its time from. Tests pass a fake monotonic clock whose ``sleep`` advances it."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], datetime] = utc_now


@dataclass(frozen=True)
class BakeSettings:
    """One step's bake: how long, which thresholds, what synthetic traffic, which alarms."""

    duration_s: float
    thresholds: CanaryThresholds = field(default_factory=CanaryThresholds)
    traffic_items: list[Any] = field(default_factory=list)  # Lambda events or HTTP request dicts; empty: no synthetic traffic
    traffic_rate_per_s: float = 0.0
    traffic_max_requests: int = 10_000
    check_every_s: float = CHECK_EVERY_S
    early_fail: bool = True  # stop the bake at the first interim FAIL (only FAIL ends a bake early)
    control_every_s: float = CONTROL_EVERY_S
    custom: tuple[Any, ...] = ()  # slipway.verify.custom_metrics.CustomCheck: the app's own metrics, in the same verdict


def _still_ours(ctx: EnvContext, started_seq: int) -> None:
    current = ctx.head().in_progress
    if current is None or current.started_seq != started_seq:
        raise DeployError(
            f"another run changed {ctx.environment} during this canary",
            target=f"{ctx.app}/{ctx.environment}",
            hint="see `slipway history`; release again once the other run has finished",
            ref="concurrent-change",
        )


def begin_progressive(ctx: EnvContext, artifact: ArtifactRef, deployed: DeployResult, strategy: str, steps: list[int]) -> int:
    """Record ``deploy-started`` for a canary/linear deploy; nothing live changes yet."""
    stable = ctx.target.serving()
    return begin(ctx, artifact, deployed.version,
                 f"{strategy} of version {deployed.version} next to {stable}: steps {', '.join(f'{s}%' for s in steps)}")


def shift(ctx: EnvContext, artifact: ArtifactRef, *, stable_version: str, version: str, percent: int, started_seq: int) -> None:
    """Send ``percent`` of the traffic to ``version``, the rest to ``stable_version``; recorded."""
    _still_ours(ctx, started_seq)
    ctx.target.shift(stable_version, version, percent)
    ctx.ledger.record(
        ctx.app, ctx.environment, "traffic-shifted", release_id=artifact.release_id, version=version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id,
        message=f"{percent}% of traffic → version {version}, {100 - percent}% stays on {stable_version}",
        detail={"percent": percent, "stable_version": stable_version},
    )


def promote(ctx: EnvContext, artifact: ArtifactRef, version: str, started_seq: int) -> None:
    """100% on the new version, routing cleared. Smoke checks (``rollout.verify``) follow."""
    _still_ours(ctx, started_seq)
    ctx.target.point(version)
    ctx.ledger.record(
        ctx.app, ctx.environment, "deployed", release_id=artifact.release_id, version=version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id,
        message=f"{ctx.target.name} → version {version} (100%, routing cleared)",
    )


def bake(
    ctx: EnvContext,
    artifact: ArtifactRef,
    *,
    stable_version: str,
    version: str,
    percent: int,
    started_seq: int,
    settings: BakeSettings,
    alarm_gate: Any = None,
    clock: Clock | None = None,
    label: str = "",
    window_start: datetime | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> CanaryVerdict:
    """Let ``percent`` of the traffic run on the canary for ``settings.duration_s``, then judge it against stable
    over the same window (from ``window_start`` when extending a bake). Records the verdict (with its evidence) in the ledger and returns it.

    Raises ``CanaryFailed`` on FAIL, and as soon as an alarm is newly in ALARM (checked every
    ``check_every_s``, also with no synthetic traffic). INCONCLUSIVE and PASS are returned.
    """
    clock = clock or Clock()
    check_controls(ctx, started_seq)
    start_wall = window_start or clock.wall()  # an extension judges the whole step so far, not just its own time
    t0 = clock.clock()
    sent = errors = 0
    budget = settings.traffic_max_requests
    verdict: CanaryVerdict | None = None
    next_check = t0 + settings.check_every_s
    while True:
        remaining = settings.duration_s - (clock.clock() - t0)
        if remaining <= 1e-9:
            break
        chunk = min(remaining, settings.control_every_s, max(next_check - clock.clock(), 1e-3))
        slice_start = clock.clock()
        if settings.traffic_items and budget > 0:
            result = ctx.target.drive(settings.traffic_items, settings.traffic_rate_per_s, chunk, max_requests=budget,
                                      clock=clock.clock, sleep=clock.sleep)
            sent += result.sent
            errors += result.errors
            budget -= result.sent
        left = chunk - (clock.clock() - slice_start)
        if left > 1e-9:
            clock.sleep(left)  # no traffic to send (or it finished early): wait out the slice
        if on_progress is not None:
            on_progress(100.0 * min(1.0, (clock.clock() - t0) / settings.duration_s))
        check_controls(ctx, started_seq)  # abort / promote-now, asked for through the ledger
        if clock.clock() < next_check - 1e-9 and settings.duration_s - (clock.clock() - t0) > 1e-9:
            continue  # alarms and the interim verdict keep their own pace
        next_check += settings.check_every_s
        if alarm_gate is not None:
            fired = alarm_gate.check()
            if fired:
                _alarm_fired(ctx, artifact, version, percent, fired, alarm_gate, label)
        if settings.early_fail and settings.duration_s - (clock.clock() - t0) > 1e-9:
            interim = _judge(ctx, stable_version, version, start_wall, clock.wall(), settings, percent, interim=True)
            if interim.verdict == "FAIL":
                verdict = interim
                break
    if verdict is None:
        delay = float(getattr(ctx.target, "metrics_delay_s", 0) or 0)
        end_wall = clock.wall()
        if delay:
            clock.sleep(delay)  # metrics arrive late (CloudWatch): wait before reading the window
        verdict = _judge(ctx, stable_version, version, start_wall, end_wall, settings, percent)
    verdict = verdict.model_copy(update={"window": {**(verdict.window or {}), "synthetic_sent": sent, "synthetic_errors": errors}})
    _record_verdict(ctx, artifact, version, percent, verdict, label)
    if verdict.verdict == "FAIL":
        raise CanaryFailed(
            f"canary of {artifact.release_id} at {percent}% judged FAIL: {verdict.reason}",
            target=ctx.target.name, hint="traffic goes back to the stable version; the evidence is in the canary report and `slipway history`",
            evidence={"verdict": verdict.model_dump(mode="json"), "percent": percent},
        )
    return verdict


def _judge(ctx: EnvContext, stable_version: str, version: str, start: datetime, end: datetime, settings: BakeSettings,
           percent: int, interim: bool = False) -> CanaryVerdict:
    stable, canary = ctx.target.canary_sample(stable_version, version, start, end)
    window = {"start": start.isoformat(timespec="seconds"), "end": end.isoformat(timespec="seconds"), "percent": percent,
              "stable_version": stable_version, "canary_version": version}
    thresholds = settings.thresholds
    if interim:
        # looking several times during a bake would inflate the false-fail rate; each interim look gets an equal
        # share of alpha (Bonferroni), so a good canary is failed early no more often than at the end
        looks = max(1, math.ceil(settings.duration_s / settings.check_every_s))
        thresholds = thresholds.model_copy(update={"error_alpha": thresholds.error_alpha / looks,
                                                   "latency_alpha": thresholds.latency_alpha / looks})
        window["ended_early"] = True
    extra = [check.judge(stable_version, version, start, end) for check in settings.custom]
    return judge(stable, canary, thresholds, window=window, extra=extra)


def _record_verdict(ctx: EnvContext, artifact: ArtifactRef, version: str, percent: int, verdict: CanaryVerdict, label: str) -> None:
    ctx.ledger.record(
        ctx.app, ctx.environment, "canary-verdict", release_id=artifact.release_id, version=version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id,
        message=f"{verdict.verdict} at {percent}%{f' ({label})' if label else ''}: {verdict.reason}",
        detail={"percent": percent, **verdict.model_dump(mode="json")},
    )


def _alarm_fired(ctx: EnvContext, artifact: ArtifactRef, version: str, percent: int, fired: list, gate: Any, label: str) -> None:
    names = ", ".join(f"{c.name} ({c.was}→{c.now})" for c in fired)
    message = f"alarm newly in ALARM at {percent}%{f' ({label})' if label else ''}: {names}"
    evidence = gate.evidence() if hasattr(gate, "evidence") else {}
    ctx.ledger.record(
        ctx.app, ctx.environment, "alarm-fired", release_id=artifact.release_id, version=version, run_id=ctx.run_id,
        message=message, detail={"percent": percent, "alarms": evidence},
    )
    raise CanaryFailed(
        f"{'canary' if percent < 100 else 'release'} of {artifact.release_id} at {percent}%: {message.split(': ', 1)[1]} (it was not in ALARM before the release)",
        target=ctx.target.name, hint="traffic goes back to the stable version; look at the alarm, then release again",
        evidence={"alarms": evidence, "percent": percent}, ref="alarm-fired",
    )


def bake_schedule(steps: list[int]) -> list[int]:
    """The steps that are baked and judged: every step below 100 (100% is the promotion)."""
    return [s for s in steps if s < 100]


def expected_requests(rate_per_s: float, duration_s: float, percent: int) -> tuple[int, int]:
    """(stable, canary) requests synthetic traffic alone gives one bake: to size min_requests (docs/progressive-delivery.md)."""
    total = math.floor(rate_per_s * duration_s)
    return total - round(total * percent / 100), round(total * percent / 100)


__all__ = ["BakeSettings", "Clock", "begin_progressive", "shift", "bake", "promote", "bake_schedule", "expected_requests"]

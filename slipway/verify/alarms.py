"""Alarm gates for progressive releases: CloudWatch alarms named in the spec, read before and during a bake.

The gate takes a snapshot of the alarms before traffic shifts and reads them again during the bake. Only an
alarm that is *newly* in ALARM fails the stage: one that was not in ALARM in the snapshot, or one that has
left ALARM and come back since (its state changed after the snapshot's reading). An alarm already in ALARM
before the release, and still in the same ALARM episode, is reported but ignored, so an incident in progress
never blocks the release that fixes it. INSUFFICIENT_DATA never fails the gate (no data is not a failure).

"Came back since" is judged from CloudWatch's own timestamps, never from this machine's clock: AWS returns
StateTransitionedTimestamp (when StateValue last changed) and StateUpdatedTimestamp (which also moves when
only the EvaluationState changes, e.g. PARTIAL_DATA, while the alarm stays in ALARM). The transition time is
used when both readings carry it; otherwise StateUpdatedTimestamp (moto returns only that one, and moves it on
every set_alarm_state, even one that keeps the state).

A name that does not exist fails the snapshot, before anything is shifted: a misspelt gate must not pass
silently. Plain functions and frozen data, no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from botocore.exceptions import BotoCoreError, ClientError

from slipway.core.aws import error_code, translate
from slipway.core.errors import VerificationFailed

ALARM = "ALARM"
OK = "OK"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
MAX_NAMES_PER_CALL = 100  # DescribeAlarms takes at most 100 AlarmNames (and returns at most 100 per page)
REASON_LIMIT = 200
ALARM_TYPES = ["MetricAlarm", "CompositeAlarm"]  # without AlarmTypes, AWS returns metric alarms only
READ_HINT = "check the caller may call cloudwatch:DescribeAlarms in this account and region"
MISSING_HINT = "create them or remove them from alarms in slipway.yaml"
_PERMISSION_CODES = {"AccessDenied", "AccessDeniedException"}


@dataclass(frozen=True)
class AlarmState:
    """One alarm as CloudWatch reported it. Timestamps are CloudWatch's, in UTC."""

    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    updated_at: datetime  # StateUpdatedTimestamp
    reason: str = ""  # StateReason, on one line, at most REASON_LIMIT characters
    transitioned_at: datetime | None = None  # StateTransitionedTimestamp (AWS; moto does not return it)
    kind: str = "metric"  # metric | composite

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "updated_at": self.updated_at.isoformat(),
            "transitioned_at": self.transitioned_at.isoformat() if self.transitioned_at else None,
            "reason": self.reason,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlarmState":
        return cls(
            name=data["name"], state=data["state"], updated_at=datetime.fromisoformat(data["updated_at"]),
            reason=data.get("reason", ""), kind=data.get("kind", "metric"),
            transitioned_at=datetime.fromisoformat(data["transitioned_at"]) if data.get("transitioned_at") else None,
        )


@dataclass(frozen=True)
class AlarmChange:
    """An alarm that fails the gate: in ALARM now, and not in the ALARM episode the snapshot saw."""

    name: str
    was: str | None  # the snapshot's state; None when the alarm was not in the snapshot
    now: str
    reason: str
    at: datetime  # when CloudWatch says it entered the current state

    @property
    def reentered(self) -> bool:
        """It was in ALARM at the snapshot, left, and came back."""
        return self.was == ALARM

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "was": self.was, "now": self.now, "reason": self.reason, "at": self.at.isoformat()}


def snapshot(cw: Any, names: list[str]) -> dict[str, AlarmState]:
    """The current state of every named alarm, metric or composite, keyed by name in the order given.

    Raises VerificationFailed (ref ``alarm-missing``) when a name does not exist, and (ref
    ``alarms-unavailable``) when CloudWatch cannot be read.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    found: dict[str, AlarmState] = {}
    for batch in _batches(wanted, MAX_NAMES_PER_CALL):
        for alarm in _describe(cw, batch):
            found[alarm.name] = alarm
    missing = [name for name in wanted if name not in found]
    if missing:
        region = _region(cw)
        raise VerificationFailed(
            f"CloudWatch alarm(s) {_name_list(missing)} not found{f' in {region}' if region else ''}",
            hint=MISSING_HINT, ref="alarm-missing", evidence={"missing": missing, "region": region},
        )
    return {name: found[name] for name in wanted}


def newly_alarming(before: dict[str, AlarmState], now: dict[str, AlarmState]) -> list[AlarmChange]:
    """The alarms that fail the gate, in the order of ``now``.

    An alarm fails when it is in ALARM now and either was not in ALARM in the snapshot (or not in it at all),
    or has re-entered ALARM since (its state changed after the snapshot's reading of it).
    """
    changes = []
    for name, current in now.items():
        if current.state != ALARM:
            continue
        previous = before.get(name)
        if previous is None or previous.state != ALARM or _changed_since(previous, current):
            changes.append(AlarmChange(
                name=name, was=previous.state if previous else None, now=current.state, reason=current.reason,
                at=_changed_at(current),
            ))
    return changes


def describe_gate(before: dict[str, AlarmState], now: dict[str, AlarmState]) -> str:
    """One line for logs and the ledger, e.g.
    ``alarms: api-5xx OK→ALARM (new); db-cpu ALARM (already before the release: ignored)``."""
    failing = {change.name: change for change in newly_alarming(before, now)}
    parts = []
    for name in dict.fromkeys([*before, *now]):
        previous, current = before.get(name), now.get(name)
        if current is None:
            parts.append(f"{name} {previous.state} (not read again)")
        elif name in failing:
            change = failing[name]
            if change.reentered:
                parts.append(f"{name} ALARM (re-entered at {_clock(change.at)}, after the snapshot)")
            else:
                parts.append(f"{name} {change.was or 'absent'}→ALARM (new)")
        elif current.state == ALARM:
            parts.append(f"{name} ALARM (already before the release: ignored)")
        else:
            moved = previous is not None and previous.state != current.state
            text = f"{previous.state}→{current.state}" if moved else current.state
            parts.append(f"{name} {text}{' (no data: not judged)' if current.state == INSUFFICIENT_DATA else ''}")
    return "alarms: " + ("; ".join(parts) if parts else "none")


class AlarmGate:
    """The alarms of one environment for one release: the snapshot taken before traffic shifts, and the last
    reading. With no names it is a no-op that never calls AWS.

        gate = AlarmGate.open(cw, env.alarms)   # before shifting traffic
        ...
        failing = gate.check()                  # during the bake; non-empty = fail the stage
        entry.evidence["alarms"] = gate.evidence()
    """

    def __init__(self, cw: Any, names: list[str], before: dict[str, AlarmState]) -> None:
        self.cw = cw
        self.names = list(dict.fromkeys(names))
        self.before = before
        self.last: dict[str, AlarmState] | None = None

    @classmethod
    def open(cls, cw: Any, names: list[str]) -> "AlarmGate":
        return cls(cw, names, snapshot(cw, names) if names else {})

    @classmethod
    def resume(cls, cw: Any, names: list[str], evidence: dict[str, Any] | None) -> "AlarmGate":
        """The gate again from an earlier ``evidence()`` (the snapshot travels between steps as JSON)."""
        before = {name: AlarmState.from_dict(state) for name, state in ((evidence or {}).get("snapshot") or {}).items()}
        return cls(cw, names, before)

    def check(self) -> list[AlarmChange]:
        """Read the alarms again; the ones that fail the gate."""
        if not self.names:
            return []
        self.last = snapshot(self.cw, self.names)
        return newly_alarming(self.before, self.last)

    def describe(self) -> str:
        return describe_gate(self.before, self.last if self.last is not None else self.before)

    def evidence(self) -> dict[str, Any]:
        """JSON-able: the names, the snapshot, the last reading (None before the first check) and what fails."""
        last = self.last
        return {
            "names": list(self.names),
            "snapshot": {name: state.to_dict() for name, state in self.before.items()},
            "last": {name: state.to_dict() for name, state in last.items()} if last is not None else None,
            "newly_alarming": [c.to_dict() for c in newly_alarming(self.before, last)] if last is not None else [],
            "summary": self.describe(),
        }


# ---- CloudWatch --------------------------------------------------------------------------------------------
def _describe(cw: Any, names: list[str]) -> Iterator[AlarmState]:
    """Every page of DescribeAlarms for up to 100 names (moto returns one page; AWS pages at 100)."""
    request: dict[str, Any] = {"AlarmNames": names, "AlarmTypes": ALARM_TYPES, "MaxRecords": MAX_NAMES_PER_CALL}
    while True:
        try:
            reply = cw.describe_alarms(**request)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, names) from exc
        for alarm in reply.get("MetricAlarms", []):
            yield _state(alarm, "metric")
        for alarm in reply.get("CompositeAlarms", []):
            yield _state(alarm, "composite")
        token = reply.get("NextToken")
        if not token:
            return
        request["NextToken"] = token


def _state(alarm: dict[str, Any], kind: str) -> AlarmState:
    transitioned = alarm.get("StateTransitionedTimestamp")
    return AlarmState(
        name=alarm["AlarmName"],
        state=alarm["StateValue"],
        updated_at=_utc(alarm["StateUpdatedTimestamp"]),
        reason=_one_line(alarm.get("StateReason") or ""),
        transitioned_at=_utc(transitioned) if transitioned else None,
        kind=kind,
    )


def _unavailable(exc: ClientError | BotoCoreError, names: list[str]) -> Exception:
    target = f"alarms {_name_list(names)}"
    if isinstance(exc, ClientError) and error_code(exc) in _PERMISSION_CODES:
        # The keys are valid (AWS would say InvalidClientTokenId otherwise): a missing permission, so name it
        # rather than letting translate() call it a credentials problem.
        message = exc.response.get("Error", {}).get("Message", "") or error_code(exc)
        return VerificationFailed(
            f"could not read CloudWatch alarms: {error_code(exc)}: {message}", target=target, hint=READ_HINT,
            ref="alarms-unavailable", evidence={"aws_error_code": error_code(exc)},
        )
    err = translate(exc, VerificationFailed, "read CloudWatch alarms", target=target, hint=READ_HINT)
    if isinstance(err, VerificationFailed):
        err.ref = "alarms-unavailable"  # translate() keeps the code, the message and the transient flag
    return err


# ---- helpers -----------------------------------------------------------------------------------------------
def _changed_at(state: AlarmState) -> datetime:
    return state.transitioned_at or state.updated_at


def _changed_since(previous: AlarmState, current: AlarmState) -> bool:
    if previous.transitioned_at and current.transitioned_at:
        return current.transitioned_at > previous.transitioned_at
    return current.updated_at > previous.updated_at


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _region(cw: Any) -> str | None:
    meta = getattr(cw, "meta", None)
    return getattr(meta, "region_name", None)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _name_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")

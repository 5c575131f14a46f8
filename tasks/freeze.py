"""Freeze windows: an environment in one takes no release unless a person approves an override, with a reason.

The windows come from slipway.yaml (``freeze:``) and from a shared ``slipway-freeze-windows`` block the environment
names (``freeze_block:``). A release is refused before anything is built when an environment it would deploy to is
frozen; with ``override_freeze`` (a reason) it goes on, and each frozen environment asks for an approval at its
turn (recorded in the ledger with the reason and who approved). The environment is checked again at its turn: a
window that began while the release ran stops it there, touching nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone

from slipway.core.errors import EnvironmentFrozen
from slipway.spec.schema import FreezeWindow, Spec, active_freeze
from tasks.resolution import load_block


def windows_of(spec: Spec, environment: str) -> list[FreezeWindow]:
    env = spec.environment(environment)
    windows = list(env.freeze)
    if env.freeze_block:
        from blocks import FreezeWindowsBlock

        block = load_block(FreezeWindowsBlock, env.freeze_block, ref="block-missing",
                           missing=f"no slipway-freeze-windows block named {env.freeze_block!r} (freeze_block of {environment})",
                           hint="create it (docs/spec.md#freeze-windows) or remove freeze_block from slipway.yaml")
        windows += list(block.windows)
    return windows


def frozen(spec: Spec, environment: str, now: datetime | None = None) -> tuple[FreezeWindow, datetime] | None:
    """The window ``environment`` is in now (and when it ends), or None."""
    return active_freeze(windows_of(spec, environment), now or datetime.now(timezone.utc))


def refusal(spec: Spec, environment: str, window: FreezeWindow, until: datetime, *, started: bool = False) -> EnvironmentFrozen:
    return EnvironmentFrozen(
        f"{environment} is frozen until {until.isoformat(timespec='minutes')}: {window.describe()}",
        target=f"{spec.app}/{environment}",
        hint=("nothing in it was touched" if started else "nothing was built or deployed")
        + "; release after the window, or with --override-freeze REASON (each frozen environment then asks for an approval)",
    )


def refuse_frozen(spec: Spec, environments: list[str], override: str | None, now: datetime | None = None) -> dict[str, str]:
    """Before anything is built: the first frozen environment refuses the release unless ``override`` gives a reason.
    Returns {environment: window} of the frozen ones (each asks for an approval at its turn)."""
    found = {}
    for name in environments:
        hit = frozen(spec, name, now)
        if hit is None:
            continue
        if not override:
            raise refusal(spec, name, *hit)
        found[name] = hit[0].describe()
    return found


__all__ = ["frozen", "refuse_frozen", "refusal", "windows_of"]

"""One resolution per run: blocks, clients and targets are resolved once per flow run and shared by its tasks; inside
``one_resolution_per_run`` (the release flow) also by its subflows, one per environment. The next run resolves
again, so a changed block is always picked up by the next release."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator

from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from slipway.core.errors import CredentialsError

_SHARED_WITH_SUBFLOWS: ContextVar[str | None] = ContextVar("slipway_resolution_scope", default=None)


@contextmanager
def one_resolution_per_run() -> Iterator[None]:
    """Within this block, the current flow run's subflows (each environment's ``deploy-environment``) share the run's
    resolution: blocks are loaded and clients built once per release, not once per environment."""
    token = _SHARED_WITH_SUBFLOWS.set(_SHARED_WITH_SUBFLOWS.get() or str(flow_run.get_id() or "") or None)
    try:
        yield
    finally:
        _SHARED_WITH_SUBFLOWS.reset(token)


def resolution_run_id() -> str | None:
    """The flow run whose resolution this code shares (the release, inside its environments' subflows), if any."""
    return _SHARED_WITH_SUBFLOWS.get()


class _PerRun:
    """A small bounded memo keyed by the flow run (or the run that shares its resolution with its subflows): values
    are shared by one run's tasks and rebuilt by the next run. Outside a flow run (a script, a test) nothing is kept
    unless ``outside_runs``."""

    def __init__(self, size: int = 256, *, outside_runs: bool = False, shared_with_subflows: bool = True) -> None:
        self._values: OrderedDict[tuple, Any] = OrderedDict()
        self._size = size
        self._outside_runs = outside_runs
        self._shared = shared_with_subflows

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        run = _current_run() if self._shared else str(flow_run.get_id() or "")
        if not run and not self._outside_runs:
            return make()
        key = (run, *key)
        if key not in self._values:
            self._values[key] = make()
            while len(self._values) > self._size:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        return self._values[key]

    def forget(self, key: tuple) -> None:
        self._values.pop((_current_run() if self._shared else str(flow_run.get_id() or ""), *key), None)


def _current_run() -> str:
    return _SHARED_WITH_SUBFLOWS.get() or str(flow_run.get_id() or "")


# An environment's context records the run that uses it (its ledger entries name that run, and a rollback hook acts
# only on its own run's deploy): contexts are never shared between a release and its subflows.
BLOCKS, STORES, CONTEXTS = _PerRun(outside_runs=True), _PerRun(), _PerRun(shared_with_subflows=False)


def load_block(block_cls: type, name: str, *, missing: str | None = None, hint: str = "", ref: str = "block-missing"):
    """Load a block for this run (one API call per block and run). With ``missing``, a block that does not exist is a
    one-line CredentialsError."""
    try:
        found = BLOCKS.get((block_cls, name), lambda: _load_or_missing(block_cls, name))
        if isinstance(found, Exception):
            if not _current_run():  # outside a run, a block created next must be found
                BLOCKS.forget((block_cls, name))
            raise found
        return found
    except (ValueError, ObjectNotFound) as exc:
        if missing is None:
            raise
        raise CredentialsError(missing, hint=hint, ref=ref) from exc


def _load_or_missing(block_cls: type, name: str):
    """The block, or the error saying it does not exist (kept too: an environment without its own target block falls
    back to ``default``, and asking again for the missing one would cost a request each time)."""
    try:
        return block_cls.load(name)
    except (ValueError, ObjectNotFound) as exc:
        return exc


__all__ = ["load_block", "one_resolution_per_run", "resolution_run_id"]

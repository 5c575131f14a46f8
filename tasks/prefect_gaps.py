"""The one place Slipway uses Prefect's private modules, and why.

Prefect's public ``concurrency()`` context manager acquires a slot under a lease it keeps to itself. Slipway's
environment lock needs the lease id: it is recorded with the holder so that the next run can give back the slot of
a holder that was killed (SIGKILL, OOM, a lost machine) at once, instead of leaving the environment locked until the
lease expires. Prefect 3.9 exposes leases only through ``prefect.concurrency._sync`` and ``._leases``.

tests/unit/test_prefect_gaps.py checks the signatures used here: a Prefect upgrade that changes them fails that test
by name, not a release at run time. Nothing else in Slipway imports a private Prefect module (the same test).
"""

from __future__ import annotations

from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "acquire_concurrency_slots_with_lease",
    "maintain_concurrency_lease",
    "release_concurrency_slots_with_lease",
]

"""Prefect's private API that Slipway relies on, pinned by signature (tasks/prefect_gaps.py). A Prefect upgrade that
moves or changes any of it fails here, by name, before it can fail a release."""

import ast
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_acquiring_a_slot_with_a_lease_takes_what_the_lock_passes():
    from tasks.prefect_gaps import acquire_concurrency_slots_with_lease

    assert {"names", "slots", "timeout_seconds", "lease_duration", "strict"} <= set(params(acquire_concurrency_slots_with_lease))


def test_releasing_and_renewing_a_lease_take_the_lease_id():
    from tasks.prefect_gaps import maintain_concurrency_lease, release_concurrency_slots_with_lease

    assert params(release_concurrency_slots_with_lease)[:1] == ["lease_id"]
    assert params(maintain_concurrency_lease)[:2] == ["lease_id", "lease_duration"]
    assert "raise_on_lease_renewal_failure" in params(maintain_concurrency_lease)


def test_an_acquire_timeout_is_still_a_timeout_error():
    from tasks.prefect_gaps import AcquireConcurrencySlotTimeoutError

    assert issubclass(AcquireConcurrencySlotTimeoutError, TimeoutError)


def test_no_other_module_imports_a_private_prefect_module():
    offenders = []
    for folder in ("slipway", "flows", "tasks", "blocks", "deployments", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "tasks" / "prefect_gaps.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] == "prefect" and any(part.startswith("_") for part in n.split(".")[1:])]
    assert offenders == []

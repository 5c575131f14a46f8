"""Test tiers by folder (a pytest plugin loaded by tests/conftest.py).

A test's tier is the folder it lives in: ``unit`` (slipway/ with in-memory fakes: no server, no network, no
Docker), ``integration`` (a local AWS endpoint, git repositories, Docker), ``flows`` (Prefect flows on the session's
local stack), ``reliability`` (faults, kills, load) and ``security`` (hostile input, secrets). The marker comes from
the path, so ``-m unit`` or ``-m "not reliability"`` select by tier without a marker written by hand. Any test that
uses the local stack is marked ``stack`` too.

A unit test that asks for a session fixture of the heavy tiers is refused at collection, naming the test and the
fixture: the unit tier stays fast because nothing in it can start a server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "integration", "flows", "reliability", "security")
HEAVY_FIXTURES = {
    "aws_endpoint": "a local AWS server",
    "local_stack": "the Prefect server and local AWS subprocesses",
    "prefect_api": "the Prefect server and local AWS subprocesses",
    "docker_client": "a Docker engine",
    "busybox_image": "a Docker engine",
    "local_registry": "a container registry",
    "nginx_binary": "nginx",
    "prometheus": "a Prometheus server",
}
STACK_FIXTURES = {"local_stack", "prefect_api"}


def tier_of(path: Path) -> str | None:
    parts = Path(path).parts
    if "tests" not in parts:
        return None
    below = parts[len(parts) - 1 - parts[::-1].index("tests") + 1:]
    return below[0] if len(below) > 1 and below[0] in TIERS else None


def pytest_configure(config: pytest.Config) -> None:
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: a test in tests/{tier}/ (added from the path)")
    config.addinivalue_line("markers", "stack: uses the session's local stack (added from the fixtures)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    refused, loose = [], []
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            loose.append(item.nodeid)
            continue
        item.add_marker(getattr(pytest.mark, tier))
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & STACK_FIXTURES:
            item.add_marker(pytest.mark.stack)
        if tier == "unit":
            refused += [f"{item.nodeid} uses {name} ({HEAVY_FIXTURES[name]})" for name in sorted(fixtures & HEAVY_FIXTURES.keys())]
    if loose:
        raise pytest.UsageError(f"tests outside a tier folder ({', '.join(TIERS)}): {'; '.join(sorted(loose)[:5])}: move them into one")
    if refused:
        raise pytest.UsageError(
            f"unit tests may not start servers or engines: {'; '.join(refused[:5])}: "
            "use an in-memory fake (tests/fakes.py) or move the test to tests/integration/"
        )

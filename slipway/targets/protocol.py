"""What rollout.py needs from a deploy target, whatever serves the environment.

A *version* is the target's own immutable handle for a release: a Lambda version number, a container name
behind the proxy, an ECS task-definition ARN. ``prepare`` makes one without changing what is live;
``point`` makes one serve all traffic; ``verify`` runs the smoke checks against what is live.
"""

from __future__ import annotations

from typing import Protocol

from slipway.core.models import ArtifactRef, DeployResult, VerifyResult


class Target(Protocol):
    type: str

    @property
    def name(self) -> str: ...  # for messages: "hello-dev:live", "docker-host dev at 127.0.0.1:18000"

    def location(self) -> dict: ...  # recorded in the ledger so rollback works without the spec

    def default_check(self) -> dict: ...  # used when the spec has no smoke checks

    def prepare(self, artifact: ArtifactRef) -> DeployResult: ...

    def serving(self) -> str | None: ...

    def point(self, version: str, release=None, *, error_cls=...) -> None: ...

    def remove(self) -> None: ...

    def verify(self, checks: list[dict], expected_version: str) -> VerifyResult: ...

    def settle(self, live_version: str) -> None: ...  # after a verified deploy (e.g. retire old containers)

    def discard(self, version: str) -> None: ...  # after a rollback away from ``version``

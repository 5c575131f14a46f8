"""Slipway's errors: one base class, one subclass per stage.

Every error carries the stage it happened in, what it was acting on (the target), a short kebab-case
reference and a hint. ``str(err)`` is the one line a user reads: ``<what failed> (<target>): <hint>``.
Errors raised from SDK errors are always chained (``raise ... from exc``).
"""

from __future__ import annotations


class SlipwayError(Exception):
    """Base class. ``stage`` names the pipeline stage; ``ref`` is a stable kebab-case reference."""

    stage: str = "slipway"
    ref: str = "error"
    transient: bool = False  # True when a retry may succeed (throttling, 5xx, connection errors)

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        hint: str | None = None,
        ref: str | None = None,
        evidence: dict | None = None,
    ) -> None:
        self.message = message
        self.target = target
        self.hint = hint
        if ref:
            self.ref = ref
        self.evidence = evidence or {}
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message
        if self.target:
            text = f"{text} ({self.target})"
        if self.hint:
            text = f"{text}: {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "ref": self.ref,
            "message": self.message,
            "target": self.target,
            "hint": self.hint,
            "evidence": self.evidence,
            "transient": self.transient,
        }


class SpecError(SlipwayError):
    stage = "spec"
    ref = "invalid-spec"


class InputError(SlipwayError):
    """Bad command-line or flow input (release ids, environment names, ...)."""

    stage = "input"
    ref = "invalid-input"


class CloneError(SlipwayError):
    stage = "clone"
    ref = "clone-failed"


class TestsFailed(SlipwayError):
    stage = "test"
    ref = "tests-failed"

    __test__ = False  # not a pytest test class


class BuildError(SlipwayError):
    stage = "build"
    ref = "build-failed"


class ArtifactTooLarge(BuildError):
    ref = "artifact-too-large"


class PublishError(SlipwayError):
    stage = "publish"
    ref = "publish-failed"


class CredentialsError(SlipwayError):
    stage = "credentials"
    ref = "credentials-invalid"


class DeployError(SlipwayError):
    stage = "deploy"
    ref = "deploy-failed"


class VerificationFailed(SlipwayError):
    stage = "verify"
    ref = "verification-failed"


class CanaryFailed(VerificationFailed):
    """The canary verdict said FAIL (or an alarm newly fired, or INCONCLUSIVE was set to fail): roll back."""

    stage = "canary"
    ref = "canary-failed"


class ApprovalRejected(SlipwayError):
    """An approval gate said no (or nobody answered in time). Nothing in the environment was touched."""

    stage = "approval"
    ref = "approval-rejected"


class RollbackError(SlipwayError):
    stage = "rollback"
    ref = "rollback-failed"


class LedgerError(SlipwayError):
    stage = "ledger"
    ref = "ledger-failed"


class LocalStackError(SlipwayError):
    stage = "local-stack"
    ref = "local-stack-failed"


class ReleaseFailed(SlipwayError):
    """The release as a whole: names the stage, the check and the evidence; carries per-environment outcomes."""

    stage = "release"
    ref = "release-failed"

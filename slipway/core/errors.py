"""Slipway's errors: one base class, one subclass per stage, and every reference declared once.

Every error carries the stage it happened in, what it was acting on (the target), a short kebab-case
reference and a hint. ``str(err)`` is the one line a user reads: ``<what failed> (<target>): <hint>``.
Errors raised from SDK errors are always chained (``raise ... from exc``).

References are declared at the end of this module (``REFERENCES``): each with the error classes that raise it.
The exit code of the ``slipway`` command comes from there too (``exit_code_for``): 2 when the request cannot be
carried out as asked (bad input or configuration; nothing was touched), 1 when it ran and failed.
tests/unit/test_error_references.py keeps the table and the code in step: a reference raised anywhere must be
declared, a declared one must be raised somewhere, and every reference the diagnosis rules match is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

BAD_INPUT = 2  # the request cannot be carried out as asked: nothing was touched
RAN_AND_FAILED = 1


class SlipwayError(Exception):
    """Base class. ``stage`` names the pipeline stage; ``ref`` is a stable kebab-case reference."""

    stage: str = "slipway"
    ref: str = "error"
    transient: bool = False  # True when a retry may succeed (throttling, 5xx, connection errors)
    exit_code: ClassVar[int] = RAN_AND_FAILED

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
    exit_code = BAD_INPUT


class InputError(SlipwayError):
    """Bad command-line or flow input (release ids, environment names, ...)."""

    stage = "input"
    ref = "invalid-input"
    exit_code = BAD_INPUT


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


class PreflightFailed(SlipwayError):
    """The built artifact or the target account failed a check before anything was published or deployed."""

    stage = "preflight"
    ref = "preflight-failed"


class CredentialsError(SlipwayError):
    stage = "credentials"
    ref = "credentials-invalid"
    exit_code = BAD_INPUT


class DeployError(SlipwayError):
    stage = "deploy"
    ref = "deploy-failed"


class ReleaseAborted(DeployError):
    """A person aborted the running release (``slipway abort``): traffic goes back to the stable version at once."""

    stage = "abort"
    ref = "release-aborted"


class HookFailed(DeployError):
    """A lifecycle hook (slipway.yaml ``hooks:``) failed, timed out or refused the release: the stage fails and rolls back."""

    stage = "hook"
    ref = "hook-failed"


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


class EnvironmentFrozen(ApprovalRejected):
    """The environment is in a freeze window (slipway.yaml ``freeze:`` or a shared block) and no approved override
    lets the release in. Nothing in the environment was touched."""

    stage = "freeze"
    ref = "environment-frozen"
    exit_code = BAD_INPUT


class RollbackError(SlipwayError):
    stage = "rollback"
    ref = "rollback-failed"


class LedgerError(SlipwayError):
    stage = "ledger"
    ref = "ledger-failed"


class LocalStackError(SlipwayError):
    stage = "local-stack"
    ref = "local-stack-failed"
    exit_code = BAD_INPUT  # the embedded stack could not be set up on this machine: nothing ran


class SandboxUnavailable(SlipwayError):
    """Repository code cannot run sandboxed on this machine (bubblewrap missing or without namespaces): nothing ran."""

    stage = "sandbox"
    ref = "sandbox-unavailable"
    exit_code = BAD_INPUT


class ReleaseFailed(SlipwayError):
    """The release as a whole: names the stage, the check and the evidence; carries per-environment outcomes."""

    stage = "release"
    ref = "release-failed"


# ---- declared references ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """A stable name for one cause of failure. ``raised_as``: the error classes that carry it (the first is its
    usual one; a step that fails during a rollback raises the same reference as a RollbackError).
    ``exit_code``: set only where the reference overrides its class (a request that cannot be carried out)."""

    name: str
    raised_as: tuple[type[SlipwayError], ...]
    exit_code: int | None = None


def _declare(*entries: tuple[tuple[type[SlipwayError], ...], tuple[str, ...]] | tuple) -> dict[str, Reference]:
    table: dict[str, Reference] = {}
    for classes, names, *rest in entries:
        for name in names:
            if name in table:
                raise ValueError(f"error reference {name!r} declared twice")
            table[name] = Reference(name, classes, *rest)
    return table


_STEP = (DeployError, RollbackError)  # target steps that a rollback runs too

REFERENCES: dict[str, Reference] = _declare(
    ((SlipwayError,), ("error",)),
    ((SlipwayError,), ("nothing-to-approve", "ambiguous-approval", "approval-refused"), BAD_INPUT),
    ((SpecError,), (
        "invalid-spec", "spec-missing", "spec-not-yaml", "spec-too-large", "spec-yaml-refused", "path-escapes-repo",
        "handler-module-missing", "handler-function-missing", "handler-syntax-error", "empty-test-command",
        "invalid-http-check", "shared-function", "unsupported-runtime", "unsupported-architecture", "spec-app-mismatch",
    )),
    ((SpecError, BuildError), ("dockerfile-missing",)),
    ((InputError, SpecError), ("unknown-environment",)),
    ((InputError,), (
        "invalid-input", "invalid-ref", "hostile-repo-url", "credentials-in-url", "repo-not-found", "bad-clone-timeout",
        "promotion-gate", "nothing-to-diagnose", "unknown-flag", "invalid-flag-input", "flag-name-clash",
    )),
    ((CloneError,), ("clone-failed", "clone-timed-out", "repo-unreachable")),
    ((CloneError,), ("unknown-ref", "not-a-repository", "host-not-found"), BAD_INPUT),  # the request names no repository or commit
    ((TestsFailed,), ("tests-failed", "tests-timed-out", "repo-dir-missing", "test-env-install-failed", "test-requirements-missing")),
    ((BuildError,), (
        "build-failed", "context-missing", "dangling-symlink", "dependency-install-failed", "docker-build-failed",
        "docker-build-timeout", "dockerfile-outside-context", "invalid-build-input", "invalid-tag-input", "not-a-file",
        "requirements-missing", "source-dir-missing", "symlink-escapes", "symlink-loop",
    )),
    ((ArtifactTooLarge,), ("artifact-too-large",)),
    ((BuildError, PublishError, DeployError), ("docker-unreachable",)),
    ((PreflightFailed,), ("preflight-failed", "role-missing")),
    ((CredentialsError, PreflightFailed), ("secret-unreadable",)),  # a secret reference in slipway.yaml cannot be read
    ((PublishError,), (
        "publish-failed", "artifact-digest-mismatch", "bucket-missing", "image-missing", "invalid-image-name", "push-failed",
        "record-exists", "registry-error", "registry-unreachable", "tag-exists-with-other-digest", "tag-moved-during-push",
    )),
    ((CredentialsError,), (
        "credentials-invalid", "credentials-missing", "credentials-refused", "region-missing", "block-missing",
        "store-block-missing", "target-block-missing", "registry-block-missing", "git-token-block-missing",
        "ecr-token-invalid", "registry-credentials-refused", "flag-access-denied",
    )),
    ((DeployError,), (
        "deploy-failed", "code-sha-mismatch", "concurrent-change", "container-remove-failed",
        "container-start-failed", "drift", "ecs-container-not-found", "engine-unavailable", "function-owned-elsewhere",
        "health-check-failed", "image-not-found", "image-not-pinned", "invalid-function-name", "invalid-health-path",
        "invalid-ports", "invalid-route", "lambda-update-failed", "lambda-update-timeout", "listen-port-in-use",
        "port-range-exhausted", "proxy-config-rejected", "proxy-reload-failed", "proxy-start-failed",
        "proxy-unavailable", "unknown-target-type", "wrong-artifact-type",
    )),
    ((DeployError,), ("environment-locked", "not-a-flag"), BAD_INPUT),
    ((DeployError, PublishError, RollbackError), ("artifact-tampered",)),  # a stored object or pointer changed outside Slipway
    (_STEP, (
        "aws-unreachable", "canary-not-running", "ecs-cluster-not-found", "ecs-not-stable", "ecs-rollout-failed",
        "ecs-service-not-found", "invalid-traffic-split", "release-not-runnable", "stable-not-running", "strategy-unsupported",
    )),
    ((VerificationFailed,), ("verification-failed", "alarm-missing", "alarms-unavailable", "traffic-invoke-failed")),
    ((VerificationFailed, DeployError), ("canary-metrics-unavailable",)),
    ((CanaryFailed,), ("canary-failed", "canary-inconclusive", "alarm-fired")),
    ((ApprovalRejected,), ("approval-rejected",)),
    ((EnvironmentFrozen,), ("environment-frozen",)),
    ((ReleaseAborted,), ("release-aborted",)),
    ((HookFailed,), ("hook-failed",)),
    ((InputError,), ("nothing-running",), BAD_INPUT),  # abort / promote-now with no release in progress
    ((RollbackError,), ("rollback-failed",)),
    ((RollbackError,), ("unknown-release", "nothing-to-roll-back-to"), BAD_INPUT),
    ((LedgerError,), ("ledger-failed", "ledger-contention", "ledger-corrupt", "ledger-tampered")),
    ((LocalStackError,), ("local-stack-failed",)),
    ((SandboxUnavailable,), ("sandbox-unavailable",)),
    ((ReleaseFailed,), ("release-failed", "verify-failed", "manifest-missing", "nothing-to-promote")),
    ((ReleaseFailed,), ("nothing-deployed",), BAD_INPUT),
)


def exit_code_for(exc: BaseException) -> int:
    """The ``slipway`` command's exit code for an error: the reference's own, else its class's; 1 for anything
    that is not a Slipway error (it ran and failed in a way Slipway did not foresee)."""
    if not isinstance(exc, SlipwayError):
        return RAN_AND_FAILED
    declared = REFERENCES.get(exc.ref)
    if declared is not None and declared.exit_code is not None:
        return declared.exit_code
    return type(exc).exit_code

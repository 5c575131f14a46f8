"""The steps of a staged deploy and of a rollback, each recorded in the ledger.

Order matters for "never a broken prod left behind": the ledger says ``deploy-started`` (with the version
we are about to serve and the verified one we came from) *before* the alias moves, so a process killed at
any point leaves a durable in-progress record that the next run reconciles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slipway.artifact.store import ArtifactStore
from slipway.core.errors import DeployError, RollbackError, VerificationFailed
from slipway.record.ledger import EnvHead, Ledger, LedgerEntry, LiveRelease
from slipway.core.models import ArtifactRef, DeployResult, VerifyResult
from slipway.targets.protocol import Target
from slipway.spec.schema import Spec
from slipway.verify.lambda_checks import failure_error


class EnvRef(BaseModel):
    """Which environment of which app a step acts on, and where it is served: everything needed to resolve its
    ledger and target (blocks, clients) once per run. Typed and frozen; it replaces the dicts that used to carry an
    environment between tasks. ``spec`` is absent for a rollback (the ledger's recorded location is enough)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    app: str
    environment: str
    store_block: str = "default"
    target_type: str = "lambda"
    location: dict[str, Any] = Field(default_factory=dict)
    target_block: str | None = None
    spec: Spec | None = None
    checks: tuple[dict, ...] = ()
    flags: dict[str, dict] | None = None  # feature flags delivered with this deploy: {name: {version, value}}

    def with_flags(self, flags: dict[str, dict] | None) -> "EnvRef":
        return self.model_copy(update={"flags": flags})

    def cache_key(self) -> str:
        """Equal for two references that resolve to the same ledger and target."""
        import json

        return json.dumps([self.app, self.environment, self.store_block, self.target_type, self.location, self.target_block,
                           self.spec.digest() if self.spec else None, list(self.checks), self.flags], sort_keys=True, default=str)


@dataclass
class EnvContext:
    """One app + environment: the ledger, the target that serves it, and the smoke checks.

    With no smoke checks in the spec, a deploy is still verified by the target's default check (one Lambda
    invocation that must not fail; one GET of the health path)."""

    ledger: Ledger
    app: str
    environment: str
    target: Target
    checks: list[dict] = field(default_factory=list)
    run_id: str | None = None
    target_block: str | None = None
    flags: dict | None = None  # feature flags delivered with this deploy: {name: {version, value}} (recorded in the ledger)
    store: ArtifactStore | None = None  # where releases' manifests are: a rollback target is proven against its own

    @property
    def effective_checks(self) -> list[dict]:
        return self.checks or [self.target.default_check()]

    def head(self) -> EnvHead:
        return self.ledger.head(self.app, self.environment)


def outside_changes(ctx: EnvContext) -> list[str]:
    """Changes made outside Slipway that leave the live version in place but that a release would silently undo or
    carry along (a target that cannot tell says nothing): e.g. a hand-made canary's routing weight on the alias."""
    find = getattr(ctx.target, "outside_changes", None)
    return find(ctx.app) if find else []


def check_no_drift(ctx: EnvContext) -> None:
    """Refuse to deploy on top of a target changed outside Slipway (it serves another version than the ledger's live
    release, or that version runs other code): a rollback would not know where to return. Nothing is touched."""
    head = ctx.head()
    if head.live is None or head.in_progress is not None:
        return  # nothing verified to compare with, or a run's in-progress record (reconciled before this)
    serving = ctx.target.serving()
    detail = None
    if serving is None:
        return  # the target is gone (deleted, a fresh machine): deploying recreates it and breaks nothing that is served
    if serving != head.live.version:
        detail = f"{ctx.target.name} serves {serving}"
    else:
        check_identity = getattr(ctx.target, "identity_mismatch", None)
        mismatch = check_identity(head.live.version, head.live) if check_identity else None
        if mismatch:
            detail = f"{ctx.target.name}: {mismatch}"
        elif outside := outside_changes(ctx):
            detail = f"{ctx.target.name}: {'; '.join(outside)}"
    if detail:
        raise DeployError(
            f"live state changed outside Slipway: {detail}; the ledger says {head.live.release_id} (version {head.live.version})",
            target=f"{ctx.app}/{ctx.environment}",
            hint="put it back with the verify flow (heal=true) or `slipway rollback`, or record the outside change as a release; "
                 "then release again (nothing was deployed)",
            ref="drift", evidence={"drift": {"serving": serving, "ledger_release": head.live.release_id,
                                             "ledger_version": head.live.version, "detail": detail}},
        )


def publish(ctx: EnvContext, artifact: ArtifactRef) -> DeployResult:
    """Make a new version on the target; nothing live changes. Refused when the live state drifted (see check_no_drift)."""
    check_no_drift(ctx)
    return ctx.target.prepare(artifact).model_copy(update={"environment": ctx.environment})


def begin(ctx: EnvContext, artifact: ArtifactRef, version: str, message: str, head: EnvHead | None = None) -> int:
    """Record ``deploy-started`` (the durable "in progress" mark) and return its sequence number. ``head``: the
    environment's head as the caller just read it (the append itself still reads the ledger for its sequence number)."""
    head = head or ctx.head()
    if ctx.flags:  # shown in `slipway history`: which flag versions this deploy delivered
        message += "; flags " + ", ".join(f"{n}={d['value']} (v{d['version']})" for n, d in sorted(ctx.flags.items()))
    entry, _ = ctx.ledger.record(
        ctx.app, ctx.environment, "deploy-started", release_id=artifact.release_id, version=version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id, message=message,
        detail={
            "from_release": head.live.release_id if head.live else None,
            "from_version": ctx.target.serving(),
            "target_type": ctx.target.type, "location": ctx.target.location(), "target_block": ctx.target_block,
            "image": artifact.image.pinned if artifact.image else None,
            **ctx.target.location(),
            **({"flags": ctx.flags} if ctx.flags is not None else {}),
        },
    )
    return entry.seq


def shift_traffic(ctx: EnvContext, artifact: ArtifactRef, deployed: DeployResult) -> int:
    """Record intent, move the alias to the new version (100%), record that it moved. Returns the
    sequence number of the ``deploy-started`` entry, which ``verify`` checks is still ours."""
    seq = begin(ctx, artifact, deployed.version, f"moving {ctx.target.name} to version {deployed.version}")
    ctx.target.point(deployed.version)
    ctx.ledger.record(
        ctx.app, ctx.environment, "deployed", release_id=artifact.release_id, version=deployed.version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id,
        message=f"{ctx.target.name} → version {deployed.version}",
    )
    return seq


def begin_reverify(ctx: EnvContext, artifact: ArtifactRef) -> tuple[int, str]:
    """An unchanged re-release re-verifies the live release; a failure then rolls back like a deploy's."""
    head = ctx.head()
    assert head.live is not None and head.live.release_id == artifact.release_id
    seq = begin(ctx, artifact, head.live.version, f"re-verifying {artifact.release_id} (version {head.live.version})", head)
    return seq, head.live.version


def verify(ctx: EnvContext, artifact: ArtifactRef, version: str, started_seq: int) -> VerifyResult:
    """Run the smoke checks through the alias; record verified, or verify-failed and raise.

    ``verified`` is recorded only while this run's ``deploy-started`` is still the one in progress: if
    another run (a reconcile, a manual rollback) changed the environment meanwhile, this run must not
    claim the environment is live on its release.
    """
    result = ctx.target.verify(ctx.effective_checks, version)
    common = dict(release_id=artifact.release_id, version=version, artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id)
    if result.passed:
        current = ctx.head().in_progress
        if current is None or current.started_seq != started_seq:
            raise DeployError(
                f"another run changed {ctx.environment} while this one was verifying it",
                target=f"{ctx.app}/{ctx.environment}",
                hint="see `slipway history`; release again once the other run has finished",
                ref="concurrent-change",
            )
        ctx.ledger.record(
            ctx.app, ctx.environment, "verified", message=f"{len(result.checks)} smoke check(s) passed",
            detail={"checks": ctx.effective_checks, "results": [c.model_dump(mode="json") for c in result.checks],
                    "image": artifact.image.pinned if artifact.image else None},
            **common,
        )
        ctx.target.settle(version)
        return result
    err = failure_error(result, ctx.environment)
    ctx.ledger.record(ctx.app, ctx.environment, "verify-failed", message=err.message, detail=err.evidence, **common)
    raise err


def reverify_in_place(ctx: EnvContext, artifact: ArtifactRef, head: EnvHead | None = None) -> tuple[VerifyResult, LedgerEntry, EnvHead] | None:
    """An unchanged re-release's way through an environment that is live on ``artifact``'s release with nothing in
    progress: run the smoke checks against the live version and record ``verified``, without the environment's lock
    and without a ``deploy-started`` mark, because nothing is moved or deployed. Returns None, having recorded
    nothing, whenever the full way (under the lock: begin_reverify, verify, a rollback if it fails) must decide:
    something is in progress or another release is live, a check failed, or the ledger moved on while the checks ran
    (``verified`` is appended only right after the entry the decision was made on). ``head``: the environment's head
    as the caller read it (a head read earlier is safe: anything recorded since makes the append refuse). Returns the
    checks' result, the ``verified`` entry and the head after it."""
    head = head or ctx.head()
    live = head.live
    if head.in_progress is not None or live is None or live.release_id != artifact.release_id:
        return None
    result = ctx.target.verify(ctx.effective_checks, live.version)
    if not result.passed:
        return None
    written = ctx.ledger.append_if_unchanged(LedgerEntry(
        app=ctx.app, environment=ctx.environment, kind="verified", release_id=artifact.release_id, version=live.version,
        artifact_sha256=artifact.sha256, commit=artifact.commit, run_id=ctx.run_id,
        message=f"{len(result.checks)} smoke check(s) passed; re-verified in place (nothing deployed)",
        detail={"checks": ctx.effective_checks, "results": [c.model_dump(mode="json") for c in result.checks],
                "image": artifact.image.pinned if artifact.image else None, "reverified": True},
    ), head.last_seq)
    if written is None:
        return None
    ctx.target.settle(live.version)
    return result, *written


def prove_release(ctx: EnvContext, release: LiveRelease) -> None:
    """Before traffic moves back to a release the ledger recorded: the target's version still runs that release's code
    (Lambda's CodeSha256, a container's image digest), and the artifact store's manifest for its digest names this
    app, commit and release. A ledger entry, a version or a manifest changed outside Slipway is refused as tampering,
    naming what differs; nothing is moved."""
    problems = []
    check_identity = getattr(ctx.target, "identity_mismatch", None)
    mismatch = check_identity(release.version, release) if check_identity else None
    if mismatch:
        problems.append(f"{ctx.target.name}: {mismatch}")
    if ctx.store is not None and release.artifact_sha256:
        where = ctx.store.manifest_key(ctx.app, release.artifact_sha256)
        try:
            where = ctx.store.provenance_key(ctx.app, release.artifact_sha256, release.release_id)
            manifest, why = ctx.store.provenance(ctx.app, release.artifact_sha256, release.release_id), "missing"
        except (ValueError, TypeError) as exc:  # not JSON, not a manifest, or a signature that does not verify
            manifest, why = None, str(exc).splitlines()[0]
        if manifest is None:
            problems.append(f"the artifact store has no valid manifest for it ({where}: {why})")
        else:
            recorded = {"app": ctx.app, "release": release.release_id, "commit": release.commit}
            found = {"app": manifest.app, "release": manifest.release_id, "commit": manifest.commit}
            differs = [f"{k} {found[k]!s:.24} (the ledger says {recorded[k]!s:.24})" for k in recorded if recorded[k] and recorded[k] != found[k]]
            if differs:
                problems.append(f"its manifest {where} names " + ", ".join(differs))
    if problems:
        raise RollbackError(
            f"refusing to move {ctx.environment} back to {release.release_id} (version {release.version}): " + "; ".join(problems),
            target=f"{ctx.app}/{ctx.environment}",
            hint="nothing was moved back; the ledger or the store was changed outside Slipway: find out who, then roll back "
                 "to another verified release (`slipway history`) or release a fix",
            ref="artifact-tampered", evidence={"release": release.release_id, "version": release.version, "problems": problems},
        )


@dataclass(frozen=True)
class RollbackOutcome:
    environment: str
    to_release: str | None
    to_version: str | None
    from_version: str | None
    removed_alias: bool
    message: str


def roll_back(
    ctx: EnvContext,
    *,
    to_release: str | None = None,
    reason: str = "",
    only_if_in_progress: bool = False,
    only_if_run_id: str | None = None,
    kind: str = "rolled-back",
    cause: dict | None = None,
) -> RollbackOutcome | None:
    """Put the environment back on a verified release and verify it again.

    Automatic rollback (``only_if_in_progress``): back to the live release the ledger had before the failed
    deploy — a no-op when nothing is in progress (so a second trigger for the same failure does nothing).
    Manual: ``to_release`` or the previous verified release.
    """
    head = ctx.head()
    ip = head.in_progress
    if only_if_in_progress and (ip is None or (only_if_run_id and ip.run_id != only_if_run_id)):
        return None  # nothing of this run's is in progress: already rolled back, or another run's deploy
    restore_version = None
    if to_release:
        target = head.verified_release(to_release)
        if target is None:
            known = ", ".join(r.release_id for r in reversed(head.verified)) or "none"
            raise RollbackError(
                f"release {to_release!r} was never verified in {ctx.environment}",
                hint=f"choose one of the verified releases: {known}",
                ref="unknown-release",
            )
    elif ip is not None and ip.kind == "rollback":
        target = head.verified_release(ip.release_id) if ip.release_id else None  # finish the interrupted rollback
    elif ip is not None:
        # a deploy (or a re-verification) that did not end verified: back to the live release, unless the
        # live release is the one that just failed, then to the one before it
        # (a redeploy of the live release as a new version, e.g. with changed feature flags, goes back to its live version)
        same_version = head.live is not None and head.live.release_id == ip.release_id and (ip.version in (None, head.live.version))
        target = head.live if head.live and not same_version else head.previous_verified()
        if target is None and ip.from_version and ip.from_version != ip.version:
            restore_version = ip.from_version  # an alias Slipway did not create: put back what it served
        elif target is None and head.live and head.live.release_id == ip.release_id:
            # the live release failed its re-verification and nothing verified came before it: taking it down
            # would not help anyone; say so and leave it serving (a fix-forward release replaces it)
            ctx.ledger.record(
                ctx.app, ctx.environment, "rollback-failed", release_id=ip.release_id, version=ip.version, run_id=ctx.run_id,
                message=f"{ip.release_id} failed re-verification and no earlier verified release exists: left serving",
            )
            raise RollbackError(
                f"{ip.release_id} failed re-verification in {ctx.environment} and there is no earlier verified release",
                target=ctx.target.name, hint="left serving; release a fix (or `slipway rollback --to`)", ref="nothing-to-roll-back-to",
            )
    else:
        target = head.previous_verified()
        if target is None:
            raise RollbackError(
                f"no earlier verified release in {ctx.environment} to roll back to",
                target=f"{ctx.app}/{ctx.environment}",
                hint="see `slipway history` for what has been deployed",
                ref="nothing-to-roll-back-to",
            )
    leaving = ip.release_id if ip is not None and ip.kind == "deploy" else (head.live.release_id if head.live else None)
    serving = ctx.target.serving()
    if head.canary and ip is not None and ip.kind == "deploy" and ip.version:
        serving = ip.version  # during a canary the alias/proxy's primary is the stable side: we leave the canary
    ctx.ledger.record(
        ctx.app, ctx.environment, "rollback-started", release_id=target.release_id if target else None,
        version=target.version if target else None, run_id=ctx.run_id,
        message=f"rolling back from version {serving}: {reason}" if reason else f"rolling back from version {serving}",
        detail={"from_version": serving, "from_release": leaving},
    )
    try:
        if target is None and restore_version:
            ctx.target.point(restore_version, error_cls=RollbackError)
            message = f"no verified release existed; {ctx.target.name} back on version {restore_version}, which it served before"
        elif target is None:
            ctx.target.remove()
            message = f"no verified release existed; {ctx.target.name} no longer serves the failed version"
        else:
            prove_release(ctx, target)  # before any traffic moves back to it
            ctx.target.point(target.version, target, error_cls=RollbackError)
            result = ctx.target.verify(target.checks or [ctx.target.default_check()], target.version)
            if not result.passed:
                failed = result.first_failure
                raise RollbackError(
                    f"rolled back {ctx.environment} to {target.release_id} (version {target.version}) but it failed verification: "
                    f"{failed.name}: {failed.detail}",
                    hint="the environment needs attention: `slipway history` shows the releases; roll back further with --to",
                    evidence={"checks": [c.model_dump(mode="json") for c in result.checks]},
                )
            message = f"back on {target.release_id} (version {target.version}), re-verified"
    except Exception as exc:
        text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
        ctx.ledger.record(
            ctx.app, ctx.environment, "rollback-failed", release_id=target.release_id if target else None,
            version=target.version if target else None, run_id=ctx.run_id, message=text,
        )
        raise
    now_serving = target.version if target else restore_version
    failed_versions = {serving, ip.version if ip is not None and ip.kind == "deploy" else None} - {None, now_serving}
    for version in failed_versions:  # the failed attempt's container(s); best effort: traffic is already back
        try:
            ctx.target.discard(version)
        except Exception as exc:  # noqa: BLE001 - reported, never turns a completed rollback into a failed one
            reason = f"{reason}; could not clean up version {version}: {exc}" if reason else f"could not clean up version {version}: {exc}"
    ctx.ledger.record(
        ctx.app, ctx.environment, kind, release_id=target.release_id if target else None,
        version=target.version if target else None, artifact_sha256=target.artifact_sha256 if target else None,
        commit=target.commit if target else None, run_id=ctx.run_id, message=message + (f" ({reason})" if reason else ""),
        detail={"from_release": leaving, "from_version": serving, **({"cause": cause} if cause else {})},
    )
    return RollbackOutcome(
        environment=ctx.environment, to_release=target.release_id if target else None,
        to_version=target.version if target else None, from_version=serving, removed_alias=target is None and not restore_version, message=message,
    )


def reconcile(ctx: EnvContext, head: EnvHead | None = None) -> RollbackOutcome | None:
    """A run that finds an in-progress record left by a dead run puts the last verified release back first. ``head``:
    the head the caller just read, under the environment's lock."""
    head = head or ctx.head()
    if head.in_progress is None:
        return None
    started = head.in_progress
    return roll_back(
        ctx, only_if_in_progress=True, kind="reconciled",
        reason=f"run {started.run_id or '?'} left a {started.kind} of {started.release_id} unfinished since {started.started_at}",
    )


def check_live(ctx: EnvContext, *, heal: bool = False) -> dict:
    """Is what the target serves what the ledger says is live, and does it still pass its smoke checks?

    ``status``: ok | drift (the target serves another version) | failing (the live version fails its checks)
    | in-progress (a release or rollback is under way: not judged) | empty. With ``heal``, a drift is put back
    on the ledger's live release (pointed and verified again, recorded as ``reconciled``); a failing live
    release is only reported (pointing at it again would not help; roll back or release a fix).
    """
    head = ctx.head()
    if head.live is None:
        return {"status": "empty", "detail": "nothing live"}
    live = head.live
    base = {"release_id": live.release_id, "expected_version": live.version}
    if head.in_progress is not None:
        return {**base, "status": "in-progress", "detail": f"{head.in_progress.kind} of {head.in_progress.release_id} under way"}
    serving = ctx.target.serving()
    if serving != live.version:
        detail = f"{ctx.target.name} serves {serving or 'nothing'}; the ledger says {live.release_id} (version {live.version})"
        if heal:
            outcome = roll_back(ctx, to_release=live.release_id, reason=f"drift: {detail}", kind="reconciled")
            return {**base, "status": "drift", "serving": serving, "healed": True, "detail": f"{detail}; healed: {outcome.message}"}
        return {**base, "status": "drift", "serving": serving, "healed": False, "detail": detail}
    check_identity = getattr(ctx.target, "identity_mismatch", None)
    mismatch = check_identity(live.version, live) if check_identity else None
    if mismatch:
        return {**base, "status": "drift", "serving": serving, "healed": False,
                "detail": f"{ctx.target.name}: {mismatch} (the ledger says {live.release_id})"}
    outside = outside_changes(ctx)
    if outside:
        detail = f"{ctx.target.name}: {'; '.join(outside)}"
        if heal:
            undone = ctx.target.heal_outside_changes(ctx.app)
            ctx.ledger.record(ctx.app, ctx.environment, "healed", release_id=live.release_id, version=live.version, run_id=ctx.run_id,
                              message=f"undid changes made outside Slipway: {undone}", detail={"found": outside})
            return {**base, "status": "drift", "serving": serving, "healed": True, "detail": f"{detail}; healed: {undone}"}
        return {**base, "status": "drift", "serving": serving, "healed": False, "detail": detail}
    result = ctx.target.verify(live.checks or [ctx.target.default_check()], live.version)
    if not result.passed:
        failed = result.first_failure
        return {**base, "status": "failing", "serving": serving, "healed": False,
                "detail": f"smoke check {failed.name!r} fails on the live release: {failed.detail}"}
    return {**base, "status": "ok", "serving": serving, "detail": f"{len(result.checks)} smoke check(s) pass"}


def live_release(ctx: EnvContext) -> LiveRelease | None:
    return ctx.head().live


__all__ = ["EnvContext", "RollbackOutcome", "begin", "begin_reverify", "reverify_in_place", "publish", "shift_traffic", "verify", "roll_back", "reconcile", "VerificationFailed"]

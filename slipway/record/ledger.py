"""The ledger: the durable record of what is live, in the artifact store.

Per app and environment::

    ledger/{app}/{env}/entries/{seq:010d}.json   append-only; each sequence number is claimed with a
                                                 conditional write (IfNoneMatch="*"): one writer wins
    ledger/{app}/{env}/head.json                 a checkpoint of the folded state, updated with IfMatch
                                                 (optimistic concurrency)

The entries are the truth; the head is derivable from them. A reader takes the head and folds in any
entries written after its ``last_seq`` (a writer that died between its entry and its head update loses
nothing). ``fold`` is a pure function, so the state machine is unit-tested without S3.
"""

from __future__ import annotations

import getpass
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from slipway.core.aws import is_not_found, is_precondition_failed, translate
from slipway.core.signing import Signer, opened, seal
from slipway.core.errors import LedgerError

READ_PARALLELISM = 8  # entries read at once (a history, the tail after a checkpoint)

EntryKind = Literal[
    "deploy-started",  # about to move the alias to a new version (in progress from here)
    "deployed",  # alias now points at the new version, not yet verified
    "verified",  # smoke checks passed: this release is live
    "verify-failed",  # smoke checks failed: a rollback must follow
    "rollback-started",
    "rolled-back",  # alias back on a verified release (or removed when there was none)
    "rollback-failed",  # the environment needs a human: see the entry's message
    "reconciled",  # a run found an abandoned in-progress record and put the live release back
    "traffic-shifted",  # canary/linear: detail.percent of requests now go to the new version
    "canary-verdict",  # PASS / FAIL / INCONCLUSIVE of one bake, with its evidence in detail
    "alarm-fired",  # an alarm named in the spec went to ALARM during the release
    "approved",  # an approval gate (or a paused INCONCLUSIVE canary) was answered yes: detail.approver, reason
    "rejected",  # ... answered no, or timed out
    "superseded",  # a release older than the live one (or than one queued behind it) stopped here, touching nothing
    "healed",  # the verify flow (heal) undid changes made outside Slipway around the live version: detail.found
    "abort-requested",  # a person asked the running release to stop: traffic back to stable (actor, message = why)
    "promote-requested",  # a person asked the running canary to skip its remaining bakes and promote (actor, why)
    "hook",  # a lifecycle hook's answer: detail.phase, hook, passed, detail, answer (truncated), seconds
]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_actor() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in some containers
        return "slipway"


class LedgerEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int = 0
    app: str
    environment: str
    kind: EntryKind
    at: str = Field(default_factory=utcnow)
    release_id: str | None = None
    version: str | None = None
    artifact_sha256: str | None = None
    commit: str | None = None
    run_id: str | None = None
    actor: str = Field(default_factory=default_actor)
    message: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class LiveRelease(BaseModel):
    model_config = ConfigDict(frozen=True)

    release_id: str
    version: str
    artifact_sha256: str | None = None
    commit: str | None = None
    verified_at: str | None = None
    checks: list[dict[str, Any]] = Field(default_factory=list, description="smoke checks it passed (re-run on rollback)")
    image: str | None = None  # repo@sha256:... for container releases (what a rollback runs again)
    flags: dict[str, dict] | None = None  # the feature flags this version was deployed with (None: not recorded)


class InProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["deploy", "rollback"]
    release_id: str | None
    version: str | None
    started_seq: int
    started_at: str
    run_id: str | None = None
    failed: bool = False
    message: str = ""
    from_version: str | None = None  # what the alias served before this run touched it
    flags: dict[str, dict] | None = None  # the feature flags this deploy delivers (None: a re-verification, or not recorded)
    control: dict | None = None  # abort or promote-now asked for this run: {kind, actor, reason, seq}


class EnvHead(BaseModel):
    """The folded state of one environment."""

    app: str
    environment: str
    last_seq: int = 0
    live: LiveRelease | None = None
    serving_version: str | None = None  # what the alias points at, as far as the ledger knows
    in_progress: InProgress | None = None
    verified: list[LiveRelease] = Field(default_factory=list, description="verified releases, oldest first")
    updated_at: str | None = None
    function: str | None = None  # where the environment is served: recorded at deploy time so that
    alias: str | None = None  # rollback and history work without the app's spec
    target_block: str | None = None
    target_type: str | None = None  # lambda | docker-host | ecs
    location: dict[str, Any] = Field(default_factory=dict)  # the target's own coordinates (function/alias, endpoint, service)
    rolled_away: list[str] = Field(default_factory=list, description="releases rolled back from: not chosen again automatically")
    canary: dict[str, Any] | None = None  # during a canary/linear deploy: {"version", "percent", "stable_version"}

    @property
    def status(self) -> str:
        if self.in_progress is not None:
            if self.in_progress.kind == "rollback" and self.in_progress.failed:
                return "rollback-failed"
            return "in-progress"
        return "live" if self.live else "empty"

    def verified_release(self, release_id: str) -> LiveRelease | None:
        return next((r for r in reversed(self.verified) if r.release_id == release_id), None)

    def eligible(self, release: LiveRelease) -> bool:
        """Verified here and not rolled back from since: may be promoted from, or rolled back to."""
        return release.release_id not in self.rolled_away

    def previous_verified(self) -> LiveRelease | None:
        """The newest eligible verified release other than the live one (never one rolled back from)."""
        live_id = self.live.release_id if self.live else None
        return next((r for r in reversed(self.verified) if r.release_id != live_id and self.eligible(r)), None)

    def has_verified(self, *, commit: str | None = None, release_id: str | None = None) -> bool:
        return any(
            self.eligible(r) and (release_id is None or r.release_id == release_id) and (commit is None or r.commit == commit)
            for r in self.verified
        )


def fold(head: EnvHead, entry: LedgerEntry) -> EnvHead:
    """Apply one entry to the head. Pure: returns a new head."""
    h = head.model_copy(deep=True)
    h.last_seq = max(h.last_seq, entry.seq)
    h.updated_at = entry.at
    kind = entry.kind
    for key in ("function", "alias", "target_block", "target_type", "location"):
        if entry.detail.get(key):
            setattr(h, key, entry.detail[key])
    if kind == "deploy-started":
        h.in_progress = InProgress(
            kind="deploy", release_id=entry.release_id, version=entry.version, started_seq=entry.seq,
            started_at=entry.at, run_id=entry.run_id, from_version=entry.detail.get("from_version"),
            flags=entry.detail.get("flags"),
        )
    elif kind == "rollback-started":
        h.in_progress = InProgress(
            kind="rollback", release_id=entry.release_id, version=entry.version, started_seq=entry.seq,
            started_at=entry.at, run_id=entry.run_id,
        )
    elif kind in ("abort-requested", "promote-requested"):
        if h.in_progress is not None and h.in_progress.kind == "deploy" and h.in_progress.control is None:
            h.in_progress = h.in_progress.model_copy(update={"control": {
                "kind": kind.removesuffix("-requested"), "actor": entry.actor, "reason": entry.detail.get("reason", ""), "seq": entry.seq}})
    elif kind == "deployed":
        h.serving_version = entry.version
        h.canary = None
    elif kind == "traffic-shifted":
        h.canary = {"version": entry.version, "percent": entry.detail.get("percent"), "stable_version": entry.detail.get("stable_version")}
    elif kind == "verify-failed":
        if h.in_progress is not None:
            h.in_progress = h.in_progress.model_copy(update={"failed": True, "message": entry.message})
    elif kind == "verified":
        release = LiveRelease(
            release_id=entry.release_id or "?", version=entry.version or "?", artifact_sha256=entry.artifact_sha256,
            commit=entry.commit, verified_at=entry.at, checks=list(entry.detail.get("checks", [])), image=entry.detail.get("image"),
            flags=_verified_flags(h, entry),
        )
        h.live = release
        h.serving_version = release.version
        h.verified = [r for r in h.verified if r.release_id != release.release_id] + [release]
        h.rolled_away = [r for r in h.rolled_away if r != release.release_id]
        h.in_progress = None
        h.canary = None
    elif kind in ("rolled-back", "reconciled"):
        target = h.verified_release(entry.release_id) if entry.release_id else None
        if entry.release_id and target is None:
            target = LiveRelease(release_id=entry.release_id, version=entry.version or "?", artifact_sha256=entry.artifact_sha256, commit=entry.commit)
        leaving = entry.detail.get("from_release")
        if leaving and leaving != entry.release_id and leaving not in h.rolled_away:
            h.rolled_away = [*h.rolled_away, leaving]
        h.live = target
        h.serving_version = target.version if target else None
        h.in_progress = None
        h.canary = None
    elif kind == "rollback-failed":
        h.in_progress = InProgress(
            kind="rollback", release_id=entry.release_id, version=entry.version, started_seq=entry.seq,
            started_at=entry.at, run_id=entry.run_id, failed=True, message=entry.message,
        )
    return h


def _verified_flags(head: EnvHead, entry: LedgerEntry) -> dict[str, dict] | None:
    """The flags of a version just verified: those its deploy delivered, or, for a re-verification, the ones the same
    live version already had."""
    ip = head.in_progress
    if ip is not None and ip.kind == "deploy" and ip.flags is not None:
        return ip.flags
    live = head.live
    if live is not None and live.release_id == entry.release_id and live.version == entry.version:
        return live.flags
    return None


class Ledger:
    """Ledger operations against the artifact store's bucket."""

    def __init__(self, s3, bucket: str, prefix: str = "", *, kms_key_id: str | None = None, max_attempts: int = 50,
                 signer: Signer | None = None) -> None:
        self.s3 = s3
        self.signer = signer  # with a key: every entry and checkpoint is signed, and an entry that does not verify is refused
        self.bucket = bucket
        self.prefix = (prefix.strip("/") + "/") if prefix.strip("/") else ""
        self.max_attempts = max_attempts
        self._sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}

    def _base(self, app: str, env: str) -> str:
        return f"{self.prefix}ledger/{app}/{env}/"

    def _entry_key(self, app: str, env: str, seq: int) -> str:
        return f"{self._base(app, env)}entries/{seq:010d}.json"

    def _call(self, action: str, fn: Callable, **kwargs):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            raise translate(exc, LedgerError, action, target=f"s3://{self.bucket}") from exc

    # ---- reading ----------------------------------------------------------------------------------
    def _read_checkpoint(self, app: str, env: str) -> tuple[EnvHead, str | None]:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._base(app, env) + "head.json")
        except ClientError as exc:
            if is_not_found(exc):
                return EnvHead(app=app, environment=env), None
            raise translate(exc, LedgerError, "read the ledger head", target=f"{app}/{env}") from exc
        try:
            data, problem = opened(self.signer, self._base(app, env) + "head.json", obj["Body"].read())
            if problem:  # a checkpoint written without the key is not trusted: the (verified) entries are folded again
                raise ValueError(problem)
            return EnvHead.model_validate(data), obj["ETag"]
        except ValueError:  # the head is only a checkpoint of the entries: fold them again; the next write replaces it
            return EnvHead(app=app, environment=env), obj["ETag"]

    def _entries_after(self, app: str, env: str, seq: int, limit: int | None = None) -> list[LedgerEntry]:
        """Entries with a sequence number above ``seq`` (the newest ``limit`` of them, if given), oldest first."""
        prefix = self._base(app, env) + "entries/"
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, "StartAfter": self._entry_key(app, env, seq) if seq else ""}
        try:
            keys = [obj["Key"] for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs) for obj in page.get("Contents", [])]
            keys = sorted(keys)[-limit:] if limit else sorted(keys)
            entries = self._entries_at(keys)
        except ClientError as exc:
            raise translate(exc, LedgerError, "read ledger entries", target=f"{app}/{env}") from exc
        return sorted(entries, key=lambda e: e.seq)

    def _entries_at(self, keys: list[str]) -> list[LedgerEntry]:
        """The entries at ``keys``, read a few at a time (boto3 clients are thread-safe; S3 serves parallel reads):
        a history of 50 entries is 50 GETs, and one after another they are most of a re-release's AWS time."""
        if len(keys) <= 2:
            return [self._entry_at(key) for key in keys]
        with ThreadPoolExecutor(max_workers=min(READ_PARALLELISM, len(keys))) as pool:
            return list(pool.map(self._entry_at, keys))

    def _entry_at(self, key: str) -> LedgerEntry:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            data, problem = opened(self.signer, key, body)
        except ValueError:
            data, problem = None, None
        if problem:
            raise LedgerError(
                f"ledger object s3://{self.bucket}/{key} was not written by Slipway: {problem}",
                hint="someone wrote the ledger without the signing key: find out who; restore the object's previous version "
                     "(the bucket keeps versions) or move it aside; nothing was changed",
                ref="ledger-tampered",
            )
        try:
            return LedgerEntry.model_validate(data) if data is not None else LedgerEntry.model_validate_json(body)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError: one line, naming the object
            first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc)}
            where = ".".join(str(p) for p in first.get("loc", ())) or "the object"
            raise LedgerError(
                f"ledger object s3://{self.bucket}/{key} is not a valid ledger entry ({where}: {first.get('msg')})",
                hint="restore its previous version (the bucket keeps object versions) or move it aside after checking the "
                     "environment by hand; nothing was changed",
                ref="ledger-corrupt",
            ) from None

    def _read(self, app: str, env: str) -> tuple[EnvHead, str | None]:
        head, etag = self._read_checkpoint(app, env)
        for entry in self._entries_after(app, env, head.last_seq):
            head = fold(head, entry)
        return head, etag

    def head(self, app: str, env: str) -> EnvHead:
        return self._read(app, env)[0]

    def entries_after(self, app: str, env: str, seq: int) -> list[LedgerEntry]:
        """Entries with a sequence number above ``seq``, oldest first."""
        return self._entries_after(app, env, seq)

    def entries(self, app: str, env: str, limit: int | None = None) -> list[LedgerEntry]:
        return self._entries_after(app, env, 0, limit)

    def apps(self) -> list[str]:
        """Every app with a ledger in this store."""
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}ledger/", Delimiter="/"):
            out += [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", [])]
        return sorted(out)

    def environments(self, app: str) -> list[str]:
        resp = self._call(
            "list ledger environments", self.s3.list_objects_v2, Bucket=self.bucket, Prefix=f"{self.prefix}ledger/{app}/", Delimiter="/"
        )
        return sorted(p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in resp.get("CommonPrefixes", []))

    def history(self, app: str, env: str | None = None, limit: int | None = None) -> list[LedgerEntry]:
        """Entries newest first, across environments unless ``env`` is given (at most ``limit``)."""
        envs = [env] if env else self.environments(app)
        out = sorted((e for name in envs for e in self.entries(app, name, limit)), key=lambda e: (e.at, e.seq), reverse=True)
        return out[:limit] if limit else out

    # ---- writing ----------------------------------------------------------------------------------
    def append(self, entry: LedgerEntry) -> tuple[LedgerEntry, EnvHead]:
        """Append with the next sequence number (conditional write), then checkpoint the head."""
        app, env = entry.app, entry.environment
        for _ in range(self.max_attempts):
            head, etag = self._read(app, env)
            stamped = entry.model_copy(update={"seq": head.last_seq + 1})
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=self._entry_key(app, env, stamped.seq),
                    Body=seal(self.signer, self._entry_key(app, env, stamped.seq), stamped.model_dump(mode="json")),
                    ContentType="application/json",
                    IfNoneMatch="*",
                    **self._sse,
                )
            except ClientError as exc:
                if not is_precondition_failed(exc):
                    raise translate(exc, LedgerError, "append to the ledger", target=f"{app}/{env}") from exc
                # Someone holds this sequence number. If it is our own entry (botocore retried a write whose
                # reply was lost), it is appended already; otherwise re-read and try the next number.
                if not self._is_ours(app, env, stamped):
                    continue
            new_head = fold(head, stamped)
            self._checkpoint(new_head, etag)
            return stamped, new_head
        raise LedgerError(
            f"could not append to the ledger of {app}/{env} after {self.max_attempts} attempts",
            hint="too many concurrent writers; retry",
            ref="ledger-contention",
        )

    def append_if_unchanged(self, entry: LedgerEntry, last_seq: int) -> tuple[LedgerEntry, EnvHead] | None:
        """Append only if ``last_seq`` is still the ledger's newest entry (the caller read the head there and acted on
        it); None when another writer appended since, and nothing is written."""
        app, env = entry.app, entry.environment
        head, etag = self._read(app, env)
        if head.last_seq != last_seq:
            return None
        stamped = entry.model_copy(update={"seq": last_seq + 1})
        key = self._entry_key(app, env, stamped.seq)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=seal(self.signer, key, stamped.model_dump(mode="json")),
                               ContentType="application/json", IfNoneMatch="*", **self._sse)
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise translate(exc, LedgerError, "append to the ledger", target=f"{app}/{env}") from exc
            if not self._is_ours(app, env, stamped):
                return None  # another writer took the number between the read and the write
        new_head = fold(head, stamped)
        self._checkpoint(new_head, etag)
        return stamped, new_head

    def _is_ours(self, app: str, env: str, entry: LedgerEntry) -> bool:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._entry_key(app, env, entry.seq))["Body"].read()
        except ClientError:
            return False
        try:
            data, problem = opened(self.signer, self._entry_key(app, env, entry.seq), body)
            return problem is None and LedgerEntry.model_validate(data) == entry
        except ValueError:
            return False

    def _checkpoint(self, head: EnvHead, etag: str | None) -> None:
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self._base(head.app, head.environment) + "head.json",
                Body=seal(self.signer, self._base(head.app, head.environment) + "head.json", head.model_dump(mode="json")),
                ContentType="application/json",
                **condition,
                **self._sse,
            )
        except ClientError as exc:
            if is_precondition_failed(exc):
                return  # someone checkpointed a newer head; readers fold the tail, nothing is lost
            raise translate(exc, LedgerError, "update the ledger head", target=f"{head.app}/{head.environment}") from exc

    def record(self, app: str, env: str, kind: EntryKind, **fields: Any) -> tuple[LedgerEntry, EnvHead]:
        return self.append(LedgerEntry(app=app, environment=env, kind=kind, **fields))


def deployed_flags(ledger: Ledger, app: str, env: str, release: LiveRelease, scan: int = 500) -> dict[str, dict]:
    """The feature flags a verified version was deployed with: folded into the head since flags are; for a head
    folded before that, from the version's own ``deploy-started`` entry (re-verifications record none); {} if none."""
    if release.flags is not None:
        return release.flags
    for entry in ledger.history(app, env, limit=scan):
        if (entry.kind == "deploy-started" and entry.release_id == release.release_id and entry.version == release.version
                and "flags" in entry.detail):
            return entry.detail["flags"] or {}
    return {}


def entry_row(entry: LedgerEntry) -> dict[str, Any]:
    """A flat row for tables (CLI, Prefect table artifacts)."""
    return {
        "at": entry.at,
        "environment": entry.environment,
        "seq": entry.seq,
        "kind": entry.kind,
        "release": entry.release_id or "",
        "version": entry.version or "",
        "commit": (entry.commit or "")[:10],
        "actor": entry.actor,
        "message": entry.message,
    }


def dumps_entries(entries: list[LedgerEntry]) -> str:
    return json.dumps([e.model_dump(mode="json") for e in entries], indent=2)

"""The artifact store: content-addressed, immutable objects in S3.

Layout under the bucket and prefix::

    artifacts/{app}/{sha256}.zip             the artifact (conditional write: never overwritten)
    artifacts/{app}/{sha256}.manifest.json   its provenance manifest (of the first release that built these bytes)
    artifacts/{app}/{sha256}.releases/{release_id}.json   each release's own provenance: two commits that build the
                                             same bytes (a commit that changes only docs or slipway.yaml) are two releases
    builds/{app}/{build_key}.json            build pointer: commit + build config -> artifact (reuse, no rebuild)
    ledger/{app}/{env}/...                   the ledger (see ledger.py)
    diagnostics/{app}/{at}-{run}.json        a failed release's record, read by `slipway diagnose` (see diagnose.py)

S3 (and moto) do not verify a client-sent checksum for us in every case, so every upload is read back
and hashed client-side.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from pathlib import Path

from botocore.exceptions import ClientError
from pydantic import ValidationError

from slipway.core.aws import aws_call, error_code, is_not_found, is_precondition_failed, translate
from slipway.core.errors import DeployError, PublishError
from slipway.core.manifest import sha256_file  # noqa: F401 - also this module's public name for it
from slipway.core.signing import Signer, opened, seal
from slipway.core.models import ArtifactRef, Provenance
from slipway.spec.schema import Spec


class ArtifactStore:
    def __init__(self, s3, bucket: str, prefix: str = "", kms_key_id: str | None = None, signer: Signer | None = None) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = (prefix.strip("/") + "/") if prefix.strip("/") else ""
        self.kms_key_id = kms_key_id
        self.signer = signer  # with a key: manifests and build pointers are signed, and one that does not verify is refused

    # ---- keys -----------------------------------------------------------------------------------
    def artifact_key(self, app: str, sha256: str) -> str:
        return f"{self.prefix}artifacts/{app}/{sha256}.zip"

    def manifest_key(self, app: str, sha256: str) -> str:
        return f"{self.prefix}artifacts/{app}/{sha256}.manifest.json"

    def release_manifest_key(self, app: str, sha256: str, release_id: str) -> str:
        return f"{self.prefix}artifacts/{app}/{sha256}.releases/{release_id}.json"

    def build_pointer_key(self, app: str, build_key: str) -> str:
        return f"{self.prefix}builds/{app}/{build_key}.json"

    def diagnostics_prefix(self, app: str) -> str:
        return f"{self.prefix}diagnostics/{app}/"

    # ---- failure records (read by `slipway diagnose`) -------------------------------------------------
    def put_failure_record(self, app: str, at: str, run_id: str | None, record: dict) -> str:
        """Store a failed release's record under a key that sorts by time; returns the key."""
        stamp = re.sub(r"[^0-9]", "", at)[:17]
        key = f"{self.diagnostics_prefix(app)}{stamp}-{(run_id or uuid.uuid4().hex)[:36]}.json"
        body = json.dumps(record, sort_keys=True, default=str).encode()
        if not self._put_if_absent(key, body, "application/json") and self._get_json(key) != json.loads(body):
            raise PublishError(f"another failure record already exists at s3://{self.bucket}/{key}", ref="record-exists")
        return key  # written, or written by an earlier attempt of this same call

    def read_failure_record(self, key: str) -> dict | None:
        if not key.startswith(self.prefix + "diagnostics/"):
            key = self.prefix + key
        return self._get_json(key)

    def failure_records(self, app: str, limit: int = 50) -> list[tuple[str, dict]]:
        """The newest ``limit`` failure records of an app, newest first."""
        paginator = self.s3.get_paginator("list_objects_v2")
        keys: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.diagnostics_prefix(app)):
                keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
        except ClientError as exc:
            raise translate(exc, PublishError, f"list the failure records of {app}", target=self.bucket) from exc
        out = []
        for key in sorted(keys, reverse=True)[:limit]:
            data = self._get_json(key)
            if data is not None:
                out.append((key, data))
        return out

    # ---- checks ---------------------------------------------------------------------------------
    def check_access(self) -> None:
        """Fail early (before any side effect) when the bucket is missing or the credentials are refused."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise PublishError(
                    f"artifact bucket {self.bucket!r} does not exist",
                    hint="create it (or run `slipway local up`) and check the artifact-store block",
                    ref="bucket-missing",
                ) from exc
            if error_code(exc) in ("403", "Forbidden"):
                from slipway.core.errors import CredentialsError

                raise CredentialsError(
                    f"AWS refused access to the artifact bucket {self.bucket!r}",
                    hint="check the credentials in the aws-credentials block and the bucket policy",
                    ref="credentials-refused",
                ) from exc
            raise translate(exc, PublishError, "reach the artifact bucket", target=self.bucket) from exc
        except Exception as exc:  # botocore non-client errors: no credentials, unreachable endpoint
            from botocore.exceptions import BotoCoreError

            if isinstance(exc, BotoCoreError):
                raise translate(exc, PublishError, "reach the artifact bucket", target=self.bucket) from exc
            raise

    # ---- the spec a release was made with ------------------------------------------------------------
    def spec_key(self, app: str, digest: str) -> str:
        return f"{self.prefix}specs/{app}/{digest}.json"

    def put_spec(self, spec: Spec) -> str:
        """Record the spec (its canonical JSON, named by its sha256) once; return the digest. Later stages read it
        back by digest, so flow-run parameters never carry the spec's values (environment variables among them)."""
        body = spec.canonical_json().encode()
        digest = hashlib.sha256(body).hexdigest()
        self._put_if_absent(self.spec_key(spec.app, digest), body, "application/json")  # same digest: same content
        return digest

    def latest_spec(self, app: str) -> Spec | None:
        """The spec the most recent release of ``app`` recorded (proven as ``read_spec`` does), or None."""
        newest = None
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}specs/{app}/"):
            for obj in page.get("Contents", []):
                if newest is None or obj["LastModified"] > newest["LastModified"]:
                    newest = obj
        if newest is None:
            return None
        return self.read_spec(app, newest["Key"].rsplit("/", 1)[-1].removesuffix(".json"))

    def has_spec(self, app: str, digest: str) -> bool:
        return self._exists(self.spec_key(app, digest))

    def read_spec(self, app: str, digest: str) -> Spec:
        """The recorded spec, proven: its content hashes to its name and it names ``app``."""
        key = self.spec_key(app, digest)
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise translate(exc, DeployError, f"read the recorded spec s3://{self.bucket}/{key}", target=key) from exc
        actual = hashlib.sha256(body).hexdigest()
        spec = Spec.model_validate_json(body) if actual == digest else None
        if spec is None or spec.app != app:
            raise DeployError(
                f"the recorded spec s3://{self.bucket}/{key} " + ("does not hash to its name" if spec is None else f"names app {spec.app!r}")
                + ": it was modified after the release recorded it",
                target=key, hint="nothing was deployed; find out who wrote it, delete it and release again", ref="artifact-tampered",
            )
        return spec

    # ---- reads ----------------------------------------------------------------------------------
    def _get_body(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise translate(exc, PublishError, f"read s3://{self.bucket}/{key}") from exc

    def _get_json(self, key: str) -> dict | None:
        body = self._get_body(key)
        return None if body is None else json.loads(body)

    def _get_signed(self, key: str) -> dict | None:
        """A manifest or pointer, its signature checked (with a key) and removed; None when absent. Raises ValueError
        naming the problem for bytes that are not JSON or a signature that does not verify."""
        body = self._get_body(key)
        if body is None:
            return None
        try:
            data, problem = opened(self.signer, key, body)
        except ValueError:
            raise ValueError("it is not JSON") from None
        if problem:
            raise ValueError(problem)
        return data

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise translate(exc, PublishError, f"check s3://{self.bucket}/{key}") from exc

    def find_build(self, app: str, build_key: str, commit: str | None = None) -> ArtifactRef | None:
        """The artifact already built from this commit + build config, if it is still stored.

        The pointer is proven before it is used: it must name this app's artifact in this store, and the artifact's
        manifest must name the same app, build key, commit, digest and release (and image). A pointer rewritten to name
        another commit's artifact is refused as tampering (``artifact-tampered``): nothing is reused or deployed."""
        key = self.build_pointer_key(app, build_key)
        where = f"s3://{self.bucket}/{key}"
        try:
            pointer = self._get_signed(key)
        except ValueError as exc:
            raise self._tampered(where, str(exc)) from None
        if pointer is None:
            return None
        try:
            if not isinstance(pointer, dict):
                raise ValueError(pointer)
            ref = ArtifactRef.model_validate({**pointer, "reused": True})
        except (ValidationError, ValueError):
            raise self._tampered(where, "it is not a build pointer") from None
        problems = self._pointer_problems(app, build_key, commit, ref)
        if problems:
            raise self._tampered(where, "; ".join(problems), evidence={"pointer": pointer})
        if not self._exists(ref.key):
            return None
        return ref

    def _pointer_problems(self, app: str, build_key: str, commit: str | None, ref: ArtifactRef) -> list[str]:
        expected_key = self.manifest_key(app, ref.sha256) if ref.image else self.artifact_key(app, ref.sha256)
        problems = []
        if ref.app != app or ref.bucket != self.bucket or ref.key != expected_key or ref.manifest_key != self.manifest_key(app, ref.sha256):
            problems.append(f"it names {ref.uri} ({ref.app}), not {app}'s artifact {ref.sha256[:12]}… in this store")
        if commit and ref.commit != commit:
            problems.append(f"it names commit {ref.commit[:12]}, not {commit[:12]}")
        try:
            manifest, why = self.provenance(app, ref.sha256, ref.release_id), "missing"
        except (ValidationError, ValueError, TypeError) as exc:
            manifest, why = None, str(exc).splitlines()[0]
        if manifest is None:
            return problems + [f"the artifact it names has no valid manifest at {self.manifest_key(app, ref.sha256)} ({why})"]
        for field, want, got in (("app", app, manifest.app), ("build key", build_key, manifest.build_key),
                                 ("commit", ref.commit, manifest.commit), ("digest", ref.sha256, manifest.artifact_sha256),
                                 ("release", ref.release_id, manifest.release_id),
                                 ("image", ref.image.pinned if ref.image else None, manifest.image)):
            if want != got:
                problems.append(f"the artifact's manifest has {field} {str(got)[:24]}, the pointer says {str(want)[:24]}")
        return problems

    def _tampered(self, where: str, why: str, evidence: dict | None = None) -> PublishError:
        return PublishError(
            f"build pointer {where} does not match the artifact it names: {why}", target=where,
            hint="nothing was reused or deployed; find out who wrote it, then delete it so the next release tests, builds "
                 "and publishes this commit again",
            ref="artifact-tampered", evidence=evidence or {},
        )

    def read_manifest(self, app: str, sha256: str) -> Provenance | None:
        data = self._get_signed(self.manifest_key(app, sha256))
        return Provenance.model_validate(data) if data else None

    def provenance(self, app: str, sha256: str, release_id: str | None) -> Provenance | None:
        """The provenance of ``release_id`` (commit, ref, spec, build key) of the artifact ``sha256``: its own record, or,
        for a release published before releases had one, the artifact's manifest (which names the first release)."""
        if release_id:
            data = self._get_signed(self.release_manifest_key(app, sha256, release_id))
            if data:
                return Provenance.model_validate(data)
        return self.read_manifest(app, sha256)

    def provenance_key(self, app: str, sha256: str, release_id: str | None) -> str:
        """Where ``provenance`` read from (for messages)."""
        if release_id and self._exists(self.release_manifest_key(app, sha256, release_id)):
            return self.release_manifest_key(app, sha256, release_id)
        return self.manifest_key(app, sha256)

    def _record_provenance(self, provenance: Provenance) -> None:
        key = self.release_manifest_key(provenance.app, provenance.artifact_sha256, provenance.release_id)
        self._put_if_absent(key, seal(self.signer, key, provenance.model_dump(mode="json")), "application/json")

    def check_intact(self, ref: ArtifactRef) -> None:
        """Before a deploy: the stored zip still hashes to its published digest (streamed, nothing kept). An object
        replaced after publishing (a plain PUT by anyone with write access to the bucket) is refused."""
        actual = self._read_back_sha256(ref.key)
        if actual != ref.sha256:
            raise DeployError(
                f"artifact {ref.uri} does not match its published digest (stored sha256 {actual[:12]}…, published {ref.sha256[:12]}…): "
                "it was modified after publishing",
                target=ref.uri,
                hint=f"nothing was deployed; find out who wrote it, then delete s3://{ref.bucket}/{ref.key} so the next release "
                     "rebuilds and publishes it again",
                ref="artifact-tampered", evidence={"stored_sha256": actual, "published_sha256": ref.sha256},
            )

    def download_verified(self, ref: ArtifactRef, dest: Path) -> Path:
        """Download and check the sha256 (refuses an artifact tampered with after publishing)."""
        obj = aws_call(DeployError, "download the artifact", self.s3.get_object, Bucket=ref.bucket, Key=ref.key, target=ref.uri)
        data = obj["Body"].read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise DeployError(
                f"artifact {ref.uri} does not match its digest (sha256 {actual[:12]}…, expected {ref.sha256[:12]}…)",
                hint="the stored object was modified after publishing; rebuild and publish again",
                ref="artifact-tampered",
            )
        dest.write_bytes(data)
        return dest

    # ---- writes ---------------------------------------------------------------------------------
    def _put_if_absent(self, key: str, body: bytes, content_type: str) -> bool:
        """Conditional write. True if written, False if an object was already there (never overwritten)."""
        extra = {}
        if self.kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                IfNoneMatch="*",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                **extra,
            )
            return True
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise translate(exc, PublishError, f"write s3://{self.bucket}/{key}", target=key) from exc

    def _read_back_sha256(self, key: str) -> str:
        obj = aws_call(PublishError, "read back the uploaded artifact", self.s3.get_object, Bucket=self.bucket, Key=key)
        digest = hashlib.sha256()
        for chunk in iter(lambda: obj["Body"].read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def publish(self, zip_path: Path, provenance: Provenance) -> ArtifactRef:
        """Store the zip under its sha256 with its manifest and build pointer. Already stored → reused."""
        app, sha = provenance.app, provenance.artifact_sha256
        local_sha = sha256_file(zip_path)
        if local_sha != sha:
            raise PublishError(f"built zip {zip_path.name} does not match its recorded sha256", hint="rebuild", ref="artifact-digest-mismatch")
        key = self.artifact_key(app, sha)
        written = False
        if not self._exists(key):
            written = self._put_if_absent(key, zip_path.read_bytes(), "application/zip")
        stored_sha = self._read_back_sha256(key)
        if stored_sha != sha:
            raise PublishError(
                f"stored artifact s3://{self.bucket}/{key} has sha256 {stored_sha[:12]}…, expected {sha[:12]}…",
                hint="the store holds different bytes under this digest; investigate the bucket before releasing",
                ref="artifact-digest-mismatch",
            )
        manifest = seal(self.signer, self.manifest_key(app, sha), provenance.model_dump(mode="json"))
        self._put_if_absent(self.manifest_key(app, sha), manifest, "application/json")
        self._record_provenance(provenance)
        ref = ArtifactRef(
            app=app,
            sha256=sha,
            size=provenance.artifact_size,
            bucket=self.bucket,
            key=key,
            manifest_key=self.manifest_key(app, sha),
            commit=provenance.commit,
            release_id=provenance.release_id,
            reused=not written,
        )
        pointer_key = self.build_pointer_key(app, provenance.build_key)
        self._put_if_absent(pointer_key, seal(self.signer, pointer_key, ref.model_dump(mode="json", exclude={"reused"})), "application/json")
        return ref

    def record_image(self, provenance: Provenance, image) -> ArtifactRef:
        """A container release: the image lives in its registry; the store keeps its manifest and build pointer."""
        app, sha = provenance.app, provenance.artifact_sha256
        manifest = seal(self.signer, self.manifest_key(app, sha), provenance.model_dump(mode="json"))
        written = self._put_if_absent(self.manifest_key(app, sha), manifest, "application/json")
        self._record_provenance(provenance)
        ref = ArtifactRef(
            app=app, sha256=sha, size=0, bucket=self.bucket, key=self.manifest_key(app, sha), manifest_key=self.manifest_key(app, sha),
            commit=provenance.commit, release_id=provenance.release_id, reused=not written, image=image,
        )
        pointer_key = self.build_pointer_key(app, provenance.build_key)
        self._put_if_absent(pointer_key, seal(self.signer, pointer_key, ref.model_dump(mode="json", exclude={"reused"})), "application/json")
        return ref

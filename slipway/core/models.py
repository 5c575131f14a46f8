"""Plain data passed between stages: artifacts, deploy results, verification results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ArtifactRef(_Model):
    """A published, immutable artifact. Refers by digest and URI, never by bytes."""

    app: str
    sha256: str
    size: int
    bucket: str
    key: str
    manifest_key: str
    commit: str
    release_id: str
    reused: bool = False
    image: "ImageRef | None" = None  # container releases: the pushed image (deployed by digest)

    @property
    def uri(self) -> str:
        return self.image.pinned if self.image else f"s3://{self.bucket}/{self.key}"

    @property
    def code_sha256_b64(self) -> str:
        """Lambda's CodeSha256 form: base64 of the raw digest."""
        import base64

        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


class Provenance(_Model):
    """The provenance manifest stored beside each artifact."""

    app: str
    release_id: str
    artifact_sha256: str
    artifact_size: int
    unzipped_size: int
    file_count: int
    commit: str
    commit_subject: str
    committed_at: str | None = None  # the commit's date: lead time for changes (older releases: not recorded)
    ref: str
    repo: str
    spec_digest: str
    build_key: str
    runtime: str
    handler: str
    builder: dict[str, str]
    tests: dict[str, Any] | None = None
    built_at: str
    image: str | None = None  # container releases: repo@sha256:...


class CheckResult(_Model):
    name: str
    passed: bool
    detail: str
    executed_version: str | None = None
    duration_ms: float | None = None
    response: Any = None


class VerifyResult(_Model):
    function: str
    qualifier: str
    passed: bool
    checks: list[CheckResult]

    @property
    def first_failure(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.passed), None)


class DeployResult(_Model):
    environment: str
    function: str
    alias: str
    version: str
    previous_version: str | None
    code_sha256: str
    created_function: bool = False
    new_version: bool = True


class StageOutcome(_Model):
    """What happened to one environment during a release: shown in the summary and the report."""

    environment: str
    status: str  # live | failed-rolled-back | failed | skipped | not-reached | rollback-failed
    release_id: str | None = None
    version: str | None = None
    live_release_id: str | None = None
    live_version: str | None = None
    message: str = ""


class ImageRef(_Model):
    """A pushed container image, always addressed by digest when deployed."""

    repository: str  # registry host[:port]/name, e.g. 127.0.0.1:5000/hello-service
    tag: str  # derived from the commit, never the clock
    digest: str  # sha256:... (the registry's manifest digest)

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


ArtifactRef.model_rebuild()


class BuiltZip(_Model):
    """A Lambda zip built in a temporary directory, before it is published (the store names it by ``sha256``)."""

    path: str
    sha256: str
    size: int
    unzipped_size: int
    file_count: int

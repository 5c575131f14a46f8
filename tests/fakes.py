"""The test suite's in-memory fakes (one of each): a clock, a deploy target and the slice of S3 the ledger uses.

They model the real thing's contract, not its implementation, and say below where they differ from it.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from botocore.exceptions import ClientError

from slipway.core.errors import DeployError
from slipway.core.models import ArtifactRef, CheckResult, DeployResult, VerifyResult


class FakeClock:
    """A monotonic clock for bakes and synthetic traffic: time moves only when the code under test sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self.on_sleep: list[Callable[[float], None]] = []  # callbacks: things that "happen" at a time

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        for hook in list(self.on_sleep):
            hook(self.now)


class FakeTarget:
    """A deploy target in memory (the ``slipway.targets.protocol.Target`` contract).

    ``prepare`` makes version "1", "2", … (an unchanged artifact gets its existing version back, as Lambda's
    PublishVersion does); ``point`` makes one serve; ``verify`` passes unless the serving version's release is in
    ``broken``. ``fail_point`` makes the next ``point`` calls raise (as a throttled or refused API call would).
    Unlike a real target it has no latency and never drifts unless a test moves ``serving_version`` by hand."""

    type = "fake"

    def __init__(self, name: str = "fake-dev:live") -> None:
        self._name = name
        self.versions: dict[str, str] = {}  # version -> release id
        self.code: dict[str, str] = {}  # version -> the sha256 of the code it runs (a test may change it: tampering)
        self.serving_version: str | None = None
        self.broken: set[str] = set()  # release ids whose checks fail
        self.fail_point = 0
        self.calls: list[tuple] = []
        self.discarded: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    def location(self) -> dict:
        return {"function": self._name.split(":")[0], "alias": "live"}

    def default_check(self) -> dict:
        return {"name": "health", "event": {}}

    def prepare(self, artifact: ArtifactRef) -> DeployResult:
        existing = next((v for v, rel in self.versions.items() if rel == artifact.release_id), None)
        version = existing or str(len(self.versions) + 1)
        self.versions[version] = artifact.release_id
        self.code.setdefault(version, artifact.sha256)
        self.calls.append(("prepare", artifact.release_id))
        return DeployResult(environment="", function=self.location()["function"], alias="live", version=version,
                            previous_version=self.serving_version, code_sha256=artifact.sha256, new_version=existing is None)

    def serving(self) -> str | None:
        return self.serving_version

    def point(self, version: str, release=None, *, error_cls=DeployError) -> None:
        self.calls.append(("point", version))
        if self.fail_point:
            self.fail_point -= 1
            raise error_cls(f"could not point {self._name} at {version}", target=self._name, ref="aws-unreachable")
        if version not in self.versions:
            raise error_cls(f"{self._name} has no version {version}", target=self._name)
        self.serving_version = version

    def remove(self) -> None:
        self.calls.append(("remove",))
        self.serving_version = None

    def verify(self, checks: list[dict], expected_version: str) -> VerifyResult:
        release = self.versions.get(self.serving_version or "")
        passed = self.serving_version == expected_version and release not in self.broken
        detail = "ok" if passed else f"version {self.serving_version} ({release}) failed"
        results = [CheckResult(name=c.get("name", "check"), passed=passed, detail=detail, executed_version=self.serving_version)
                   for c in checks]
        return VerifyResult(function=self._name, qualifier="live", passed=passed, checks=results)

    def identity_mismatch(self, version: str, release) -> str | None:
        if release.artifact_sha256 and self.code.get(version) != release.artifact_sha256:
            return f"version {version} runs code {str(self.code.get(version))[:12]}, not the release's {release.artifact_sha256[:12]}"
        return None

    def settle(self, live_version: str) -> None:
        self.calls.append(("settle", live_version))

    def discard(self, version: str) -> None:
        self.discarded.append(version)


def artifact(release_id: str, app: str = "app") -> ArtifactRef:
    digest = hashlib.sha256(release_id.encode()).hexdigest()
    return ArtifactRef(app=app, sha256=digest, size=1, bucket="b", key=f"artifacts/{app}/{digest}.zip",
                       manifest_key=f"artifacts/{app}/{digest}.json", commit=release_id.split("-")[0].ljust(40, "0"),
                       release_id=release_id)


class _Body:
    """A streaming body: ``read()`` returns the rest, ``read(n)`` at most n bytes (b"" at the end)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._at + size
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk


def _error(code: str, status: int, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class FakeS3:
    """The part of S3 the ledger and the store use: get, head, conditional put (If-None-Match / If-Match), list with a prefix,
    StartAfter and a delimiter. Errors are botocore ClientErrors with S3's codes. Unlike S3 it keeps no versions
    and lists everything in one page."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}  # key -> (body, etag)

    def get_object(self, Bucket: str, Key: str) -> dict:
        if Key not in self.objects:
            raise _error("NoSuchKey", 404, "GetObject")
        body, etag = self.objects[Key]
        return {"Body": _Body(body), "ETag": etag}

    def head_object(self, Bucket: str, Key: str) -> dict:
        if Key not in self.objects:
            raise _error("404", 404, "HeadObject")
        return {"ETag": self.objects[Key][1], "ContentLength": len(self.objects[Key][0])}

    def put_object(self, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str | None = None, IfMatch: str | None = None,
                   **_: object) -> dict:
        if IfNoneMatch == "*" and Key in self.objects:
            raise _error("PreconditionFailed", 412, "PutObject")
        if IfMatch is not None and (Key not in self.objects or self.objects[Key][1] != IfMatch):
            raise _error("PreconditionFailed", 412, "PutObject")
        etag = '"' + hashlib.md5(Body).hexdigest() + '"'
        self.objects[Key] = (Body, etag)
        return {"ETag": etag}

    def list_objects_v2(self, Bucket: str, Prefix: str = "", StartAfter: str = "", Delimiter: str | None = None, **_: object) -> dict:
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > StartAfter)
        if not Delimiter:
            return {"Contents": [{"Key": k} for k in keys]}
        prefixes = sorted({Prefix + k[len(Prefix):].split(Delimiter, 1)[0] + Delimiter for k in keys if Delimiter in k[len(Prefix):]})
        return {"Contents": [{"Key": k} for k in keys if Delimiter not in k[len(Prefix):]],
                "CommonPrefixes": [{"Prefix": p} for p in prefixes]}

    def get_paginator(self, name: str):
        assert name == "list_objects_v2", name
        fake = self

        class _Paginator:
            def paginate(self, **kwargs):
                return [fake.list_objects_v2(**kwargs)]

        return _Paginator()

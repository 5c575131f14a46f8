"""Artifact store and ledger against the local AWS endpoint (in this process)."""

from __future__ import annotations

import hashlib
import threading
import uuid
import zipfile
from pathlib import Path

import pytest

from slipway.core.errors import CredentialsError, DeployError, PublishError
from slipway.record.ledger import Ledger, LedgerEntry
from slipway.core.models import Provenance
from slipway.artifact.store import ArtifactStore


@pytest.fixture
def s3(aws_endpoint, boto_session):
    return boto_session.client("s3", endpoint_url=aws_endpoint)


@pytest.fixture
def bucket(s3):
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def make_zip(tmp_path: Path, content: str = "def handler(e, c):\n    return 1\n") -> tuple[Path, str]:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app.py", content)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(sha: str, size: int, build_key: str = "bk1") -> Provenance:
    return Provenance(
        app="demo", release_id=f"c0ffee-{sha[:8]}", artifact_sha256=sha, artifact_size=size, unzipped_size=size, file_count=1,
        commit="c0ffee" * 6 + "abcd", commit_subject="s", ref="main", repo="file:///r", spec_digest="d", build_key=build_key,
        runtime="python3.11", handler="app.handler", builder={}, built_at="2026-01-01T00:00:00Z",
    )


def test_publish_stores_once_and_a_second_publish_reuses_without_writing(s3, bucket, tmp_path):
    store = ArtifactStore(s3, bucket, "p")
    path, sha = make_zip(tmp_path)
    ref = store.publish(path, provenance(sha, path.stat().st_size))
    assert ref.key == f"p/artifacts/demo/{sha}.zip" and ref.reused is False
    versions_before = s3.list_object_versions(Bucket=bucket, Prefix=ref.key)["Versions"]
    again = store.publish(path, provenance(sha, path.stat().st_size))
    assert again.reused is True
    assert s3.list_object_versions(Bucket=bucket, Prefix=ref.key)["Versions"] == versions_before
    assert store.find_build("demo", "bk1") == again
    assert store.read_manifest("demo", sha).commit.startswith("c0ffee")


def test_publish_refuses_a_store_holding_other_bytes_under_the_digest(s3, bucket, tmp_path):
    store = ArtifactStore(s3, bucket)
    path, sha = make_zip(tmp_path)
    s3.put_object(Bucket=bucket, Key=store.artifact_key("demo", sha), Body=b"not the artifact")
    with pytest.raises(PublishError) as info:
        store.publish(path, provenance(sha, path.stat().st_size))
    assert info.value.ref == "artifact-digest-mismatch"


def test_an_artifact_modified_after_publishing_is_refused_at_deploy(s3, bucket, tmp_path):
    store = ArtifactStore(s3, bucket)
    path, sha = make_zip(tmp_path)
    ref = store.publish(path, provenance(sha, path.stat().st_size))
    s3.put_object(Bucket=bucket, Key=ref.key, Body=b"tampered")  # bypasses the conditional write, as an attacker would
    with pytest.raises(DeployError) as info:
        store.download_verified(ref, tmp_path / "dl.zip")
    assert info.value.ref == "artifact-tampered"
    assert "does not match its digest" in str(info.value)


def test_a_missing_bucket_is_named_with_the_fix(s3):
    with pytest.raises(PublishError) as info:
        ArtifactStore(s3, "no-such-bucket-here").check_access()
    assert str(info.value) == (
        "artifact bucket 'no-such-bucket-here' does not exist: create it (or run `slipway local up`) and check the artifact-store block"
    )


def test_missing_credentials_are_reported_before_anything_is_written(aws_endpoint, monkeypatch):
    import boto3
    from botocore.config import Config

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3 = boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=aws_endpoint, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(CredentialsError) as info:
        ArtifactStore(s3, "any-bucket").check_access()
    assert str(info.value).startswith("no AWS credentials to reach the artifact bucket (any-bucket): set them in the aws-credentials block")


def test_refused_credentials_become_a_credentials_error(s3):
    from botocore.stub import Stubber

    stubber = Stubber(s3)
    stubber.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
    with stubber, pytest.raises(CredentialsError) as info:
        ArtifactStore(s3, "locked-bucket").check_access()
    assert info.value.ref == "credentials-refused"


def test_ledger_appends_in_sequence_and_checkpoints_the_head(s3, bucket):
    ledger = Ledger(s3, bucket, "p")
    ledger.record("a", "dev", "deploy-started", release_id="r1", version="1", detail={"function": "a-dev", "alias": "live"})
    ledger.record("a", "dev", "verified", release_id="r1", version="1")
    head = ledger.head("a", "dev")
    assert head.last_seq == 2 and head.live.release_id == "r1" and head.function == "a-dev"
    stored = s3.get_object(Bucket=bucket, Key="p/ledger/a/dev/head.json")["Body"].read()
    assert b'"last_seq": 2' in stored
    assert [e.kind for e in ledger.history("a")] == ["verified", "deploy-started"]
    assert ledger.environments("a") == ["dev"]


def test_an_entry_written_without_its_head_update_is_still_folded_in(s3, bucket):
    ledger = Ledger(s3, bucket)
    ledger.record("a", "dev", "verified", release_id="r1", version="1")
    # a writer that died after claiming seq 2 but before checkpointing the head
    orphan = LedgerEntry(seq=2, app="a", environment="dev", kind="deploy-started", release_id="r2", version="2")
    s3.put_object(Bucket=bucket, Key="ledger/a/dev/entries/0000000002.json", Body=orphan.model_dump_json().encode())
    head = ledger.head("a", "dev")
    assert head.status == "in-progress" and head.in_progress.release_id == "r2"
    entry, _ = ledger.record("a", "dev", "rolled-back", release_id="r1", version="1")
    assert entry.seq == 3


def test_concurrent_writers_lose_no_entry_and_never_share_a_sequence_number(s3, bucket):
    ledger = Ledger(s3, bucket)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                ledger.record("a", "prod", "verified", release_id=f"w{n}-{i}", version=str(i))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = ledger.entries("a", "prod")
    assert [e.seq for e in entries] == list(range(1, 31))
    assert len({e.release_id for e in entries}) == 30
    assert ledger.head("a", "prod").last_seq == 30


def test_history_with_a_limit_reads_only_the_newest_entries(s3, bucket):
    ledger = Ledger(s3, bucket)
    for i in range(4):
        ledger.record("lim", "dev", "verified", release_id=f"r{i}", version=str(i))
    assert [e.release_id for e in ledger.history("lim", "dev", limit=2)] == ["r3", "r2"]
    assert [e.seq for e in ledger.entries("lim", "dev", limit=3)] == [2, 3, 4]


def test_a_retried_append_whose_first_write_landed_is_not_duplicated(s3, bucket, aws_endpoint, boto_session):
    """botocore retries a PUT whose reply was lost; the retry meets its own object (412). Simulated with a
    before-parameter-build hook that lands the identical write first, through a second client."""
    other = boto_session.client("s3", endpoint_url=aws_endpoint)
    ledger = Ledger(s3, bucket)
    ledger.record("dup", "dev", "verified", release_id="r1", version="1")
    landed = []

    def land_first(params, **kwargs):
        key = params.get("Key", "")
        if "/entries/" in key and not landed:
            landed.append(key)
            other.put_object(Bucket=params["Bucket"], Key=key, Body=params["Body"])

    s3.meta.events.register("before-parameter-build.s3.PutObject", land_first)
    try:
        stamped, head = ledger.record("dup", "dev", "deploy-started", release_id="r2", version="2")
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", land_first)
    assert landed == ["ledger/dup/dev/entries/0000000002.json"]
    assert stamped.seq == 2
    assert [(e.seq, e.kind) for e in ledger.entries("dup", "dev")] == [(1, "verified"), (2, "deploy-started")]

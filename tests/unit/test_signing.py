"""Signed pointers and records: with the store's key, a ledger entry, a checkpoint, a manifest or a build pointer
written by anyone without the key is refused (or, for the checkpoint, ignored); without a key nothing changes."""

from __future__ import annotations

import json
import zipfile

import pytest

from fakes import FakeS3
from slipway.artifact.store import ArtifactStore
from slipway.core.errors import LedgerError, PublishError
from slipway.core.models import Provenance
from slipway.core.signing import Signer
from slipway.record.ledger import Ledger

KEY = Signer(b"k" * 32)


def _verified(ledger, release_id: str, version: str, commit: str) -> None:
    ledger.record("app", "dev", "deploy-started", release_id=release_id, version=version, commit=commit, run_id="r")
    ledger.record("app", "dev", "verified", release_id=release_id, version=version, commit=commit, run_id="r")


def test_a_ledger_entry_written_without_the_key_is_refused_naming_the_object():
    s3 = FakeS3()
    ledger = Ledger(s3, "bucket", "slipway", signer=KEY)
    _verified(ledger, "r1", "1", "a" * 40)
    forged = {"app": "app", "environment": "dev", "kind": "verified", "seq": 3, "release_id": "evil", "version": "9",
              "commit": "e" * 40, "at": "2026-12-06T00:00:00Z"}
    s3.put_object(Bucket="bucket", Key="slipway/ledger/app/dev/entries/0000000003.json", Body=json.dumps(forged).encode())

    with pytest.raises(LedgerError) as caught:
        ledger.head("app", "dev")

    assert caught.value.ref == "ledger-tampered"
    assert "slipway/ledger/app/dev/entries/0000000003.json was not written by Slipway: its signature is missing" in caught.value.message


def test_a_signed_entry_copied_to_another_apps_ledger_does_not_verify_there():
    s3 = FakeS3()
    ledger = Ledger(s3, "bucket", "slipway", signer=KEY)
    _verified(ledger, "r1", "1", "a" * 40)
    body = s3.objects["slipway/ledger/app/dev/entries/0000000002.json"][0]
    s3.put_object(Bucket="bucket", Key="slipway/ledger/app/prod/entries/0000000001.json", Body=body)

    with pytest.raises(LedgerError, match="its signature does not verify"):
        ledger.head("app", "prod")


def test_a_checkpoint_rewritten_without_the_key_is_ignored_and_the_entries_are_folded_again():
    s3 = FakeS3()
    ledger = Ledger(s3, "bucket", "slipway", signer=KEY)
    _verified(ledger, "r1", "1", "a" * 40)
    head = json.loads(s3.objects["slipway/ledger/app/dev/head.json"][0])
    head["live"]["release_id"], head["live"]["version"] = "evil", "9"
    head.pop("signature")
    s3.put_object(Bucket="bucket", Key="slipway/ledger/app/dev/head.json", Body=json.dumps(head).encode())

    assert ledger.head("app", "dev").live.release_id == "r1"


def test_without_a_key_signed_objects_read_as_before_and_nothing_is_refused():
    s3 = FakeS3()
    _verified(Ledger(s3, "bucket", "slipway", signer=KEY), "r1", "1", "a" * 40)
    assert Ledger(s3, "bucket", "slipway").head("app", "dev").live.release_id == "r1"


def _publish(store: ArtifactStore, tmp_path, commit: str, build_key: str):
    path = tmp_path / f"{commit[:4]}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app.py", f"# {commit}\n")
    from slipway.artifact.store import sha256_file

    sha = sha256_file(path)
    provenance = Provenance(app="app", release_id=f"{commit[:10]}-{sha[:8]}", artifact_sha256=sha, artifact_size=path.stat().st_size,
                            unzipped_size=10, file_count=1, commit=commit, commit_subject="s", ref="v", repo="r", spec_digest="d",
                            build_key=build_key, runtime="python3.11", handler="app.handler", builder={}, built_at="2026-12-06T00:00:00Z")
    return store.publish(path, provenance)


def test_a_pointer_and_manifest_forged_consistently_but_without_the_key_are_refused(tmp_path):
    s3 = FakeS3()
    store = ArtifactStore(s3, "bucket", "slipway", signer=KEY)
    v1 = _publish(store, tmp_path, "1" * 40, "bk1")
    v2 = _publish(store, tmp_path, "2" * 40, "bk2")
    assert store.find_build("app", "bk1", "1" * 40) == v1.model_copy(update={"reused": True})
    # someone with write access to the bucket makes v1's pointer name v2's artifact, and rewrites v2's provenance to match
    manifest_key = store.release_manifest_key("app", v2.sha256, v2.release_id)
    manifest = json.loads(s3.objects[manifest_key][0])
    manifest.update(commit="1" * 40, build_key="bk1", release_id=v2.release_id)
    manifest.pop("signature")
    s3.put_object(Bucket="bucket", Key=manifest_key, Body=json.dumps(manifest).encode())
    pointer = {**v2.model_dump(mode="json", exclude={"reused"}), "commit": "1" * 40}
    s3.put_object(Bucket="bucket", Key=store.build_pointer_key("app", "bk1"), Body=json.dumps(pointer).encode())

    with pytest.raises(PublishError) as caught:
        store.find_build("app", "bk1", "1" * 40)

    assert caught.value.ref == "artifact-tampered" and "its signature is missing" in caught.value.message
    assert ArtifactStore(s3, "bucket", "slipway").find_build("app", "bk1", "1" * 40) is not None  # (what a key-less store would reuse)

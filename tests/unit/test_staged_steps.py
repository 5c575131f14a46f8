"""The staged deploy and rollback steps (slipway/rollout/staged.py) on an in-memory target and ledger: the order of
ledger records and target calls that "never a broken prod left behind" rests on."""

import pytest

from fakes import FakeS3, FakeTarget, artifact
from slipway.core.errors import DeployError, RollbackError, VerificationFailed
from slipway.record.ledger import Ledger
from slipway.rollout import staged


@pytest.fixture
def env():
    return staged.EnvContext(ledger=Ledger(FakeS3(), "bucket"), app="app", environment="dev", target=FakeTarget(), run_id="run-A")


def release(env, release_id):
    art = artifact(release_id)
    deployed = staged.publish(env, art)
    seq = staged.shift_traffic(env, art, deployed)
    return art, deployed, seq


def kinds(env):
    return [e.kind for e in env.ledger.entries("app", "dev")]


def test_a_verified_deploy_records_intent_before_the_traffic_moves_then_the_outcome(env):
    art, deployed, seq = release(env, "r1-aaaa")
    staged.verify(env, art, deployed.version, seq)
    assert kinds(env) == ["deploy-started", "deployed", "verified"]
    assert env.head().live.release_id == "r1-aaaa" and env.target.serving() == "1"
    assert env.target.calls[-1] == ("settle", "1")


def test_a_failed_verification_is_recorded_and_the_rollback_returns_to_the_verified_release(env):
    art, deployed, seq = release(env, "r1-aaaa")
    staged.verify(env, art, deployed.version, seq)
    bad, deployed2, seq2 = release(env, "r2-bbbb")
    env.target.broken.add("r2-bbbb")

    with pytest.raises(VerificationFailed):
        staged.verify(env, bad, deployed2.version, seq2)
    outcome = staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A", reason="smoke failed")

    assert (outcome.to_release, outcome.to_version, env.target.serving()) == ("r1-aaaa", "1", "1")
    assert kinds(env)[-3:] == ["verify-failed", "rollback-started", "rolled-back"]
    assert env.target.discarded == ["2"]
    assert env.head().in_progress is None


def test_an_automatic_rollback_for_another_runs_deploy_does_nothing(env):
    art, deployed, seq = release(env, "r1-aaaa")
    assert staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-B") is None
    assert kinds(env) == ["deploy-started", "deployed"]


def test_a_first_deploy_that_fails_leaves_the_target_serving_nothing(env):
    bad, deployed, seq = release(env, "r1-aaaa")
    env.target.broken.add("r1-aaaa")
    with pytest.raises(VerificationFailed):
        staged.verify(env, bad, deployed.version, seq)
    outcome = staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A")
    assert outcome.removed_alias and env.target.serving() is None


def test_a_rollback_that_cannot_move_traffic_is_recorded_as_failed_and_raised(env):
    art, deployed, seq = release(env, "r1-aaaa")
    staged.verify(env, art, deployed.version, seq)
    release(env, "r2-bbbb")
    env.target.fail_point = 1
    with pytest.raises(RollbackError):
        staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A")
    assert kinds(env)[-2:] == ["rollback-started", "rollback-failed"]
    assert env.head().in_progress is not None  # the next run reconciles it


def test_a_target_moved_outside_slipway_is_refused_before_anything_is_published(env):
    art, deployed, seq = release(env, "r1-aaaa")
    staged.verify(env, art, deployed.version, seq)
    env.target.versions["9"] = "by-hand"
    env.target.serving_version = "9"
    calls = len(env.target.calls)

    with pytest.raises(DeployError) as info:
        staged.publish(env, artifact("r2-bbbb"))

    assert info.value.ref == "drift"
    assert info.value.message == "live state changed outside Slipway: fake-dev:live serves 9; the ledger says r1-aaaa (version 1)"
    assert len(env.target.calls) == calls


def test_a_run_killed_mid_deploy_is_reconciled_to_the_last_verified_release(env):
    art, deployed, seq = release(env, "r1-aaaa")
    staged.verify(env, art, deployed.version, seq)
    release(env, "r2-bbbb")  # ... and the process dies here: deploy-started with no outcome

    later = staged.EnvContext(ledger=env.ledger, app="app", environment="dev", target=env.target, run_id="run-B")
    outcome = staged.reconcile(later)

    assert (outcome.to_release, env.target.serving()) == ("r1-aaaa", "1")
    assert kinds(env)[-1] == "reconciled" and env.head().in_progress is None


# ---- a rollback target is proven before traffic moves back to it -----------------------------------------------------
def _manifest(art, **changes) -> bytes:
    import json

    from slipway.core.models import Provenance

    fields = dict(app=art.app, release_id=art.release_id, artifact_sha256=art.sha256, artifact_size=1, unzipped_size=1, file_count=1,
                  commit=art.commit, commit_subject="s", ref="v", repo="r", spec_digest="d", build_key="bk", runtime="python3.11",
                  handler="app.handler", builder={}, built_at="2026-01-01T00:00:00Z")
    return json.dumps(Provenance(**{**fields, **changes}).model_dump(mode="json")).encode()


@pytest.fixture
def stored_env():
    from slipway.artifact.store import ArtifactStore

    s3 = FakeS3()
    store = ArtifactStore(s3, "bucket")
    ctx = staged.EnvContext(ledger=Ledger(s3, "bucket"), app="app", environment="dev", target=FakeTarget(), run_id="run-A", store=store)
    good, deployed, seq = release(ctx, "r1-aaaa")
    staged.verify(ctx, good, deployed.version, seq)
    s3.put_object(Bucket="bucket", Key=store.manifest_key("app", good.sha256), Body=_manifest(good))
    newer, deployed2, seq2 = release(ctx, "r2-bbbb")
    staged.verify(ctx, newer, deployed2.version, seq2)
    s3.put_object(Bucket="bucket", Key=store.manifest_key("app", newer.sha256), Body=_manifest(newer))
    return ctx, s3, store, good


def test_a_rollback_to_a_version_now_running_other_code_is_refused_and_nothing_moves(stored_env):
    ctx, _, _, good = stored_env
    ctx.target.code["1"] = "f" * 64  # the version the ledger names runs other code now (a function recreated, a forged entry)
    calls_before = len(ctx.target.calls)

    with pytest.raises(RollbackError) as caught:
        staged.roll_back(ctx, to_release="r1-aaaa", reason="by hand")

    assert caught.value.ref == "artifact-tampered"
    assert "refusing to move dev back to r1-aaaa (version 1)" in caught.value.message and "runs code ffffffffffff" in caught.value.message
    assert ctx.target.serving() == "2" and ctx.target.calls[calls_before:] == []  # nothing moved
    assert kinds(ctx)[-2:] == ["rollback-started", "rollback-failed"]


@pytest.mark.parametrize("change", [{"commit": "e" * 40}, {"app": "other-app"}, {"release_id": "r9-forged"}, "unreadable", "missing"])
def test_a_rollback_to_a_release_whose_manifest_disagrees_with_the_ledger_is_refused(stored_env, change):
    ctx, s3, store, good = stored_env
    key = store.manifest_key("app", good.sha256)
    if change == "missing":
        del s3.objects[key]
    else:
        s3.put_object(Bucket="bucket", Key=key, Body=b"{not json" if change == "unreadable" else _manifest(good, **change))

    with pytest.raises(RollbackError) as caught:
        staged.roll_back(ctx, to_release="r1-aaaa")

    assert caught.value.ref == "artifact-tampered" and key in caught.value.message
    assert ctx.target.serving() == "2"


def test_a_rollback_to_a_proven_release_goes_ahead(stored_env):
    ctx, _, _, _ = stored_env
    outcome = staged.roll_back(ctx, to_release="r1-aaaa")
    assert (outcome.to_release, ctx.target.serving()) == ("r1-aaaa", "1")

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

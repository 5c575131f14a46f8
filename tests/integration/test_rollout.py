"""Deploy, verify and rollback steps against the local AWS (in this process): the ledger state machine
meets a real Lambda alias."""

from __future__ import annotations

import json
import uuid

import pytest

from lambda_artifacts import artifact
from slipway.rollout import staged
from slipway.core.errors import DeployError, RollbackError, VerificationFailed
from slipway.targets.aws_lambda import LambdaSettings, LambdaTarget, alias_version
from slipway.record.ledger import Ledger
from slipway.core.models import ArtifactRef

GOOD = "import json\ndef handler(event, context):\n    return {'statusCode': 200, 'body': json.dumps({'v': %r})}\n"
BAD = "def handler(event, context):\n    raise RuntimeError('broken %s')\n"
CHECKS = [{"name": "health", "event": {}, "expect": {"statusCode": 200}}]


@pytest.fixture
def env(aws_endpoint, boto_session):
    s3 = boto_session.client("s3", endpoint_url=aws_endpoint)
    lam = boto_session.client("lambda", endpoint_url=aws_endpoint)
    iam = boto_session.client("iam", endpoint_url=aws_endpoint)
    bucket = f"ro-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    try:
        role = iam.create_role(RoleName="ro-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="ro-role")["Role"]["Arn"]
    app = f"ro{uuid.uuid4().hex[:8]}"
    settings = LambdaSettings(function_name=f"{app}-dev", alias="live", role_arn=role, handler="app.handler", runtime="python3.11")
    ctx = staged.EnvContext(ledger=Ledger(s3, bucket), app=app, environment="dev", target=LambdaTarget(lam, settings, sleep=lambda s: None),
                             checks=CHECKS, run_id="run-A")
    ctx.lam = lam  # type: ignore[attr-defined]
    ctx.s3 = s3  # type: ignore[attr-defined]
    ctx.bucket = bucket  # type: ignore[attr-defined]
    return ctx


def deploy(ctx, art: ArtifactRef):
    deployed = staged.publish(ctx, art)
    seq = staged.shift_traffic(ctx, art, deployed)
    return deployed.version, seq


def release(ctx, art: ArtifactRef) -> str:
    version, seq = deploy(ctx, art)
    staged.verify(ctx, art, version, seq)
    return version


def test_a_failed_deploy_rolls_back_to_the_live_release(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    bad = artifact(env, "r2", BAD % "2")
    version, seq = deploy(env, bad)
    with pytest.raises(VerificationFailed) as info:
        staged.verify(env, bad, version, seq)
    assert "RuntimeError: broken 2" in str(info.value)
    outcome = staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A")
    assert outcome.to_release == "r1"
    assert alias_version(env.lam, env.target.settings.function_name, "live") == "1"
    assert env.head().status == "live" and env.head().live.release_id == "r1"


def test_an_automatic_rollback_for_another_run_does_nothing(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    deploy(env, artifact(env, "r2", GOOD % "2"))
    assert staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-B") is None
    assert alias_version(env.lam, env.target.settings.function_name, "live") == "2"


def test_verified_is_not_recorded_when_another_run_changed_the_environment_meanwhile(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    r2 = artifact(env, "r2", GOOD % "2")
    version, seq = deploy(env, r2)
    staged.reconcile(env)  # another run decides the deploy was abandoned and puts r1 back
    # Even when every smoke check passes (here: against the version now serving), this run's deploy is no
    # longer the one in progress, so it must not record its release as live.
    with pytest.raises(DeployError) as info:
        staged.verify(env, r2, "1", seq)
    assert info.value.ref == "concurrent-change"
    assert env.head().live.release_id == "r1"
    assert [e.kind for e in env.ledger.entries(env.app, "dev")][-1] == "reconciled"


def test_a_failed_reverification_of_the_live_release_rolls_back_to_the_one_before(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    r2 = artifact(env, "r2", GOOD % "2")
    release(env, r2)
    env.checks = [{"name": "health", "event": {}, "expect": {"statusCode": 201}}]  # the live release now fails its checks
    seq, version = staged.begin_reverify(env, r2)
    with pytest.raises(VerificationFailed):
        staged.verify(env, r2, version, seq)
    outcome = staged.roll_back(env, only_if_in_progress=True, only_if_run_id="run-A")
    assert outcome.to_release == "r1"
    assert alias_version(env.lam, env.target.settings.function_name, "live") == "1"
    assert "r2" in env.head().rolled_away


def test_rolling_back_twice_goes_further_back_never_to_the_release_just_removed(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    release(env, artifact(env, "r2", GOOD % "2"))
    assert staged.roll_back(env).to_release == "r1"
    with pytest.raises(RollbackError) as info:
        staged.roll_back(env)
    assert info.value.ref == "nothing-to-roll-back-to"
    assert staged.roll_back(env, to_release="r2").to_release == "r2"  # explicitly named: allowed


def test_an_interrupted_manual_rollback_is_finished_by_reconcile_not_undone(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    release(env, artifact(env, "r2", GOOD % "2"))
    # a `slipway rollback --to r1` killed right after recording its start
    env.ledger.record(env.app, "dev", "rollback-started", release_id="r1", version="1", run_id="dead", detail={"from_release": "r2"})
    outcome = staged.reconcile(env)
    assert outcome.to_release == "r1"
    assert alias_version(env.lam, env.target.settings.function_name, "live") == "1"


def test_an_unchanged_release_publishes_no_new_version(env):
    r1 = artifact(env, "r1", GOOD % "1")
    assert release(env, r1) == "1"
    again = staged.publish(env, r1)
    assert again.version == "1" and again.new_version is False


def test_a_function_owned_by_another_app_is_refused(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    other = staged.EnvContext(ledger=env.ledger, app="someone-else", environment="dev", target=env.target, checks=CHECKS, run_id="x")
    art = artifact(env, "r9", GOOD % "9").model_copy(update={"app": "someone-else"})
    with pytest.raises(DeployError) as info:
        staged.publish(other, art)
    assert info.value.ref == "function-owned-elsewhere"
    assert json.loads(env.lam.invoke(FunctionName=env.target.settings.function_name, Qualifier="live")["Payload"].read())["statusCode"] == 200


def _refused_as_drift(ctx, art: ArtifactRef) -> str:
    with pytest.raises(DeployError) as info:
        staged.publish(ctx, art)
    assert info.value.ref == "drift", info.value.message
    return info.value.message


def test_a_hand_made_canary_on_the_alias_is_drift_never_silently_cleared(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    release(env, artifact(env, "r2", GOOD % "2"))
    fn = env.target.settings.function_name
    env.lam.update_alias(FunctionName=fn, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {"1": 0.1}})
    message = _refused_as_drift(env, artifact(env, "r3", GOOD % "3"))
    assert "alias live also sends 10% to version 1" in message
    assert env.lam.get_alias(FunctionName=fn, Name="live")["RoutingConfig"]["AdditionalVersionWeights"] == {"1": 0.1}  # untouched
    assert [v["Version"] for v in env.lam.list_versions_by_function(FunctionName=fn)["Versions"]] == ["$LATEST", "1", "2"]
    seen = staged.check_live(env)
    assert seen["status"] == "drift" and "10% to version 1" in seen["detail"] and not seen["healed"]
    healed = staged.check_live(env, heal=True)
    assert healed["healed"] and "back to 100% on version 2" in healed["detail"]
    assert not env.lam.get_alias(FunctionName=fn, Name="live").get("RoutingConfig", {}).get("AdditionalVersionWeights")
    healed_entry = env.ledger.entries(env.app, "dev")[-1]
    assert healed_entry.kind == "healed" and "10% to version 1" in healed_entry.detail["found"][0]
    assert env.ledger.head(env.app, "dev").live.release_id == "r2"  # the record changes nothing of what is live
    assert release(env, artifact(env, "r3", GOOD % "3")) == "3"


def test_configuration_changed_on_latest_outside_slipway_is_drift_named_without_values(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    fn = env.target.settings.function_name
    env.lam.update_function_configuration(FunctionName=fn, MemorySize=1024, Environment={"Variables": {"API_TOKEN": "hunter2"}})
    message = _refused_as_drift(env, artifact(env, "r2", GOOD % "2"))
    assert "$LATEST was changed outside Slipway" in message and "MemorySize 256 → 1024" in message
    assert "environment variables API_TOKEN" in message and "hunter2" not in message
    assert staged.check_live(env, heal=True)["healed"]
    latest = env.lam.get_function_configuration(FunctionName=fn)
    assert latest["MemorySize"] == 256 and not (latest.get("Environment") or {}).get("Variables")
    assert release(env, artifact(env, "r2", GOOD % "2")) == "2"


def test_a_removed_ownership_tag_is_drift_not_another_apps_function(env):
    release(env, artifact(env, "r1", GOOD % "1"))
    fn = env.lam.get_function(FunctionName=env.target.settings.function_name)["Configuration"]["FunctionArn"]
    env.lam.untag_resource(Resource=fn, TagKeys=["slipway:app"])
    assert "slipway:app tag is missing" in _refused_as_drift(env, artifact(env, "r2", GOOD % "2"))
    assert "tagged slipway:app" in staged.check_live(env, heal=True)["detail"]
    assert release(env, artifact(env, "r2", GOOD % "2")) == "2"


# ---- an unchanged re-release: re-verified in place (no lock, nothing deployed) --------------------------------------
def kinds(ctx) -> list[str]:
    return [e.kind for e in ctx.ledger.entries(ctx.app, "dev")]


def test_the_live_release_re_verified_in_place_records_verified_alone(env):
    r1 = artifact(env, "r1", GOOD % "1")
    release(env, r1)
    before = kinds(env)
    result, entry, head = staged.reverify_in_place(env, r1)
    assert result.passed and [c.executed_version for c in result.checks] == ["1"]
    assert kinds(env) == [*before, "verified"]  # no deploy-started: nothing was deployed or moved
    newest = env.ledger.entries(env.app, "dev")[-1]
    assert newest == entry and newest.release_id == "r1" and newest.version == "1" and newest.detail["reverified"] is True
    assert head == env.head() and head.live.release_id == "r1" and head.in_progress is None


def test_a_failing_check_in_place_records_nothing_and_leaves_the_decision_to_the_full_way(env):
    r1 = artifact(env, "r1", GOOD % "1")
    release(env, r1)
    before = kinds(env)
    env.checks = [{"name": "health", "event": {}, "expect": {"statusCode": 201}}]  # the live release now fails its checks
    assert staged.reverify_in_place(env, r1) is None
    assert kinds(env) == before and env.head().live.release_id == "r1"


@pytest.mark.parametrize("situation", ["another release live", "a run in progress", "nothing live"])
def test_in_place_only_when_the_release_is_live_with_nothing_in_progress(env, situation):
    r1, r2 = artifact(env, "r1", GOOD % "1"), artifact(env, "r2", GOOD % "2")
    if situation != "nothing live":
        release(env, r1)
    if situation == "another release live":
        release(env, r2)
    if situation == "a run in progress":
        deploy(env, r2)  # r2 moved in, not yet verified: the full way reconciles it under the lock
    before = kinds(env)
    assert staged.reverify_in_place(env, r1) is None
    assert kinds(env) == before


class RacingTarget:
    """The real target, with another run writing to the ledger while the smoke checks run."""

    def __init__(self, ctx, write):
        self._target, self._ctx, self._write = ctx.target, ctx, write

    def __getattr__(self, name):
        return getattr(self._target, name)

    def verify(self, checks, version):
        self._write(self._ctx)
        return self._target.verify(checks, version)


def test_nothing_is_recorded_when_another_run_wrote_while_the_checks_ran(env):
    r1, r2 = artifact(env, "r1", GOOD % "1"), artifact(env, "r2", GOOD % "2")
    release(env, r1)
    env.target = RacingTarget(env, lambda ctx: staged.begin(ctx, r2, "2", "another run starts deploying r2"))
    assert staged.reverify_in_place(env, r1) is None
    assert kinds(env)[-1] == "deploy-started"  # the other run's mark stays the newest: no verified over it
    assert env.head().in_progress.release_id == "r2"


def test_append_if_unchanged_writes_only_right_after_the_entry_it_was_given(env):
    from slipway.record.ledger import LedgerEntry

    release(env, artifact(env, "r1", GOOD % "1"))
    seen = env.head().last_seq
    env.ledger.record(env.app, "dev", "approved", message="someone else")
    stale = LedgerEntry(app=env.app, environment="dev", kind="hook", message="decided on an old head")
    assert env.ledger.append_if_unchanged(stale, seen) is None
    written, head = env.ledger.append_if_unchanged(stale, seen + 1)
    assert written.seq == seen + 2 and head.last_seq == seen + 2 and kinds(env)[-2:] == ["approved", "hook"]

import pytest

from slipway.core.errors import InputError
from slipway.record.ledger import EnvHead, InProgress, LiveRelease
from slipway.rollout.planning import plan_rollout
from slipway.spec.loading import parse_spec

SPEC = parse_spec(
    """
app: hello
artifact: {type: lambda-zip, source: src, handler: app.handler}
environments: [{name: dev}, {name: staging}, {name: prod}]
"""
)
COMMIT = "c" * 40


def heads(**live):
    out = {}
    for env in ("dev", "staging", "prod"):
        rel = live.get(env)
        verified = [LiveRelease(release_id=rel, version="1", commit=COMMIT)] if rel else []
        out[env] = EnvHead(app="hello", environment=env, live=verified[0] if verified else None, verified=verified)
    return out


def test_a_full_release_deploys_every_environment_in_order():
    plan = plan_rollout(SPEC, COMMIT, heads())
    assert [(s.environment, s.action) for s in plan.steps] == [("dev", "deploy"), ("staging", "deploy"), ("prod", "deploy")]


def test_only_keeps_promotion_order_and_reports_skipped():
    plan = plan_rollout(SPEC, COMMIT, heads(), only=["staging", "dev"])
    assert [s.environment for s in plan.steps] == ["dev", "staging"]
    assert plan.skipped == ["prod"]


def test_unknown_environment_is_refused_with_the_known_names():
    with pytest.raises(InputError) as info:
        plan_rollout(SPEC, COMMIT, heads(), only=["qa"])
    assert str(info.value) == "unknown environment 'qa' for app hello: --only takes names from slipway.yaml: dev, staging, prod"


def test_prod_alone_is_refused_until_staging_verified_the_commit():
    with pytest.raises(InputError) as info:
        plan_rollout(SPEC, COMMIT, heads(), only=["prod"])
    assert info.value.ref == "promotion-gate"
    assert "has not been verified in staging" in str(info.value)


def test_prod_alone_is_planned_when_staging_verified_the_commit():
    plan = plan_rollout(SPEC, COMMIT, heads(staging="r1"), only=["prod"])
    assert [s.environment for s in plan.steps] == ["prod"]


def test_an_environment_already_live_on_the_release_is_only_reverified():
    plan = plan_rollout(SPEC, COMMIT, heads(dev="r1", staging="r1"), release_id="r1")
    assert [(s.environment, s.action) for s in plan.steps] == [("dev", "verify-live"), ("staging", "verify-live"), ("prod", "deploy")]


def test_an_abandoned_run_is_reconciled_first():
    h = heads(dev="r1")
    h["dev"] = h["dev"].model_copy(update={"in_progress": InProgress(kind="deploy", release_id="r2", version="2", started_seq=4, started_at="t")})
    plan = plan_rollout(SPEC, COMMIT, h, release_id="r1")
    assert plan.steps[0].reconcile_first and plan.steps[0].action == "deploy"

"""What a release did to one environment, decided from the ledger alone (slipway/rollout/outcome.py)."""

from slipway.core.models import StageOutcome
from slipway.record.ledger import EnvHead, InProgress, LiveRelease
from slipway.rollout.outcome import canary_judgements, finish_failure_line, in_spec_order, stage_outcome

R1, R2 = "aaaaaaaaaa-11111111", "bbbbbbbbbb-22222222"


def head(live=None, version="1", in_progress=None):
    return EnvHead(app="app", environment="dev", live=LiveRelease(release_id=live, version=version) if live else None,
                   in_progress=in_progress)


def entries(*kinds):
    return [{"kind": k, "message": ""} for k in kinds]


def test_a_completed_stage_is_live_and_verified():
    outcome, failure = stage_outcome("dev", head(R2, "2"), entries("deploy-started", "deployed", "verified"), R2, completed=True)
    assert (outcome.status, outcome.message, outcome.live_release_id, failure) == ("live", "verified", R2, None)


def test_a_stage_that_failed_before_touching_anything_says_what_still_serves():
    outcome, failure = stage_outcome("prod", head(R1, "1"), entries("rejected"), R2, completed=False, stage="approval",
                                     reason="prod not approved: freeze (grace)")
    assert (outcome.status, outcome.message) == ("failed", f"unchanged (still serving {R1} (version 1))")
    assert failure == f"release {R2} failed at approval: prod not approved: freeze (grace); prod unchanged (still serving {R1} (version 1))"


def test_a_failed_deploy_that_was_rolled_back_names_where_it_went():
    recorded = entries("deploy-started", "deployed", "verify-failed", "rollback-started", "rolled-back")
    outcome, failure = stage_outcome("dev", head(R1, "1"), recorded, R2, completed=False, stage="verify", reason="smoke check 'health' failed")
    assert (outcome.status, outcome.message) == ("rolled-back", f"rolled back to {R1} (version 1)")
    assert failure.endswith(f"dev rolled back to {R1} (version 1)")


def test_a_first_deploy_that_failed_has_nothing_to_return_to():
    outcome, _ = stage_outcome("dev", head(), entries("deploy-started", "rollback-started", "rolled-back"), R2, completed=False)
    assert outcome.message == "nothing verified to return to (see `slipway history`)"


def test_a_rollback_left_in_progress_is_reported_as_not_completed():
    stuck = InProgress(kind="rollback", release_id=R1, version="1", started_seq=4, started_at="t", failed=True, message="AccessDenied")
    outcome, failure = stage_outcome("dev", head(R1, "1", stuck), entries("deploy-started", "rollback-started", "rollback-failed"),
                                     R2, completed=False)
    assert (outcome.status, outcome.message) == ("rollback-failed", "ROLLBACK DID NOT COMPLETE: AccessDenied")


def test_a_stage_that_verified_and_then_failed_stays_live():
    outcome, failure = stage_outcome("dev", head(R2, "2"), entries("deploy-started", "deployed", "verified"), R2, completed=False,
                                     reason="could not publish the history")
    assert (outcome.status, outcome.message, failure) == ("live", "verified, then: could not publish the history", None)


def test_the_failure_line_names_the_environments_never_reached_and_outcomes_keep_the_spec_order():
    outcomes = [StageOutcome(environment=e, status=s) for e, s in (("prod", "not-reached"), ("dev", "rolled-back"), ("staging", "not-reached"))]
    assert finish_failure_line("release x failed", outcomes) == "release x failed; prod, staging not touched"
    assert finish_failure_line(None, outcomes) is None
    assert [o.environment for o in in_spec_order(outcomes, ["dev", "staging", "prod"])] == ["dev", "staging", "prod"]


def test_canary_judgements_list_verdicts_then_fired_alarms():
    recorded = [{"kind": "canary-verdict", "verdict": "PASS", "percent": 10}, {"kind": "alarm-fired", "message": "alarm errors fired"}]
    assert canary_judgements(recorded) == ["PASS at 10%", "alarm errors fired"]


def test_a_failed_stage_whose_target_serves_another_version_than_the_ledger_says_so():
    """The Prefect server died after the alias moved: the ledger says v1 is live, the target serves 2."""
    outcome, failure = stage_outcome("dev", head(R1, "1"), entries("deploy-started", "deployed", "rollback-started", "rolled-back"), R2,
                                     completed=False, reason="lost the Prefect API", serving="2")
    assert outcome.status == "rollback-failed"
    assert outcome.message.startswith(f"ROLLBACK DID NOT COMPLETE: the target serves version 2, the ledger says {R1} (version 1)")
    assert failure.startswith(f"release {R2} failed at deploy: lost the Prefect API; dev ROLLBACK DID NOT COMPLETE")


def test_a_failed_stage_whose_target_agrees_with_the_ledger_reads_as_before():
    outcome, _ = stage_outcome("dev", head(R1, "1"), entries("deploy-started", "verify-failed", "rollback-started", "rolled-back"),
                               R2, completed=False, serving="1")
    assert (outcome.status, outcome.message) == ("rolled-back", f"rolled back to {R1} (version 1)")


def test_a_stage_refused_before_touching_a_target_changed_by_hand_is_not_called_an_incomplete_rollback():
    outcome, _ = stage_outcome("dev", head(R1, "1"), entries(), R2, completed=False, stage="deploy",
                               reason="live state changed outside Slipway", serving="7")
    assert (outcome.status, outcome.message) == ("failed", f"unchanged (the target serves version 7, not the ledger's {R1} (version 1): "
                                                           "changed outside Slipway)")

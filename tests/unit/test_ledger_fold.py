from slipway.record.ledger import EnvHead, LedgerEntry, fold


def entry(seq, kind, release=None, version=None, **kw):
    return LedgerEntry(seq=seq, app="a", environment="dev", kind=kind, release_id=release, version=version, commit=kw.pop("commit", None), **kw)


def run(*entries):
    head = EnvHead(app="a", environment="dev")
    for e in entries:
        head = fold(head, e)
    return head


def test_a_verified_deploy_becomes_live_and_clears_in_progress():
    head = run(
        entry(1, "deploy-started", "r1", "1", detail={"function": "a-dev", "alias": "live"}),
        entry(2, "deployed", "r1", "1"),
        entry(3, "verified", "r1", "1", detail={"checks": [{"name": "health"}]}),
    )
    assert head.live.release_id == "r1" and head.live.version == "1"
    assert head.live.checks == [{"name": "health"}]
    assert head.in_progress is None and head.status == "live"
    assert head.function == "a-dev" and head.last_seq == 3


def test_a_deploy_without_verification_stays_in_progress_and_live_is_unchanged():
    head = run(
        entry(1, "deploy-started", "r1", "1"), entry(2, "deployed", "r1", "1"), entry(3, "verified", "r1", "1"),
        entry(4, "deploy-started", "r2", "2"), entry(5, "deployed", "r2", "2"),
    )
    assert head.status == "in-progress"
    assert head.live.release_id == "r1"
    assert head.serving_version == "2"
    assert head.in_progress.release_id == "r2" and head.in_progress.kind == "deploy"


def test_a_rollback_puts_the_verified_release_back_with_its_checks():
    head = run(
        entry(1, "deploy-started", "r1", "1"), entry(2, "verified", "r1", "1", detail={"checks": [{"name": "h"}]}),
        entry(3, "deploy-started", "r2", "2"), entry(4, "verify-failed", "r2", "2", message="boom"),
        entry(5, "rollback-started", "r1", "1"), entry(6, "rolled-back", "r1", "1"),
    )
    assert head.live.release_id == "r1" and head.live.checks == [{"name": "h"}]
    assert head.serving_version == "1" and head.in_progress is None


def test_a_rollback_with_nothing_to_return_to_leaves_nothing_live():
    head = run(entry(1, "deploy-started", "r1", "1"), entry(2, "verify-failed", "r1", "1"), entry(3, "rolled-back"))
    assert head.live is None and head.status == "empty" and head.serving_version is None


def test_a_failed_rollback_is_visible_as_such():
    head = run(entry(1, "deploy-started", "r1", "1"), entry(2, "rollback-failed", "r0", "0", message="alias update denied"))
    assert head.status == "rollback-failed"
    assert head.in_progress.message == "alias update denied"


def test_previous_verified_skips_the_live_release():
    head = run(
        entry(1, "verified", "r1", "1"), entry(2, "verified", "r2", "2"), entry(3, "verified", "r3", "3"),
    )
    assert head.previous_verified().release_id == "r2"
    assert [r.release_id for r in head.verified] == ["r1", "r2", "r3"]


def test_verifying_a_release_again_moves_it_to_the_end_without_duplicates():
    head = run(entry(1, "verified", "r1", "1"), entry(2, "verified", "r2", "2"), entry(3, "verified", "r1", "1"))
    assert [r.release_id for r in head.verified] == ["r2", "r1"]
    assert head.previous_verified().release_id == "r2"


def test_a_release_rolled_back_from_is_not_chosen_again_nor_promoted_from():
    head = run(
        entry(1, "verified", "r1", "1", commit="c1"), entry(2, "verified", "r2", "2", commit="c2"),
        entry(3, "rollback-started", "r1", "1", detail={"from_release": "r2"}),
        entry(4, "rolled-back", "r1", "1", detail={"from_release": "r2"}),
    )
    assert head.live.release_id == "r1"
    assert head.rolled_away == ["r2"]
    assert head.previous_verified() is None
    assert head.has_verified(commit="c2") is False and head.has_verified(commit="c1") is True


def test_verifying_a_rolled_away_release_again_makes_it_eligible():
    head = run(
        entry(1, "verified", "r1", "1"), entry(2, "verified", "r2", "2"),
        entry(3, "rolled-back", "r1", "1", detail={"from_release": "r2"}),
        entry(4, "verified", "r2", "3"),
    )
    assert head.rolled_away == [] and head.previous_verified().release_id == "r1"


def test_a_deploy_start_remembers_what_the_alias_served_before():
    head = run(entry(1, "deploy-started", "r1", "1", detail={"from_version": "7"}))
    assert head.in_progress.from_version == "7"


def test_the_live_release_keeps_the_flags_its_deploy_delivered_and_a_reverification_keeps_them():
    from fakes import FakeS3, FakeTarget, artifact
    from slipway.record.ledger import Ledger
    from slipway.rollout import staged

    ledger = Ledger(FakeS3(), "bucket")
    flags = {"NEW_CHECKOUT": {"version": 2, "value": "on"}}
    ctx = staged.EnvContext(ledger=ledger, app="app", environment="dev", target=FakeTarget(), run_id="r", flags=flags)
    art = artifact("r1-aaaa")
    deployed = staged.publish(ctx, art)
    staged.verify(ctx, art, deployed.version, staged.shift_traffic(ctx, art, deployed))
    assert ctx.head().live.flags == flags

    reverify = staged.EnvContext(ledger=ledger, app="app", environment="dev", target=ctx.target, run_id="r2")  # no flags: a re-verify
    seq, version = staged.begin_reverify(reverify, art)
    staged.verify(reverify, art, version, seq)
    assert reverify.head().live.flags == flags


def test_a_corrupt_ledger_entry_is_one_line_naming_the_object():
    import pytest

    from fakes import FakeS3
    from slipway.core.errors import LedgerError
    from slipway.record.ledger import Ledger

    s3 = FakeS3()
    ledger = Ledger(s3, "bucket", "slipway")
    ledger.record("app", "dev", "deploy-started", release_id="r1", version="1")
    key = next(k for k in s3.objects if "/entries/" in k)
    s3.objects[key] = (b'{"kind": "deploy-started"', s3.objects[key][1])
    with pytest.raises(LedgerError) as info:
        ledger.entries("app", "dev")
    assert "\n" not in str(info.value) and str(info.value).startswith(f"ledger object s3://bucket/{key} is not a valid ledger entry (")
    assert info.value.ref == "ledger-corrupt"


def test_a_corrupt_head_checkpoint_is_folded_again_from_the_entries():
    from fakes import FakeS3
    from slipway.record.ledger import Ledger

    s3 = FakeS3()
    ledger = Ledger(s3, "bucket", "slipway")
    ledger.record("app", "dev", "deploy-started", release_id="r1", version="1")
    head_key = next(k for k in s3.objects if k.endswith("head.json"))
    s3.objects[head_key] = (b"not json", s3.objects[head_key][1])
    assert ledger.head("app", "dev").in_progress.release_id == "r1"
    ledger.record("app", "dev", "verified", release_id="r1", version="1")  # the next write replaces the checkpoint
    assert ledger.head("app", "dev").live.release_id == "r1"


def test_an_abort_or_promote_request_belongs_to_the_running_deploy_only():
    base = [entry(1, "deploy-started", "r1", "1"), entry(2, "verified", "r1", "1"), entry(3, "deploy-started", "r2", "2"),
            entry(4, "traffic-shifted", "r2", "2", detail={"percent": 25})]
    asked = run(*base, entry(5, "abort-requested", "r2", "2", actor="ada", detail={"reason": "red"}),
                entry(6, "promote-requested", "r2", "2", actor="bob", detail={"reason": "late"}))
    assert asked.in_progress.control == {"kind": "abort", "actor": "ada", "reason": "red", "seq": 5}  # the first one counts
    assert run(*base, entry(5, "promote-requested", "r2", "2", actor="bob", detail={"reason": "x"}),
               entry(6, "deploy-started", "r3", "3")).in_progress.control is None  # the next deploy starts clean
    idle = run(*base[:2], entry(3, "abort-requested", "r1", "1", actor="ada"))
    assert idle.in_progress is None and idle.live.release_id == "r1"  # nothing running: recorded, changes nothing

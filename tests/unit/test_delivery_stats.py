"""The DORA figures from ledger entries (slipway.record.stats): what counts as a deploy, a failure, a restore and a
lead time, on a made-up month of one app's ledger."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from slipway.record.ledger import LedgerEntry
from slipway.record.stats import app_stats, environment_stats, parse_since, render_markdown, render_text

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


def ledger(env: str, *steps: tuple[int, str, str]) -> list[LedgerEntry]:
    """(minutes after T0, kind, release id) → entries with increasing seq."""
    return [LedgerEntry(seq=i + 1, app="shop", environment=env, kind=kind, release_id=rel, at=(T0 + timedelta(minutes=m)).isoformat(),
                        actor="t") for i, (m, kind, rel) in enumerate(steps)]


PROD = ledger(
    "prod",
    (0, "deploy-started", "r1"), (1, "deployed", "r1"), (2, "verified", "r1"),  # good
    (60, "deploy-started", "r2"), (61, "traffic-shifted", "r2"), (64, "canary-verdict", "r2"), (65, "rollback-started", "r1"),
    (66, "rolled-back", "r1"),  # a bad canary: 5 minutes on the canary until stable again
    (120, "deploy-started", "r3"), (121, "deployed", "r3"), (122, "verify-failed", "r3"), (123, "rollback-started", "r1"),
    (125, "rolled-back", "r1"),  # failed smoke checks: restored 4 minutes after the traffic moved
    (180, "hook", "r4"), (180, "deploy-started", "r4"), (181, "rolled-back", "r1"),  # refused before traffic: nothing to restore
    (240, "deploy-started", "r5"), (241, "deployed", "r5"), (242, "verified", "r5"),  # good
    (300, "superseded", "r0"),  # an older release stopped before anything moved: no deploy
)
COMMITS = {"r1": T0 - timedelta(hours=2), "r5": T0 + timedelta(minutes=240) - timedelta(hours=6)}


def test_deploys_failures_restores_and_lead_times():
    s = environment_stats("prod", PROD, COMMITS, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert (s.deploys, s.succeeded, s.failed) == (5, 2, 3)
    assert s.change_failure_rate == pytest.approx(0.6)
    assert s.restores == [5.0, 4.0]  # the failure refused before traffic had nothing to restore
    assert s.median_restore_min == 4.5
    assert s.lead_times == [pytest.approx(2 + 2 / 60, abs=1e-3), pytest.approx(6 + 2 / 60, abs=1e-3)]
    assert s.deploys_per_day == pytest.approx(1.0)  # 2 verified deploys over 2 days


def test_the_window_keeps_what_started_in_it_and_counts_releases_without_a_commit_date():
    s = environment_stats("prod", PROD, {}, T0 + timedelta(minutes=100), T0 + timedelta(minutes=300))
    assert (s.deploys, s.failed, s.lead_time_unknown) == (3, 2, 1)


def test_an_app_names_its_production_and_buckets_causes_by_week():
    dev = ledger("dev", (0, "deploy-started", "r1"), (1, "deployed", "r1"), (2, "verified", "r1"))
    stats = app_stats("shop", {"dev": dev, "prod": PROD}, ["dev", "prod"], COMMITS,
                      [(T0, "code-defect"), (T0 + timedelta(days=7), "configuration"), (T0 + timedelta(days=7), "code-defect")],
                      T0 - timedelta(days=1), T0 + timedelta(days=30))
    assert stats.production == "prod" and [e.environment for e in stats.environments] == ["dev", "prod"]
    assert stats.causes == {"2026-W45": {"code-defect": 1}, "2026-W46": {"configuration": 1, "code-defect": 1}}
    text = render_text([stats])
    assert "shop/prod *" in text and "60%" in text and "4.5 min" in text
    assert "| **prod** (production) | 5 |" in render_markdown(stats)


def test_since_reads_durations_and_dates():
    now = T0
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2026-10-01", now) == datetime(2026, 10, 1, tzinfo=timezone.utc)

"""Whether releases fail less: the four DORA figures per app and environment, computed from the ledger alone (plus
each release's commit date), and the causes of failed releases by class over time.

Definitions (over a window ``since``…``until``):

- **deployment frequency**: deploys that ended verified, per day (a re-verification of the live release is not a
  deploy; a rollback is not either);
- **change failure rate**: deploys that did not end verified (rolled back, or failed before traffic) ÷ all deploys;
  a deploy superseded or refused before anything moved is no deploy;
- **time to restore**: for a failed deploy that took traffic (``deployed`` or ``traffic-shifted``), from the first such
  entry to the environment back on a verified release (``rolled-back``, ``reconciled``, or a later ``verified``);
  a failure that never took traffic had nothing to restore;
- **lead time for changes**: from the commit's date to ``verified`` in the environment (the last environment of the
  promotion order is the one that counts, like "in production"); releases published before commit dates were
  recorded are left out (and counted).

The causes come from the failure records the release flow writes (their classification, ``slipway diagnose``).
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, Field

from slipway.record.ledger import LedgerEntry

TRAFFIC = ("deployed", "traffic-shifted")
RESTORED = ("rolled-back", "reconciled", "verified")


def parse_at(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


class EnvStats(BaseModel):
    environment: str
    deploys: int = 0
    succeeded: int = 0
    failed: int = 0
    deploys_per_day: float = 0.0
    change_failure_rate: float | None = None
    restores: list[float] = Field(default_factory=list, description="minutes, one per failed deploy that took traffic")
    lead_times: list[float] = Field(default_factory=list, description="hours, commit date → verified")
    lead_time_unknown: int = 0

    @property
    def median_restore_min(self) -> float | None:
        return round(statistics.median(self.restores), 2) if self.restores else None

    @property
    def median_lead_time_h(self) -> float | None:
        return round(statistics.median(self.lead_times), 3) if self.lead_times else None


class AppStats(BaseModel):
    app: str
    since: datetime
    until: datetime
    environments: list[EnvStats]
    production: str | None  # the last environment of the promotion order
    causes: dict[str, dict[str, int]] = Field(default_factory=dict, description="ISO week → classification → failed releases")

    def row(self, env: EnvStats) -> dict[str, Any]:
        return {"app": self.app, "environment": env.environment, "deploys": env.deploys, "deploys_per_day": round(env.deploys_per_day, 3),
                "change_failure_rate": None if env.change_failure_rate is None else round(env.change_failure_rate, 3),
                "median_time_to_restore_min": env.median_restore_min, "median_lead_time_h": env.median_lead_time_h,
                "lead_time_unknown": env.lead_time_unknown}


def environment_stats(environment: str, entries: list[LedgerEntry], commit_times: dict[str, datetime], since: datetime,
                      until: datetime) -> EnvStats:
    """The figures of one environment from its ledger entries (oldest first)."""
    out = EnvStats(environment=environment)
    ordered = sorted(entries, key=lambda e: e.seq)
    current: dict[str, Any] | None = None  # the deploy in progress: release, start, first traffic
    restoring: datetime | None = None  # a failed deploy took traffic at this time; waiting for a verified release
    for e in ordered:
        at = parse_at(e.at)
        if restoring is not None and e.kind in RESTORED:
            if since <= restoring <= until:
                out.restores.append(round((at - restoring).total_seconds() / 60, 3))
            restoring = None
        if e.kind == "deploy-started":
            if current is not None:  # a deploy that never ended (killed, reconciled later): failed
                _failed(out, current, since, until)
                restoring = current.get("traffic") or restoring
            current = {"release": e.release_id, "at": at, "traffic": None}
        elif current is not None and e.kind in TRAFFIC and current["traffic"] is None:
            current["traffic"] = at
        elif current is not None and e.kind == "verified" and e.release_id == current["release"]:
            if since <= current["at"] <= until:
                out.deploys += 1
                out.succeeded += 1
                committed = commit_times.get(e.release_id or "")
                if committed is None:
                    out.lead_time_unknown += 1
                else:
                    out.lead_times.append(round(max(0.0, (at - committed).total_seconds()) / 3600, 3))
            current = None
        elif current is not None and e.kind in ("rolled-back", "reconciled", "rollback-failed", "verify-failed", "superseded"):
            if e.kind == "verify-failed":
                continue  # the rollback that follows ends it
            _failed(out, current, since, until)
            if current["traffic"] is not None and e.kind in ("rolled-back", "reconciled"):
                if since <= current["traffic"] <= until:
                    out.restores.append(round((at - current["traffic"]).total_seconds() / 60, 3))
            elif current["traffic"] is not None:
                restoring = current["traffic"]  # a failed rollback: restored when something verified is live again
            current = None
    days = max((until - since).total_seconds() / 86400, 1 / 24)
    out.deploys_per_day = out.succeeded / days
    out.change_failure_rate = (out.failed / out.deploys) if out.deploys else None
    return out


def _failed(out: EnvStats, current: dict, since: datetime, until: datetime) -> None:
    if since <= current["at"] <= until:
        out.deploys += 1
        out.failed += 1


def app_stats(app: str, entries_by_env: dict[str, list[LedgerEntry]], order: list[str], commit_times: dict[str, datetime],
              failures: list[tuple[datetime, str]], since: datetime, until: datetime) -> AppStats:
    """``order``: the environments in promotion order (the last is production); ``failures``: (when, classification)."""
    envs = [environment_stats(env, entries_by_env.get(env, []), commit_times, since, until) for env in order if env in entries_by_env]
    causes: dict[str, dict[str, int]] = {}
    for at, cls in failures:
        if since <= at <= until:
            year, week, _ = at.isocalendar()
            bucket = causes.setdefault(f"{year}-W{week:02d}", {})
            bucket[cls] = bucket.get(cls, 0) + 1
    return AppStats(app=app, since=since, until=until, environments=envs, production=order[-1] if order else None,
                    causes=dict(sorted(causes.items())))


def collect(store, ledger, apps: list[str], since: datetime, until: datetime) -> list[AppStats]:
    """The figures of ``apps`` from the ledger, the store's provenance records (commit dates) and failure records (causes)."""
    from slipway.record.diagnose import FailureRecord, diagnose

    out = []
    for app in apps:
        envs = ledger.environments(app)
        entries = {env: ledger.entries(app, env) for env in envs}
        # promotion order, as the ledger shows it: an environment's first verified release came after the one before it
        order = sorted(envs, key=lambda env: min((parse_at(e.at) for e in entries[env] if e.kind == "verified"), default=until))
        commit_times = {}
        for found in entries.values():
            for e in found:
                if e.kind == "verified" and e.release_id and e.artifact_sha256 and e.release_id not in commit_times:
                    prov = store.provenance(app, e.artifact_sha256, e.release_id)
                    commit_times[e.release_id] = parse_at(prov.committed_at) if prov and prov.committed_at else None
        failures = []
        for _, data in store.failure_records(app, limit=500):
            record = FailureRecord.model_validate(data)
            failures.append((parse_at(record.at), diagnose(record).classification))
        out.append(app_stats(app, entries, order, {k: v for k, v in commit_times.items() if v}, failures, since, until))
    return out


def parse_since(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``8w`` or an ISO date."""
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    return parse_at(text)


def _fmt(x: float | None, suffix: str = "") -> str:
    return "—" if x is None else f"{x:g}{suffix}"


def _hours(h: float | None) -> str:
    """A lead time: minutes under an hour, hours under two days, then days."""
    if h is None:
        return "—"
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def render_text(stats: list[AppStats]) -> str:
    if not stats:
        return "no releases in the window"
    first = stats[0]
    lines = [f"DORA figures from {first.since:%Y-%m-%d %H:%M} to {first.until:%Y-%m-%d %H:%M} UTC (from the ledger)", "",
             f"{'app/environment':<34} {'deploys':>7} {'per day':>8} {'failure rate':>12} {'restore (median)':>17} {'lead time (median)':>19}"]
    for s in stats:
        for e in s.environments:
            rate = "—" if e.change_failure_rate is None else f"{e.change_failure_rate:.0%}"
            lead = _hours(e.median_lead_time_h) + (f" ({e.lead_time_unknown} unknown)" if e.lead_time_unknown else "")
            mark = " *" if e.environment == s.production else ""
            lines.append(f"{(s.app + '/' + e.environment + mark):<34} {e.deploys:>7} {e.deploys_per_day:>8.2f} {rate:>12} "
                         f"{_fmt(e.median_restore_min, ' min'):>17} {lead:>19}")
    lines += ["", "* production (the last environment): its lead time is the app's lead time for changes"]
    weeks = sorted({w for s in stats for w in s.causes})
    if weeks:
        classes = sorted({c for s in stats for week in s.causes.values() for c in week})
        lines += ["", "failed releases by cause and week:", f"{'week':<10}" + "".join(f"{c:>24}" for c in classes)]
        for w in weeks:
            lines.append(f"{w:<10}" + "".join(f"{sum(s.causes.get(w, {}).get(c, 0) for s in stats):>24}" for c in classes))
    return "\n".join(lines)


def render_markdown(s: AppStats) -> str:
    md = [f"# Delivery figures for `{s.app}`", "", f"From {s.since:%Y-%m-%d} to {s.until:%Y-%m-%d} (UTC), from the ledger.", "",
          "| environment | deploys | per day | change failure rate | time to restore (median) | lead time (median) |",
          "|---|---|---|---|---|---|"]
    for e in s.environments:
        rate = "—" if e.change_failure_rate is None else f"{e.change_failure_rate:.0%}"
        name = f"**{e.environment}** (production)" if e.environment == s.production else e.environment
        md.append(f"| {name} | {e.deploys} | {e.deploys_per_day:.2f} | {rate} | {_fmt(e.median_restore_min, ' min')} | "
                  f"{_hours(e.median_lead_time_h)} |")
    if s.causes:
        classes = sorted({c for week in s.causes.values() for c in week})
        md += ["", "## Failed releases by cause", "", "| week | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        md += [f"| {w} | " + " | ".join(str(s.causes[w].get(c, 0)) for c in classes) + " |" for w in s.causes]
    return "\n".join(md) + "\n"


def chart_png(stats: list[AppStats], path: str) -> str:
    """A PNG: deploys per week (succeeded / failed) and failed releases by cause per week. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the chart needs matplotlib: pip install matplotlib (or leave out --chart)") from exc
    weeks = sorted({w for s in stats for w in s.causes})
    classes = sorted({c for s in stats for week in s.causes.values() for c in week})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{s.app}/{e.environment}" for s in stats for e in s.environments]
    ok = [e.succeeded for s in stats for e in s.environments]
    bad = [e.failed for s in stats for e in s.environments]
    left.barh(labels, ok, color="#2e7d32", label="verified")
    left.barh(labels, bad, left=ok, color="#c62828", label="failed")
    left.set_title("deploys in the window")
    left.legend(loc="lower right")
    bottom = [0] * len(weeks)
    for cls in classes:
        counts = [sum(s.causes.get(w, {}).get(cls, 0) for s in stats) for w in weeks]
        right.bar(weeks, counts, bottom=bottom, label=cls)
        bottom = [b + c for b, c in zip(bottom, counts)]
    right.set_title("failed releases by cause, per week")
    if classes:
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["AppStats", "EnvStats", "app_stats", "chart_png", "collect", "environment_stats", "parse_since", "render_markdown", "render_text"]

"""What a person reads: the per-environment summary, the markdown release report, history tables."""

from __future__ import annotations

from typing import Iterable

from slipway.record.ledger import EnvHead, LedgerEntry, entry_row
from slipway.core.models import StageOutcome


def outcome_from_head(env: str, head: EnvHead, release_id: str, status: str, message: str = "") -> StageOutcome:
    live = head.live
    return StageOutcome(
        environment=env,
        status=status,
        release_id=release_id,
        live_release_id=live.release_id if live else None,
        live_version=live.version if live else None,
        message=message,
    )


def render_summary(outcomes: Iterable[StageOutcome], release_id: str | None = None) -> str:
    rows = list(outcomes)
    lines = [f"release {release_id}" if release_id else "release"]
    width = max((len(o.environment) for o in rows), default=4)
    for o in rows:
        version = f" (version {o.live_version})" if o.live_version and o.live_version != o.live_release_id else ""
        live = f"{o.live_release_id}{version}" if o.live_release_id else "nothing live"
        text = f"  {o.environment:<{width}}  {o.status:<20} live: {live}"
        if o.message:
            text += f"  — {o.message}"
        lines.append(text)
    return "\n".join(lines)


def release_report_markdown(
    *, app: str, release_id: str | None, commit: str, subject: str, repo: str, ref: str, artifact: dict | None,
    outcomes: list[StageOutcome], error: str | None, ui_url: str | None = None, verdicts: dict[str, list[str]] | None = None,
    links: dict[str, str] | None = None, preflight: list[dict] | None = None, diagnosis: dict | None = None,
) -> str:
    verdict = "FAILED" if error else "SUCCEEDED"
    md = [f"# Release {release_id or '(not built)'} of `{app}`: {verdict}", ""]
    if error:
        md += [f"> **{error}**", ""]
    md += [
        "| | |",
        "|---|---|",
        f"| repository | `{repo}` |",
        f"| ref → commit | `{ref}` → `{commit}` |",
        f"| subject | {subject} |",
    ]
    if artifact:
        md += [
            f"| artifact | `{artifact.get('uri')}` |",
            f"| sha256 | `{artifact.get('sha256')}` |",
            f"| size | {artifact.get('size', 0):,} bytes{' (reused)' if artifact.get('reused') else ''} |",
        ]
    md += ["", "## Environments", "", "| environment | outcome | live release | version | detail |", "|---|---|---|---|---|"]
    for o in outcomes:
        md.append(f"| {o.environment} | {o.status} | {o.live_release_id or '—'} | {o.live_version or '—'} | {o.message or ''} |")
    md += diagnosis_section(diagnosis)
    if preflight:
        md += ["", "## Preflight", ""] + [f"- {'✅' if c['passed'] else '❌'} {c['name']}: {c['detail']}" for c in preflight]
    if verdicts:
        md += ["", "## Canary verdicts", ""]
        for env, lines in verdicts.items():
            md += [f"- **{env}**: " + "; ".join(lines)]
    if ui_url or links:
        md += ["", "## Links", ""]
        if ui_url:
            md += [f"- [this run in the Prefect UI]({ui_url})"]
        for text, url in (links or {}).items():
            md += [f"- [{text}]({url})"]
    return "\n".join(md) + "\n"


def history_rows(entries: Iterable[LedgerEntry]) -> list[dict]:
    return [entry_row(e) for e in entries]


def render_history(entries: list[LedgerEntry]) -> str:
    if not entries:
        return "no ledger entries"
    rows = history_rows(entries)
    cols = ["at", "environment", "seq", "kind", "release", "version", "message"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols if c != "message"}
    out = ["  ".join(c.ljust(widths.get(c, 0)) for c in cols)]
    for r in rows:
        out.append("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in cols))
    return "\n".join(out)


def diagnosis_section(diagnosis: dict | None) -> list[str]:
    """The release report's summary of the diagnose flow's result, linking the full diagnosis artifact."""
    if not diagnosis:
        return []
    md = ["", "## Diagnosis", "", f"**Cause: {diagnosis.get('title')}** (`{diagnosis.get('classification')}`)", ""]
    md += [f"- {r}" for r in diagnosis.get("reasoning") or []]
    md += ["", f"**Next:** {diagnosis.get('next_action')}"]
    if diagnosis.get("url"):
        md += ["", f"[the full diagnosis, with the evidence and the diff against the last verified release]({diagnosis['url']})"]
    return md


def failure_report_markdown(*, repo: str, ref: str, commit: str | None, error: dict, diagnosis: dict | None = None) -> str:
    """A release that stopped before any environment was touched: the stage, the error and its evidence."""
    md = [
        f"# Release of `{repo}` at `{ref}`: FAILED at {error.get('stage')}",
        "",
        f"> **{error.get('message')}**" + (f" — {error.get('hint')}" if error.get("hint") else ""),
        "",
        "No environment was touched.",
        "",
        "| | |",
        "|---|---|",
        f"| stage | {error.get('stage')} |",
        f"| reference | `{error.get('ref')}` |",
        f"| commit | `{commit or 'not cloned'}` |",
    ]
    md += diagnosis_section(diagnosis)
    evidence = error.get("evidence") or {}
    if evidence.get("failed_tests"):
        md += ["", "## Failing tests", ""] + [f"- `{t}`" for t in evidence["failed_tests"]]
    if evidence.get("output_tail"):
        md += ["", "## Output (tail)", "", "```", str(evidence["output_tail"])[-4000:], "```"]
    return "\n".join(md) + "\n"

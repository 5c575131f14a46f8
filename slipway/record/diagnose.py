"""Why did the latest release fail? Triage against the last verified release.

When a release fails, the release flow writes a **failure record** to the artifact store
(``diagnostics/{app}/{at}-{run}.json``): the leaf error (stage, reference, evidence), the ledger entries the
release wrote in the failing environment, the preflight checks, and a **diff** against the release that was
verified in that environment before (computed from the clone while it still exists: commits, files, dependency
and spec diffs, artifact size, environment-variable *names*, feature flags).

``diagnose`` turns a record into a **diagnosis**: the failing stage and check with its evidence, a
**classification** with the reasoning that led to it, the diff, and a suggested next action. Pure functions
(``classify``, ``diagnose``, ``compute_diff``) so every rule is unit-tested; no Prefect here.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from slipway.record import rules

Classification = Literal[
    "incompatible-artifact", "code-defect", "configuration", "network-or-aws", "too-large-or-slow", "drift", "lifecycle-hook",
    "unclassified",
]
TITLES: dict[str, str] = {
    "incompatible-artifact": "incompatible artifact",
    "code-defect": "code defect",
    "configuration": "configuration",
    "network-or-aws": "network or AWS availability",
    "too-large-or-slow": "artifact too large or too slow to deploy",
    "drift": "infrastructure drift",
    "lifecycle-hook": "a lifecycle hook refused the release",
    "unclassified": "unclassified",
}


URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
MAX_DIFF_LINES = 60


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReleaseDiff(_Model):
    """What changed between the last verified release of an environment and the failed one."""

    environment: str
    baseline_release: str | None = None  # None: nothing was verified there before (a first release)
    baseline_commit: str | None = None
    new_commit: str | None = None
    commits: list[str] = Field(default_factory=list, description="'abc1234 subject', newest first")
    note: str | None = None  # why a part of the diff is missing (baseline not in the clone's history, …)
    files: list[str] = Field(default_factory=list, description="'M src/app.py' (git diff --name-status)")
    dependencies: list[str] = Field(default_factory=list, description="unified diff of requirements/lock files")
    spec: list[str] = Field(default_factory=list, description="unified diff of slipway.yaml (environment values as ***)")
    artifact_size: dict[str, int | None] = Field(default_factory=dict, description="{'baseline': bytes, 'new': bytes}")
    env_keys: dict[str, list[str]] = Field(default_factory=dict, description="added/removed/changed variable NAMES only")
    flags: list[str] = Field(default_factory=list, description="feature flag changes")

    def lines(self) -> list[str]:
        """The diff as plain text lines (the CLI and the markdown report share them)."""
        if not self.baseline_release:
            return [f"no verified release in {self.environment} before this one: nothing to compare with"]
        out = [f"against {self.baseline_release} (commit {(self.baseline_commit or '?')[:12]}), last verified in {self.environment}:"]
        if self.note:
            out.append(f"  note: {self.note}")
        out.append(f"  commits ({len(self.commits)}):" if self.commits else "  commits: none (same commit)")
        out += [f"    {c}" for c in self.commits[:20]] + ([f"    … {len(self.commits) - 20} more"] if len(self.commits) > 20 else [])
        if self.files:
            out.append(f"  files changed ({len(self.files)}):")
            out += [f"    {f}" for f in self.files[:30]] + ([f"    … {len(self.files) - 30} more"] if len(self.files) > 30 else [])
        out.append("  dependencies: " + ("" if self.dependencies else "unchanged"))
        out += [f"    {line}" for line in self.dependencies]
        out.append("  slipway.yaml: " + ("" if self.spec else "unchanged"))
        out += [f"    {line}" for line in self.spec]
        base, new = self.artifact_size.get("baseline"), self.artifact_size.get("new")
        if base is not None and new is not None:
            delta = new - base
            pct = f", {delta / base:+.1%}" if base else ""
            out.append(f"  artifact size: {base:,} → {new:,} bytes ({delta:+,}{pct})")
        elif new is not None:
            out.append(f"  artifact size: {new:,} bytes (baseline unknown)")
        keys = self.env_keys
        if any(keys.get(k) for k in ("added", "removed", "changed")):
            parts = [f"{label} {', '.join(keys[k])}" for k, label in (("added", "added"), ("removed", "removed"), ("changed", "changed"))
                     if keys.get(k)]
            out.append("  environment variables (names only): " + "; ".join(parts))
        else:
            out.append("  environment variables: unchanged")
        out.append("  feature flags: " + ("" if self.flags else "unchanged"))
        out += [f"    {line}" for line in self.flags]
        return out


class FailureRecord(_Model):
    """Written by the release flow when a release fails; read by ``slipway diagnose``."""

    app: str
    environment: str | None = None  # where it failed; None: before any environment (tests, build, preflight…)
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    run_id: str | None = None
    run_url: str | None = None
    repo: str = ""
    ref: str = ""
    commit: str | None = None
    subject: str | None = None
    release_id: str | None = None
    stage: str
    error: dict[str, Any]  # SlipwayError.to_dict() of the leaf error
    outcome: str | None = None  # what the environment was left on ("rolled back to …", "unchanged …")
    outcome_status: str | None = None  # rolled-back | failed | rollback-failed | …
    ledger: list[dict[str, Any]] = Field(default_factory=list, description="entries this release wrote in that environment")
    preflight: list[dict[str, Any]] = Field(default_factory=list)
    env_keys: list[str] = Field(default_factory=list, description="environment variable names the function gets (no values)")
    diff: ReleaseDiff | None = None


class Diagnosis(_Model):
    app: str
    environment: str | None
    release_id: str | None
    commit: str | None
    at: str
    run_url: str | None = None
    stage: str
    check: str | None  # the leaf check (a smoke check's name, a preflight check, a test id, an AWS call)
    error: str
    error_ref: str | None
    evidence: list[str]
    classification: Classification
    reasoning: list[str]
    next_action: str
    outcome: str | None
    diff: ReleaseDiff | None
    rule: str | None = None  # the rule of slipway.record.rules that decided, with its one-line reason

    @property
    def title(self) -> str:
        return TITLES[self.classification]

    def text(self) -> str:
        where = f"{self.app}/{self.environment}" if self.environment else self.app
        out = [
            f"diagnosis of the failed release {self.release_id or '(not built)'} of {where} (commit {(self.commit or '?')[:12]}, {self.at})",
            f"  failed at:   {self.stage}" + (f" — {self.check}" if self.check else ""),
            f"  error:       {self.error}",
            f"  cause:       {self.title.upper()}",
        ]
        out += [f"  {'reasoning:' if i == 0 else '':<12} {r}" for i, r in enumerate(self.reasoning)]
        if self.rule:
            out.append(f"  rule:        {self.rule}")
        if self.evidence:
            out.append("  evidence:")
            out += [f"    {line}" for line in self.evidence]
        if self.outcome:
            out.append(f"  now:         {self.outcome}")
        out.append(f"  next:        {self.next_action}")
        if self.diff:
            out.append("  diff " + "\n  ".join(self.diff.lines()))
        if self.run_url:
            out.append(f"  run:         {self.run_url}")
        return "\n".join(out)

    def markdown(self) -> str:
        where = f"{self.app}/{self.environment}" if self.environment else self.app
        md = [
            f"# Why release {self.release_id or '(not built)'} of `{where}` failed: {self.title}",
            "",
            f"> **{self.error}**",
            "",
            "| | |",
            "|---|---|",
            f"| stage | {self.stage} |",
            f"| check | {self.check or '—'} |",
            f"| classification | **{self.title}** (`{self.classification}`) |",
            f"| commit | `{self.commit or '—'}` |",
            f"| environment now | {self.outcome or '—'} |",
            f"| next action | {self.next_action} |",
            "",
            "## Reasoning",
            "",
        ] + [f"- {r}" for r in self.reasoning]
        if self.evidence:
            md += ["", "## Evidence", "", "```", *self.evidence, "```"]
        if self.diff:
            md += ["", "## Diff against the last verified release", "", "```", *self.diff.lines(), "```"]
        if self.run_url:
            md += ["", f"[the failed run]({self.run_url})"]
        return "\n".join(md) + "\n"


# ---- classification: the ordered rule table in slipway.record.rules ----------------------------------------------------------
def _aws_code(error: dict) -> str | None:
    evidence = error.get("evidence") or {}
    code = evidence.get("aws_error_code")
    if code:
        return str(code)
    match = re.search(r"could not [^:]+: ([A-Za-z.]+(?:Exception|Error|Exceeded|Denied|Throttling|Fault)|\d{3}):", error.get("message", ""))
    return match.group(1) if match else None


def classify(record: FailureRecord) -> tuple[Classification, list[str], str | None, list[str]]:
    """(classification, reasoning, leaf check, evidence lines) of a failure record: the first rule of the ordered
    table (slipway.record.rules.RULES) that decides."""
    classification, reasoning, check, evidence, _ = rules.classify(record, _aws_code)
    return classification, reasoning, check, evidence


def _drift_fix(app: str, env: str, drift: dict) -> str:
    if drift.get("serving") and drift.get("serving") == drift.get("ledger_version"):
        return (f"undo the outside change with the verify flow (`prefect deployment run 'verify/verify' -p heal=true`), or make it "
                f"part of slipway.yaml first; then release {app} again")
    return (f"put {app}/{env} back on its verified release with `slipway rollback {app} {env} --to "
            f"{drift.get('ledger_release') or 'RELEASE_ID'}`, or make the outside change part of a release (slipway.yaml, a commit); "
            "then release again")


def next_action(record: FailureRecord, classification: Classification) -> str:
    app, env = record.app, record.environment
    hint = record.error.get("hint")
    if record.error.get("ref") in ("artifact-tampered", "ledger-tampered"):
        return hint or "delete the tampered object and release again"
    if record.outcome_status == "rollback-failed":
        return f"roll back by hand first: `slipway rollback {app} {env}` (the automatic rollback did not complete), then fix the cause"
    fix = {
        "incompatible-artifact": "fix the packaging" + (f": {hint}" if hint else "") + "; then release again",
        "code-defect": "fix the code (the failing check or test above) and add a test that catches it; then release again",
        "configuration": "fix the configuration named above (no code change needed)" + (f": {hint}" if hint else "") + "; then release again",
        "network-or-aws": "re-run the release: the failure looks transient; if it repeats, check the endpoint, AWS Health and service quotas",
        "too-large-or-slow": "trim the artifact (the largest entries are listed above) or raise the budget; for a slow deploy, re-run and "
                             "check the target's update status",
        "drift": _drift_fix(app, env, (record.error.get("evidence") or {}).get("drift") or {}),
        "lifecycle-hook": "read the hook's answer above: fix what it found in the release (or the hook, if it is wrong or unreachable); "
                          "then release again",
        "unclassified": hint or "read the run's logs (link above)",
    }[classification]
    if record.outcome_status == "rolled-back" and classification != "network-or-aws":
        fix += f" ({env} is already back on its previous release: no rollback needed)"
    return fix


def diagnose(record: FailureRecord) -> Diagnosis:
    classification, reasoning, check, evidence, decided_by = rules.classify(record, _aws_code)
    err = record.error
    one_line = err.get("message", "")
    if err.get("target"):
        one_line += f" ({err['target']})"
    return Diagnosis(
        app=record.app, environment=record.environment, release_id=record.release_id, commit=record.commit, at=record.at,
        run_url=record.run_url, stage=record.stage, check=check, error=one_line, error_ref=err.get("ref"), evidence=evidence,
        classification=classification, reasoning=reasoning, next_action=next_action(record, classification),
        outcome=record.outcome, diff=record.diff, rule=f"{decided_by.name}: {decided_by.reason}",
    )


def pick_failure_record(records, environment: str | None) -> tuple[str, dict] | None:
    """The newest of ``records`` ((key, data), newest first) that failed in ``environment`` (any, when None)."""
    for key, data in records:
        where = data.get("environment") or ((data.get("diff") or {}).get("environment"))
        if environment is None or where == environment:
            return key, data
    return None


def diagnosis_environment(record: FailureRecord) -> str | None:
    return record.environment or (record.diff.environment if record.diff else None)


def diagnosis_view(record: FailureRecord, key: str, head=None) -> dict:
    """The diagnosis as the CLI and the diagnose flow return it; with ``head`` (the environment's ledger head now), a
    note when a release was verified there after the failure."""
    result = diagnose(record)
    since = None
    env = diagnosis_environment(record)
    if head is not None and head.live and head.live.verified_at and head.live.verified_at > record.at:
        since = f"since then, {env} verified {head.live.release_id} (at {head.live.verified_at})"
    return {**result.model_dump(mode="json"), "title": result.title, "since": since, "record_key": key,
            "markdown": result.markdown() + (f"\n_{since}_\n" if since else ""),
            "text": result.text() + (f"\n  note:        {since}" if since else "")}


# ---- the diff -----------------------------------------------------------------------------------------------
DEPENDENCY_FILES = re.compile(r"(^|/)(requirements[^/]*\.(txt|in)|poetry\.lock|Pipfile(\.lock)?|pyproject\.toml|uv\.lock|"
                              r"package(-lock)?\.json|setup\.(py|cfg))$")


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_TERMINAL_PROMPT="0")
    result = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "core.quotepath=off", *args], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"git {args[0]} exited {result.returncode}")
    return result.stdout


def _show(repo: Path, commit: str, path: str) -> str | None:
    try:
        return _git(repo, "show", f"{commit}:{path}")
    except RuntimeError:
        return None


def _unified(old: str | None, new: str | None, name: str) -> list[str]:
    old, new = (URL_CREDENTIALS.sub(r"\1***@", t) if t else t for t in (old, new))  # --index-url https://user:token@…
    lines = list(difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(), f"a/{name}", f"b/{name}", n=1, lineterm=""))
    return lines[:MAX_DIFF_LINES] + ([f"… {len(lines) - MAX_DIFF_LINES} more lines"] if len(lines) > MAX_DIFF_LINES else [])


def spec_env_vars(spec_text: str | None, environment: str) -> dict[str, str]:
    """The function's environment variables declared by a slipway.yaml (artifact-wide + the environment's)."""
    try:
        data = yaml.safe_load(spec_text or "") or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    artifact = data.get("artifact") if isinstance(data.get("artifact"), dict) else {}
    out.update({str(k): str(v) for k, v in (artifact.get("environment") or {}).items()} if isinstance(artifact.get("environment"), dict) else {})
    for env in data.get("environments") or []:
        if isinstance(env, dict) and env.get("name") == environment and isinstance(env.get("environment"), dict):
            out.update({str(k): str(v) for k, v in env["environment"].items()})
    return out


def redacted_spec(spec_text: str | None) -> str | None:
    """The spec as YAML with every environment variable's value replaced by ``***`` (the diff shows names only)."""
    if spec_text is None:
        return None
    try:
        data = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return "# (not valid YAML: not shown)"
    if not isinstance(data, dict):
        return "# (not a mapping: not shown)"
    holders = [data.get("artifact")] + list(data.get("environments") or [])
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("environment"), dict):
            holder["environment"] = {k: "***" for k in holder["environment"]}
    for check in ((data.get("verify") or {}).get("smoke") or []) if isinstance(data.get("verify"), dict) else []:
        request = check.get("request") if isinstance(check, dict) else None
        if isinstance(request, dict) and isinstance(request.get("headers"), dict):
            request["headers"] = {k: "***" for k in request["headers"]}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def env_key_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Names only: a value is never copied out of here."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }


def compute_diff(
    repo: Path, *, environment: str, new_commit: str, spec_path: str = "slipway.yaml", baseline_release: str | None,
    baseline_commit: str | None, baseline_size: int | None = None, new_size: int | None = None,
    baseline_flags: dict | None = None, new_flags: dict | None = None, flag_lines=None,
) -> ReleaseDiff:
    """The diff of the clone at ``new_commit`` against ``baseline_commit`` (the last verified release there)."""
    new_spec = _show(repo, new_commit, spec_path)
    new_env = spec_env_vars(new_spec, environment)
    flags = flag_lines(baseline_flags or {}, new_flags or {}) if flag_lines else ["not compared: the release failed before any deploy"]
    common = dict(environment=environment, baseline_release=baseline_release, baseline_commit=baseline_commit, new_commit=new_commit,
                  artifact_size={"baseline": baseline_size, "new": new_size}, flags=flags)
    if not baseline_release or not baseline_commit:
        return ReleaseDiff(**common)
    try:
        _git(repo, "cat-file", "-e", f"{baseline_commit}^{{commit}}")
    except RuntimeError:
        return ReleaseDiff(**common, note=f"commit {baseline_commit[:12]} is not in the repository's history (force-pushed or another repo)",
                           env_keys=env_key_changes({}, new_env))
    rng = f"{baseline_commit}..{new_commit}"
    commits = [line for line in _git(repo, "log", "--format=%h %s", rng).splitlines() if line]
    behind = [line for line in _git(repo, "log", "--format=%h %s", f"{new_commit}..{baseline_commit}").splitlines() if line]
    note = f"the failed commit is not a descendant of the baseline: {len(behind)} baseline commit(s) are not in it" if behind else None
    names = _git(repo, "diff", "--name-status", "--no-renames", baseline_commit, new_commit).splitlines()
    files = [" ".join(line.split("\t")) for line in names if line]
    dependencies: list[str] = []
    for line in names:
        path = line.split("\t")[-1]
        if DEPENDENCY_FILES.search(path):
            dependencies += _unified(_show(repo, baseline_commit, path), _show(repo, new_commit, path), path)
    old_spec = _show(repo, baseline_commit, spec_path)
    return ReleaseDiff(
        **common, commits=commits, note=note, files=files, dependencies=dependencies[:MAX_DIFF_LINES],
        spec=_unified(redacted_spec(old_spec), redacted_spec(new_spec), spec_path) if redacted_spec(old_spec) != redacted_spec(new_spec) else [],
        env_keys=env_key_changes(spec_env_vars(old_spec, environment), new_env),
    )


__all__ = ["Classification", "Diagnosis", "FailureRecord", "ReleaseDiff", "classify", "compute_diff", "diagnose", "env_key_changes",
           "next_action", "spec_env_vars"]

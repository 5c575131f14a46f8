"""The diagnosis's ordered rule table (slipway.record.rules): each rule decides on the facts it is written for (one
record per rule, in table order), the table covers every error reference Slipway raises, and the diff decides
where it should (a spec-only change is configuration naming the field, a dependency change is named)."""

from __future__ import annotations

import pytest

from slipway.core.errors import REFERENCES
from slipway.record.diagnose import FailureRecord, ReleaseDiff, _aws_code, diagnose
from slipway.record.rules import LEFT_UNCLASSIFIED, RULES, classify


def rec(stage: str, ref: str = "x", message: str = "it failed", evidence: dict | None = None, transient: bool = False,
        diff: ReleaseDiff | None = None, **kw) -> FailureRecord:
    error = {"stage": stage, "ref": ref, "message": message, "hint": None, "evidence": evidence or {}, "transient": transient}
    return FailureRecord(app="shop", environment=kw.pop("environment", "prod"), stage=stage, error=error, diff=diff, **kw)


def smoke(response=None, detail: str = "FunctionError Unhandled", name: str = "health") -> dict:
    return {"checks": [{"name": name, "passed": False, "detail": detail, "response": response}]}


def spec_diff(*spec_lines: str, files=("M\tslipway.yaml",), deps=()) -> ReleaseDiff:
    return ReleaseDiff(environment="prod", baseline_release="r1", baseline_commit="a" * 40, new_commit="b" * 40,
                       files=list(files), spec=list(spec_lines), dependencies=list(deps))


VERDICT_FAIL = {"verdict": {"verdict": "FAIL", "reason": "failed on error_rate", "metrics": []}, "percent": 10}
PREFLIGHT = "prod: credentials usable"

CASES = {
    "preflight-aws-unreachable": rec("preflight", "aws-unreachable", evidence={"checks": [{"name": PREFLIGHT, "passed": False, "detail": "x"}]}),
    "preflight-account": rec("preflight", "preflight-failed", evidence={"checks": [{"name": "prod: target", "passed": False, "detail": "no role"}]}),
    "preflight-hooks-and-metrics": rec("preflight", "preflight-failed", evidence={"checks": [
        {"name": "prod: metric checkout", "passed": False, "detail": "Prometheus refused the query (HTTP 400)"}]}),
    "preflight-env-var-at-import": rec("preflight", "preflight-failed", evidence={"checks": [
        {"name": "handler imports", "passed": False, "detail": "KeyError: 'DB_HOST'"}]}),
    "preflight-size": rec("preflight", "preflight-failed", evidence={"checks": [
        {"name": "size", "passed": False, "detail": "too big", "ref": "artifact-too-large"}]}),
    "preflight-packaging": rec("preflight", "preflight-failed", evidence={"checks": [
        {"name": "imports resolve", "passed": False, "detail": "imported but not packaged: yaml (app.py:3: import yaml); add it to x"}]}),
    "test-environment-network": rec("test", "test-env-install-failed", evidence={"output_tail": "Connection refused"}),
    "test-environment-dependency": rec("test", "test-env-install-failed",
                                       evidence={"output_tail": "ERROR: No matching distribution found for PyYAML==99.0.0"}),
    "test-environment-setup": rec("test", "test-env-install-failed", evidence={"output_tail": "ERROR: Invalid requirement: 'pytest>>1'"}),
    "tests-missing-dependency": rec("test", "tests-failed", evidence={"output_tail": "E   ModuleNotFoundError: No module named 'yaml'",
                                                                      "repo_modules": ["app", "src", "tests"]}),
    "tests-failed": rec("test", "tests-failed", evidence={"failed_tests": ["tests/test_app.py::test_x"], "output_tail": "assert 1 == 2"}),
    "build-too-large": rec("build", "artifact-too-large"),
    "build-network": rec("build", "dependency-install-failed", evidence={"output_tail": "Max retries exceeded\nNo matching distribution"}),
    "build-no-distribution": rec("build", "dependency-install-failed", evidence={"output_tail": "No matching distribution found for numpy==9"}),
    "build-inputs": rec("build", "requirements-missing"),
    "build-failed": rec("build", "build-failed", evidence={"output_tail": "error: invalid syntax"}),
    "spec-refused": rec("spec", "invalid-spec", evidence={"errors": ["artifact.handlr: unknown key"]}),
    "clone-request": rec("clone", "unknown-ref"),
    "clone-unreachable": rec("clone", "repo-unreachable"),
    "tampered": rec("deploy", "artifact-tampered"),
    "drift": rec("deploy", "drift", evidence={"drift": {"serving": "5", "ledger_version": "4"}}),
    "aws-size": rec("deploy", "deploy-failed", evidence={"aws_error_code": "RequestEntityTooLargeException"}),
    "container-health": rec("deploy", "health-check-failed", evidence={"last": "HTTP 500"}),
    "slow-deploy": rec("deploy", "lambda-update-timeout"),
    "sandbox-unavailable": rec("sandbox", "sandbox-unavailable"),
    "credentials": rec("credentials", "credentials-missing"),
    "execution-role": rec("deploy", "deploy-failed", message="could not create: InvalidParameterValueException: The role defined cannot be assumed",
                          evidence={"aws_error_code": "InvalidParameterValueException"}),
    "aws-transient": rec("deploy", "deploy-failed", evidence={"aws_error_code": "TooManyRequestsException"}, transient=True),
    "target-settings": rec("deploy", "listen-port-in-use"),
    "host-unavailable": rec("deploy", "engine-unavailable"),
    "container-start": rec("deploy", "container-start-failed"),
    "changed-outside": rec("deploy", "code-sha-mismatch"),
    "promotion-request": rec("release", "nothing-to-promote"),
    "owned-elsewhere": rec("deploy", "function-owned-elsewhere"),
    "aws-refused": rec("deploy", "deploy-failed", message="could not create: InvalidParameterValueException: bad memory",
                       evidence={"aws_error_code": "InvalidParameterValueException"}),
    "lifecycle-hook": rec("hook", "hook-failed", evidence={"phase": "after_traffic", "hook": {"hook": "webhook x", "detail": "HTTP 503"}}),
    "canary-alarm": rec("canary", "alarm-fired", evidence={"alarms": {"newly_alarming": ["api-5xx"]}, "percent": 10}),
    "canary-inconclusive": rec("canary", "canary-inconclusive", evidence={"verdict": {"verdict": "INCONCLUSIVE", "metrics": []}, "percent": 10}),
    "canary-spec-only": rec("canary", "canary-failed", evidence=VERDICT_FAIL, diff=spec_diff("-  memory: 512", "+  memory: 128")),
    "canary-worse": rec("canary", "canary-failed", evidence=VERDICT_FAIL),
    "verify-import-error": rec("verify", "verification-failed", evidence=smoke({"errorType": "Runtime.ImportModuleError",
                                                                                "errorMessage": "No module named 'yaml'"})),
    "verify-out-of-memory": rec("verify", "verification-failed", evidence=smoke({"errorType": "Runtime.ExitError",
                                                                                 "errorMessage": "signal: killed"})),
    "verify-missing-env-var": rec("verify", "verification-failed", evidence=smoke({"errorType": "KeyError", "errorMessage": "'PAYMENTS_URL'"})),
    "verify-own-credentials": rec("verify", "verification-failed", evidence=smoke(None, "AWS refused the credentials: x")),
    "verify-execution-role-denied": rec("verify", "verification-failed", evidence=smoke({"errorType": "ClientError",
                                                                                         "errorMessage": "AccessDenied: not authorized to perform s3:GetObject"})),
    "verify-unreachable": rec("verify", "verification-failed", evidence=smoke(None, "could not reach AWS to invoke")),
    "verify-timeout-lowered": rec("verify", "verification-failed", evidence=smoke({"errorMessage": "abc Task timed out after 1.00 seconds"}),
                                  diff=spec_diff("-  timeout: 30", "+  timeout: 1")),
    "verify-spec-only": rec("verify", "verification-failed", evidence=smoke({"statusCode": 500}, "statusCode: expected 200, got 500"),
                            diff=spec_diff("-    environment: {MODE: a}", "+    environment: {MODE: b}")),
    "verify-wrong-answer": rec("verify", "verification-failed", evidence=smoke({"statusCode": 500}, "statusCode: expected 200, got 500")),
    "orchestration-unavailable": rec("orchestration", "error", message="HTTP 503 Service Unavailable"),
    "rollback-failed": rec("rollback", "rollback-failed"),
    "no-rule": rec("somewhere-new", "error"),
}


def test_every_rule_has_a_name_a_one_line_reason_and_a_case_here():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert all(r.reason and "\n" not in r.reason and len(r.reason) <= 140 for r in RULES)
    assert list(CASES) == names  # one record per rule, in table order
    assert RULES[-1].name == "no-rule"  # the table always decides


@pytest.mark.parametrize("name", [r.name for r in RULES])
def test_each_rule_decides_its_own_case(name):
    *_, decided_by = classify(CASES[name], _aws_code)
    assert decided_by.name == name


def test_every_reference_a_rule_names_is_declared_and_every_declared_one_is_classified_or_left_on_purpose():
    named = set().union(*(r.refs for r in RULES))
    assert named - set(REFERENCES) == set()
    stages = set().union(*(r.stages for r in RULES))
    uncovered = {name for name, declared in REFERENCES.items()
                 if name not in named and name not in LEFT_UNCLASSIFIED and not any(cls.stage in stages for cls in declared.raised_as)}
    assert uncovered == set()
    assert set(LEFT_UNCLASSIFIED) <= set(REFERENCES)


def test_a_spec_only_change_is_configuration_naming_the_field():
    d = diagnose(CASES["verify-timeout-lowered"])
    assert d.classification == "configuration" and "timeout" in d.reasoning[0] and "rule:" in d.text()
    d = diagnose(CASES["canary-spec-only"])
    assert d.classification == "configuration" and "(memory)" in d.reasoning[0]
    # the same failures with code changed too stay with the code
    with_code = spec_diff("-  memory: 512", "+  memory: 128", files=("M\tslipway.yaml", "M\tsrc/app.py"))
    assert diagnose(rec("canary", "canary-failed", evidence=VERDICT_FAIL, diff=with_code)).classification == "code-defect"


def test_a_dependency_change_is_named_when_an_import_fails():
    diff = spec_diff(files=("M\trequirements.txt",), deps=["--- a/requirements.txt", "+++ b/requirements.txt", "-PyYAML==6.0.2"])
    record = rec("test", "tests-failed", evidence={"output_tail": "ModuleNotFoundError: No module named 'yaml'", "repo_modules": ["app"]}, diff=diff)
    d = diagnose(record)
    assert d.classification == "incompatible-artifact" and any("-PyYAML==6.0.2" in r for r in d.reasoning)


def test_a_missing_module_that_is_the_repositorys_own_stays_a_test_failure():
    record = rec("test", "tests-failed", evidence={"output_tail": "ModuleNotFoundError: No module named 'app'", "repo_modules": ["app"]})
    assert diagnose(record).classification == "code-defect"


def test_a_transient_failure_says_re_run():
    assert diagnose(CASES["aws-transient"]).next_action.startswith("re-run the release")


def test_a_function_that_lost_its_tag_is_drift_when_the_ledger_says_slipway_made_it():
    made_by_us = rec("deploy", "function-owned-elsewhere", ledger=[{"kind": "deploy-started"}])
    assert diagnose(made_by_us).classification == "drift"
    assert diagnose(CASES["owned-elsewhere"]).classification == "configuration"


def test_the_docs_list_every_rule_in_table_order():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "diagnosis.md").read_text()
    positions = [doc.find(f"| `{r.name}` |") for r in RULES]
    assert -1 not in positions and positions == sorted(positions)


def test_a_missing_distribution_in_a_test_requirement_is_configuration_and_in_the_artifacts_is_packaging():
    tail = "ERROR: No matching distribution found for pytest-mocks==99.0.0"
    dev = spec_diff(files=("M\trequirements-dev.txt",), deps=["--- a/requirements-dev.txt", "+++ b/requirements-dev.txt", "+pytest-mocks==99.0.0"])
    assert diagnose(rec("test", "test-env-install-failed", evidence={"output_tail": tail}, diff=dev)).classification == "configuration"
    runtime = spec_diff(files=("M\trequirements.txt",), deps=["--- a/requirements.txt", "+++ b/requirements.txt", "+pytest-mocks==99.0.0"])
    d = diagnose(rec("test", "test-env-install-failed", evidence={"output_tail": tail}, diff=runtime))
    assert d.classification == "incompatible-artifact" and "pytest-mocks==99.0.0 to install (requirements.txt)" in d.reasoning[0]

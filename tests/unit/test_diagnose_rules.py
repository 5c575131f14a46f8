"""The classification rules and the diff, on failure records shaped as the release flow writes them (the flow tests in
tests/flows/test_diagnose.py produce the real ones from broken repositories)."""

from __future__ import annotations

import subprocess

import pytest

from slipway.record.diagnose import FailureRecord, ReleaseDiff, compute_diff, diagnose, env_key_changes, redacted_spec, spec_env_vars


def record(stage: str, *, ref: str = "x", message: str = "it failed", evidence: dict | None = None, transient: bool = False,
           **kw) -> FailureRecord:
    error = {"stage": stage, "ref": ref, "message": message, "target": None, "hint": None, "evidence": evidence or {}, "transient": transient}
    return FailureRecord(app="hello", environment=kw.pop("environment", "dev"), stage=stage, error=error, **kw)


def smoke(response: dict | None, detail: str = "FunctionError Unhandled") -> dict:
    return {"checks": [{"name": "health", "passed": False, "detail": detail, "response": response}]}


@pytest.mark.parametrize("rec, expected", [
    (record("deploy", ref="deploy-failed", message="could not publish version: TooManyRequestsException: Rate exceeded",
            evidence={"aws_error_code": "TooManyRequestsException"}, transient=True), "network-or-aws"),
    (record("deploy", ref="deploy-failed", message="could not update: ServiceException: boom", evidence={"aws_error_code": "ServiceException"}),
     "network-or-aws"),
    (record("deploy", ref="aws-unreachable", message="could not reach AWS to update function", transient=True), "network-or-aws"),
    (record("deploy", message="could not create: RequestEntityTooLargeException: too big",
            evidence={"aws_error_code": "RequestEntityTooLargeException"}), "too-large-or-slow"),
    (record("deploy", ref="lambda-update-timeout", message="Lambda update did not finish in time"), "too-large-or-slow"),
    (record("build", ref="artifact-too-large", message="zip is 60 MB"), "too-large-or-slow"),
    (record("deploy", message="could not create: AccessDeniedException: no lambda:CreateFunction",
            evidence={"aws_error_code": "AccessDeniedException"}), "configuration"),
    (record("deploy", message="could not create: InvalidParameterValueException: The role defined for the function cannot be assumed by Lambda.",
            evidence={"aws_error_code": "InvalidParameterValueException"}), "configuration"),
    (record("spec", ref="invalid-spec", message="slipway.yaml: environments: field required", environment=None), "configuration"),
    (record("clone", ref="unknown-ref", message="unknown ref 'v9'", environment=None), "configuration"),
    (record("clone", ref="repo-unreachable", message="could not clone", environment=None), "network-or-aws"),
    (record("clone", ref="host-not-found", message="could not clone: its host name does not resolve", environment=None), "configuration"),
    (record("verify", evidence=smoke({"errorType": "Runtime.ImportModuleError", "errorMessage": "Unable to import module 'app': No module named 'requests'"})),
     "incompatible-artifact"),
    (record("verify", evidence=smoke({"errorType": "ClientError", "errorMessage": "An error occurred (AccessDenied) when calling GetObject"})),
     "configuration"),
    (record("verify", evidence=smoke({"errorType": "KeyError", "errorMessage": "'GREETING'"})), "configuration"),
    (record("verify", evidence=smoke({"errorType": "KeyError", "errorMessage": "'user_id'"})), "code-defect"),  # a dict key, not config
    (record("verify", evidence=smoke({"statusCode": 500}, detail="statusCode: expected 200, got 500")), "code-defect"),
    (record("verify", evidence=smoke(None, detail="could not reach AWS to invoke hello-dev:live")), "network-or-aws"),
    (record("canary", ref="canary-failed", evidence={"percent": 20, "verdict": {"verdict": "FAIL", "reason": "error rate", "metrics": []}}),
     "code-defect"),
    (record("canary", ref="canary-inconclusive", evidence={"percent": 20, "verdict": {"verdict": "INCONCLUSIVE", "reason": "12 < 50 requests",
                                                                                      "metrics": []}}), "configuration"),
    (record("canary", ref="alarm-fired", evidence={"percent": 10, "alarms": {"newly_alarming": [{"name": "p99", "was": "OK", "now": "ALARM"}]}}),
     "code-defect"),
    (record("deploy", ref="health-check-failed", message="http://127.0.0.1:20003/health not healthy after 20s (last: HTTP 503)",
            evidence={"url": "http://127.0.0.1:20003/health", "last": "HTTP 503"}), "code-defect"),
    (record("verify", evidence=smoke({"statusCode": 503}, detail="$.statusCode: expected 200, got 503")), "code-defect"),  # the app's 503
    (record("verify", evidence=smoke({"errorType": "Runtime.ExitError", "errorMessage": "RequestId: x Error: Runtime exited with error: signal: killed"})),
     "configuration"),  # out of memory
    (record("verify", evidence=smoke(None, detail="AWS refused the credentials to invoke hello-dev:live (AccessDeniedException)")),
     "configuration"),
    (record("test", ref="test-env-install-failed", message="could not install the test requirements",
            evidence={"output_tail": "ERROR: Could not find a version\nConnection refused"}), "network-or-aws"),
    (record("test", ref="test-requirements-missing", message="requirements-dev.txt not found"), "configuration"),
    (record("preflight", ref="credentials-invalid", evidence={"checks": [{"name": "prod: target", "passed": False, "detail": "x",
                                                                          "ref": "credentials-invalid"}]}), "configuration"),
    (record("deploy", ref="drift", message="live state changed outside Slipway", evidence={"drift": {"serving": "7"}}), "drift"),
    (record("preflight", ref="role-missing", evidence={"checks": [{"name": "dev: target", "passed": False, "detail": "role", "ref": "role-missing"}]}),
     "configuration"),
    (record("preflight", ref="artifact-too-large", evidence={"checks": [{"name": "size limits", "passed": False, "detail": "big",
                                                                         "ref": "artifact-too-large"}]}), "too-large-or-slow"),
    (record("preflight", ref="incompatible-wheel", evidence={"checks": [{"name": "platform compatible", "passed": False, "detail": "cp312",
                                                                         "ref": "incompatible-wheel"}]}), "incompatible-artifact"),
])
def test_each_failure_is_classified(rec, expected):
    d = diagnose(rec)
    assert d.classification == expected, d.reasoning
    assert d.reasoning and d.next_action


def test_the_environment_variable_rule_names_a_variable_removed_since_the_last_verified_release():
    diff = ReleaseDiff(environment="dev", baseline_release="r1", env_keys={"added": [], "removed": ["GREETING"], "changed": []})
    d = diagnose(record("verify", evidence=smoke({"errorType": "KeyError", "errorMessage": "'GREETING'"}), diff=diff))
    assert "it was removed since the last verified release" in d.reasoning[0]
    d = diagnose(record("verify", evidence=smoke({"errorType": "KeyError", "errorMessage": "'GREETING'"}), env_keys=["GREETING"]))
    assert d.classification == "code-defect"  # it is set: the KeyError is the code's


def test_a_failed_rollback_comes_first_in_the_next_action():
    d = diagnose(record("verify", evidence=smoke({"statusCode": 500}), outcome_status="rollback-failed"))
    assert d.next_action.startswith("roll back by hand first: `slipway rollback hello dev`")


def test_environment_values_never_leave_the_spec_diff():
    spec = "app: a\nartifact:\n  type: lambda-zip\n  environment:\n    TOKEN_URL: https://secret.example\nenvironments:\n" \
           "  - name: dev\n    environment:\n      DB: prod-db-password\n"
    text = redacted_spec(spec)
    assert "secret.example" not in text and "prod-db-password" not in text and "TOKEN_URL: '***'" in text and "DB: '***'" in text
    assert spec_env_vars(spec, "dev") == {"TOKEN_URL": "https://secret.example", "DB": "prod-db-password"}
    assert env_key_changes({"A": "1", "B": "2"}, {"B": "3", "C": "4"}) == {"added": ["C"], "removed": ["A"], "changed": ["B"]}


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_the_diff_of_a_two_release_history(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "slipway.yaml").write_text("app: a\nartifact:\n  type: lambda-zip\n  environment: {A: '1'}\nenvironments: [{name: dev}]\n")
    (repo / "requirements.txt").write_text("requests==2.31.0\n")
    (repo / "app.py").write_text("x = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "requirements.txt").write_text("requests==2.32.3\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "bump requests")
    (repo / "slipway.yaml").write_text("app: a\nartifact:\n  type: lambda-zip\n  environment: {A: '2', B: '1'}\nenvironments: [{name: dev}]\n")
    (repo / "app.py").write_text("x = 2\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "use B")
    new = _git(repo, "rev-parse", "HEAD")
    diff = compute_diff(repo, environment="dev", new_commit=new, baseline_release="r1", baseline_commit=base, baseline_size=1000, new_size=1500)
    assert [c.split(" ", 1)[1] for c in diff.commits] == ["use B", "bump requests"]
    assert diff.files == ["M app.py", "M requirements.txt", "M slipway.yaml"]
    assert "-requests==2.31.0" in diff.dependencies and "+requests==2.32.3" in diff.dependencies
    assert diff.env_keys == {"added": ["B"], "removed": [], "changed": ["A"]}
    lines = "\n".join(diff.lines())
    assert "artifact size: 1,000 → 1,500 bytes (+500, +50.0%)" in lines and "'2'" not in lines
    gone = compute_diff(repo, environment="dev", new_commit=new, baseline_release="r0", baseline_commit="0" * 40)
    assert "not in the repository's history" in gone.note


def test_a_lambda_error_response_is_one_line_with_its_innermost_frame():
    response = {"errorType": "KeyError", "errorMessage": "'GREETING'", "requestId": "r-1",
                "stackTrace": ['  File "/var/task/lib.py", line 3, in helper\n    x = 1\n',
                               '  File "/tmp/code/abc/app.py", line 15, in handler\n    greeting = os.environ["GREETING"]\n'
                               '               ~~~~~~~~~~^^^^^^^^^^^^\n',  # Python 3.11's markers: dropped
                               '  File "<frozen os>", line 679, in __getitem__\n']}
    d = diagnose(record("verify", evidence=smoke(response)))
    assert d.evidence[1] == """  response: KeyError: 'GREETING' at app.py:15 in handler: greeting = os.environ["GREETING"]"""
    assert "r-1" not in "\n".join(d.evidence)


def test_a_change_around_the_live_version_is_drift_healed_not_rolled_back():
    """The live version still serves (a hand-made routing weight, $LATEST changed): the advice is to undo the change,
    not to roll back to the release that is already live."""
    around = record("deploy", ref="drift", message="live state changed outside Slipway", evidence={"drift": {
        "serving": "2", "ledger_release": "r2", "ledger_version": "2", "detail": "fn:live: alias live also sends 10% to version 1"}})
    d = diagnose(around)
    assert d.classification == "drift"
    assert "10% to version 1" in " ".join(d.reasoning) and "heal=true" in d.next_action and "rollback" not in d.next_action
    moved = record("deploy", ref="drift", message="live state changed outside Slipway", evidence={"drift": {
        "serving": "7", "ledger_release": "r2", "ledger_version": "2", "detail": "fn:live serves 7"}})
    assert "slipway rollback" in diagnose(moved).next_action and "--to r2" in diagnose(moved).next_action


@pytest.mark.parametrize("stage", ["build", "test"])
def test_an_unreachable_package_index_is_a_network_failure_to_re_run_not_an_incompatible_artifact(stage):
    """pip that cannot reach its index retries, then also says "Could not find a version": the network's own words (or
    the error's transient flag) decide first."""
    tail = ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by "
            "'NewConnectionError(\\'<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: "
            "[Errno 111] Connection refused\\')': /simple/requests/\n"
            "ERROR: Could not find a version that satisfies the requirement requests==2.32.3 (from versions: none)\n"
            "ERROR: No matching distribution found for requests==2.32.3")
    ref = "build-failed" if stage == "build" else "test-env-failed"
    d = diagnose(record(stage, ref=ref, message="pip install failed", evidence={"output_tail": tail}))
    assert d.classification == "network-or-aws", d.reasoning
    flagged = diagnose(record(stage, ref=ref, message="pip install failed", transient=True, evidence={"output_tail": "ERROR: boom"}))
    assert flagged.classification == "network-or-aws"


def test_a_handler_that_needs_an_unset_variable_at_import_is_configuration_not_packaging():
    failed = {"checks": [{"name": "handler imports", "passed": False, "ref": None,
                          "detail": "app.handler does not import from the built zip: KeyError: 'TABLE_NAME'"}]}
    d = diagnose(record("preflight", ref="preflight-failed", evidence=failed))
    assert d.classification == "configuration" and "TABLE_NAME" in " ".join(d.reasoning)
    unpackaged = {"checks": [{"name": "handler imports", "passed": False, "ref": None,
                              "detail": "app.handler does not import from the built zip: ModuleNotFoundError: No module named 'requests'"}]}
    assert diagnose(record("preflight", ref="preflight-failed", evidence=unpackaged)).classification == "incompatible-artifact"

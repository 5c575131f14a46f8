"""`slipway diagnose`: one failed release per classification, each from a real broken app repository (nothing mocked:
the release runs against the session's local stack and fails the way it would for a user), then the diagnose flow on
the record it left. Also: the diff against the last verified release, feature flags delivered, recorded and diffed."""

from __future__ import annotations

import json
import os
import uuid

import pytest


HEALTH_500 = '''"""v2: a refactor that divides by the number of greetings configured (zero)."""

import json

VERSION = "2"
GREETINGS = []


def handler(event, context):
    event = event or {}
    ratio = 1 / len(GREETINGS)  # the bug: ZeroDivisionError on every call
    if event.get("path") == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION, "ratio": ratio})}
    return {"statusCode": 200, "body": json.dumps({"message": "hello", "version": VERSION})}
'''
TESTS_THAT_MISS_IT = '''import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import app


def test_version():
    assert app.VERSION == "2"
'''


def _aws(prefect_api, service: str):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client(service, endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


def _release(repo, ref: str, **kw):
    from flows.release import release

    return release(repo_url=repo.url, ref=ref, **kw, return_state=True)


def _diagnose(app: str, env: str | None = None) -> dict:
    from flows.diagnose import diagnose

    return diagnose(app=app, environment=env)


def _nothing_deployed(prefect_api, app: str) -> None:
    lam = _aws(prefect_api, "lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{app}-dev")


def test_a_module_imported_but_not_packaged_is_an_incompatible_artifact(prefect_api, app_repo):
    repo = app_repo()
    app = (repo.path / "src/app.py").read_text().replace("import json\n", "import json\n\nimport pluggy  # noqa: F401\n", 1)
    repo.write("src/app.py", app).commit("use pluggy", tag="p1")
    assert _release(repo, "p1").is_failed()
    _nothing_deployed(prefect_api, repo.app)
    d = _diagnose(repo.app)
    assert d["classification"] == "incompatible-artifact" and d["stage"] == "preflight" and d["check"] == "imports resolve"
    assert any("imported but not packaged: pluggy (app.py:5: import pluggy)" in line for line in d["evidence"])
    assert "fix the packaging" in d["next_action"]


def test_a_handler_that_cannot_import_is_caught_by_preflight_before_any_deploy(prefect_api, app_repo):
    repo = app_repo()
    # the module reads a file from outside the packaged source directory at import: present in the repository (the
    # tests pass), absent from the zip
    app = (repo.path / "src/app.py").read_text().replace(
        'VERSION = "1"', 'VERSION = "1"\nTEMPLATE = (__import__("pathlib").Path(__file__).parent.parent / "templates" / "greeting.txt").read_text()')
    repo.write("src/app.py", app).write("templates/greeting.txt", "hello, {name}").commit("greeting template", tag="p2")
    assert _release(repo, "p2").is_failed()
    _nothing_deployed(prefect_api, repo.app)
    d = _diagnose(repo.app)
    assert d["classification"] == "incompatible-artifact" and d["check"] == "handler imports"
    assert any("FileNotFoundError" in line and "greeting.txt" in line for line in d["evidence"])


def test_failing_tests_are_a_code_defect_and_nothing_is_built(prefect_api, app_repo):
    repo = app_repo()
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('"hello, {name}"', '"helo, {name}"')).commit("typo", tag="t1")
    assert _release(repo, "t1").is_failed()
    d = _diagnose(repo.app)
    assert d["classification"] == "code-defect" and d["stage"] == "test"
    assert any("failed test:" in line and "test_greets_by_name" in line for line in d["evidence"])
    assert d["release_id"] is None  # not built


def test_a_smoke_check_failing_on_a_correctly_packaged_release_is_a_code_defect(prefect_api, app_repo):
    repo = app_repo()
    assert _release(repo, "v1", only=["dev"]).is_completed()
    repo.write("src/app.py", HEALTH_500).write("tests/test_app.py", TESTS_THAT_MISS_IT).commit("v2: configurable greetings", tag="v2")
    assert _release(repo, "v2", only=["dev"]).is_failed()
    d = _diagnose(repo.app, "dev")
    assert d["classification"] == "code-defect" and d["stage"] == "verify" and d["check"] == "health"
    assert any("ZeroDivisionError" in line for line in d["evidence"])
    assert "rolled back" in (d["outcome"] or "") and "no rollback needed" in d["next_action"]


def test_a_missing_environment_variable_is_configuration_with_the_diff_against_the_last_verified_release(prefect_api, app_repo):
    from slipway.record.flags import set_flag

    repo = app_repo()
    ssm = _aws(prefect_api, "ssm")
    set_flag(ssm, repo.app, "dev", "NEW_GREETING", "on", actor="test")
    assert _release(repo, "v1", only=["dev"]).is_completed()
    # the flag reached the function as configuration and the ledger recorded it
    conf = _aws(prefect_api, "lambda").get_function_configuration(FunctionName=f"{repo.app}-dev", Qualifier="live")
    assert conf["Environment"]["Variables"]["SLIPWAY_FLAG_NEW_GREETING"] == "on"
    from tasks.wiring import open_store

    started = [e for e in open_store("default")[1].history(repo.app, "dev") if e.kind == "deploy-started"]
    assert started[0].detail["flags"] == {"NEW_GREETING": {"version": 1, "value": "on"}}
    assert started[0].message.endswith("; flags NEW_GREETING=on (v1)")  # what `slipway history` shows

    set_flag(ssm, repo.app, "dev", "NEW_GREETING", "off", actor="test")
    spec = (repo.path / "slipway.yaml").read_text().replace("  runtime: python3.11\n", "  runtime: python3.11\n  environment:\n    LOG_LEVEL: debug\n")
    repo.break_health_check().write("slipway.yaml", spec).write("requirements-dev.txt", "pytest>=8\n")
    repo.commit("v2: configurable greeting", tag="v2")
    assert _release(repo, "v2", only=["dev"]).is_failed()

    d = _diagnose(repo.app, "dev")
    assert d["classification"] == "configuration" and d["check"] == "health"
    assert any("KeyError" in line and "GREETING" in line for line in d["evidence"])
    assert any("environment variable GREETING" in r for r in d["reasoning"])
    diff = d["diff"]
    assert diff["baseline_release"] and diff["commits"][0].endswith(" v2: configurable greeting") and len(diff["commits"]) == 1
    assert "M src/app.py" in diff["files"] and "A requirements-dev.txt" in diff["files"]
    assert "+pytest>=8" in diff["dependencies"]
    assert "+  environment:" in diff["spec"] and "+    LOG_LEVEL: '***'" in diff["spec"]
    assert diff["env_keys"] == {"added": ["LOG_LEVEL"], "removed": [], "changed": []}  # names only
    assert diff["flags"] == ["~ NEW_GREETING: on → off (v1 → v2)"]
    assert diff["artifact_size"]["baseline"] and diff["artifact_size"]["new"]
    text = d["text"]
    assert "cause:       CONFIGURATION" in text and "v2: configurable greeting" in text and "debug" not in text  # no values


def test_a_spec_that_no_longer_parses_is_configuration_with_the_diff_against_the_last_verified_release(prefect_api, app_repo):
    """A failure before the spec is read (a typo'd key) knows no environment yet: the baseline is the environment whose
    live release was verified last, and the diff names the spec change that broke it."""
    repo = app_repo()
    first = _release(repo, "v1", only=["dev"])
    assert first.is_completed()
    spec = (repo.path / "slipway.yaml").read_text().replace("  handler: app.handler\n", "  handlr: app.handler\n")
    repo.write("slipway.yaml", spec).commit("rename the handler key", tag="v2")
    assert _release(repo, "v2", only=["dev"]).is_failed()

    d = _diagnose(repo.app)
    assert d["classification"] == "configuration" and d["stage"] == "spec"
    diff = d["diff"]
    assert diff["baseline_release"] == first.result()["release_id"] and diff["environment"] == "dev"
    assert diff["commits"][0].endswith(" rename the handler key") and "M slipway.yaml" in diff["files"]
    assert "+  handlr: app.handler" in diff["spec"] and "-  handler: app.handler" in diff["spec"]


def test_an_unreachable_aws_endpoint_is_network_or_aws(prefect_api, app_repo):
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import LambdaTargetBlock

    name = f"unreachable-{uuid.uuid4().hex[:8]}"
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url="http://127.0.0.1:9"))
    LambdaTargetBlock(credentials=creds, role_arn=prefect_api["role_arn"]).save(name, overwrite=True)
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text().replace("  - name: dev\n", f"  - name: dev\n    target: {name}\n")
    repo.write("slipway.yaml", spec).commit("dev in another account", tag="n1")
    assert _release(repo, "n1", only=["dev"]).is_failed()
    d = _diagnose(repo.app)
    assert d["classification"] == "network-or-aws" and d["check"] == "dev: credentials usable"
    assert any("could not reach AWS" in line for line in d["evidence"])
    assert d["next_action"].startswith("re-run the release")


def test_an_artifact_over_the_budget_is_too_large(prefect_api, app_repo):
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text().replace("  runtime: python3.11\n", "  runtime: python3.11\n  max_unzipped_mb: 1\n")
    repo.write("slipway.yaml", spec)
    (repo.path / "src" / "model.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    repo.commit("ship the model", tag="big")
    assert _release(repo, "big").is_failed()
    _nothing_deployed(prefect_api, repo.app)
    d = _diagnose(repo.app)
    assert d["classification"] == "too-large-or-slow" and d["check"] == "size limits"
    assert any("model.bin" in line for line in d["evidence"])  # the largest entries are named


def test_a_version_published_outside_slipway_is_drift_and_nothing_is_deployed_over_it(prefect_api, app_repo):
    repo = app_repo()
    assert _release(repo, "v1", only=["dev"]).is_completed()
    lam = _aws(prefect_api, "lambda")
    function = f"{repo.app}-dev"
    lam.update_function_configuration(FunctionName=function, Description="hotfix by hand")
    lam.get_waiter("function_updated_v2").wait(FunctionName=function, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    by_hand = lam.publish_version(FunctionName=function)["Version"]
    lam.update_alias(FunctionName=function, Name="live", FunctionVersion=by_hand)
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="v2")
    assert _release(repo, "v2", only=["dev"]).is_failed()
    assert lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"] == by_hand  # nothing deployed over it
    d = _diagnose(repo.app, "dev")
    assert d["classification"] == "drift" and d["error_ref"] == "drift"
    assert any(f"serves {by_hand}" in line for line in d["evidence"])
    assert d["next_action"].startswith(f"put {repo.app}/dev back on its verified release with `slipway rollback {repo.app} dev --to ")


def test_the_cli_prints_the_diagnosis_and_json(prefect_api, app_repo):
    from test_cli import slipway

    repo = app_repo()
    repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('"hello, {name}"', '"helo, {name}"')).commit("typo", tag="t1")
    assert _release(repo, "t1").is_failed()
    env = {"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    proc = slipway("diagnose", repo.app, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "cause:       CODE DEFECT" in proc.stdout and "next:" in proc.stdout
    data = json.loads(slipway("diagnose", repo.app, "--json", env=env).stdout)
    assert data["classification"] == "code-defect"
    proc = slipway("diagnose", f"never-{uuid.uuid4().hex[:6]}", env=env)
    assert proc.returncode == 2 and "no failed release of" in proc.stderr


def test_the_release_report_links_the_diagnosis(prefect_api, app_repo):
    from test_progressive_flow import latest_artifact

    repo = app_repo()
    assert _release(repo, "v1", only=["dev"]).is_completed()
    repo.break_health_check().commit("v2", tag="v2")
    state = _release(repo, "v2", only=["dev"])
    assert state.is_failed()
    report = latest_artifact(f"release-{repo.app}")
    assert "## Diagnosis" in report and "**Cause: configuration**" in report and "/artifacts/key/diagnosis-" in report
    assert "Why release" in latest_artifact(f"diagnosis-{repo.app}")
    assert state.result(raise_on_failure=False).evidence["diagnosis"]["classification"] == "configuration"


def test_a_flag_change_redeploys_the_same_artifact_and_an_unchanged_re_release_only_re_verifies(prefect_api, app_repo):
    from slipway.record.flags import set_flag
    from tasks.wiring import open_store

    repo = app_repo()
    lam = _aws(prefect_api, "lambda")
    function = f"{repo.app}-dev"
    assert _release(repo, "v1", only=["dev"]).is_completed()
    set_flag(_aws(prefect_api, "ssm"), repo.app, "dev", "BETA", "on", actor="test")
    assert _release(repo, "v1", only=["dev"]).is_completed()
    live = lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"]
    conf = lam.get_function_configuration(FunctionName=function, Qualifier=live)
    assert live == "2" and conf["Environment"]["Variables"]["SLIPWAY_FLAG_BETA"] == "on"
    assert _release(repo, "v1", only=["dev"]).is_completed()  # flags unchanged: re-verified, no new version
    assert lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"] == "2"
    kinds = [e.kind for e in open_store("default")[1].history(repo.app, "dev")]
    # deploy, flag deploy, then a re-verification in place: nothing deployed, so no deploy-started
    assert kinds.count("deploy-started") == 2 and kinds.count("verified") == 3


def test_flags_through_the_cli(prefect_api):
    from test_cli import slipway

    app = f"flagcli-{uuid.uuid4().hex[:6]}"
    env = {"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    proc = slipway("flag", "set", app, "dev", "NEW_CHECKOUT", "on", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "flag NEW_CHECKOUT=on (version 1)" in proc.stdout and "SLIPWAY_FLAG_NEW_CHECKOUT" in proc.stdout
    assert slipway("flag", "set", app, "dev", "NEW_CHECKOUT", "off", env=env).returncode == 0
    listed = json.loads(slipway("flag", "list", app, "dev", "--json", env=env).stdout)
    assert listed["NEW_CHECKOUT"]["value"] == "off" and listed["NEW_CHECKOUT"]["version"] == 2
    history = json.loads(slipway("flag", "history", app, "dev", "NEW_CHECKOUT", "--json", env=env).stdout)
    assert [(v["version"], v["value"]) for v in history] == [(1, "on"), (2, "off")]
    bad = slipway("flag", "set", app, "dev", "new-checkout", "on", env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert bad.returncode == 2 and "invalid flag name 'new-checkout'" in bad.stderr  # refused before Prefect or AWS
    assert slipway("flag", "delete", app, "dev", "NEW_CHECKOUT", env=env).returncode == 0
    assert "no flags" in slipway("flag", "list", app, "dev", env=env).stdout


def test_flag_set_refuses_an_environment_the_apps_spec_does_not_declare(prefect_api, app_repo):
    from test_cli import slipway

    repo = app_repo()
    assert _release(repo, "v1", only=["dev"]).is_completed()
    env = {"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}

    typo = slipway("flag", "set", repo.app, "stagin", "BETA", "on", env=env)

    assert typo.returncode == 2
    assert typo.stderr.strip() == f"error: {repo.app} has no environment 'stagin': its slipway.yaml declares dev, staging, prod"
    assert slipway("flag", "list", repo.app, "stagin", env=env).stdout.strip().endswith("no flags")  # nothing was written
    declared = slipway("flag", "set", repo.app, "staging", "BETA", "on", env=env)  # declared, not released to yet
    assert declared.returncode == 0, declared.stderr


def test_a_failing_flag_redeploy_goes_back_to_the_live_version_and_the_diagnosis_names_the_flag(prefect_api, app_repo):
    from slipway.record.flags import set_flag
    from tasks.wiring import open_store

    repo = app_repo()
    lam = _aws(prefect_api, "lambda")
    function = f"{repo.app}-dev"
    # v1 and v2 verified; v2 breaks when the flag BROKEN is on (the flag reaches it as SLIPWAY_FLAG_BROKEN)
    assert _release(repo, "v1", only=["dev"]).is_completed()
    app = (repo.path / "src/app.py").read_text().replace("import json\n", "import json\nimport os\n", 1).replace(
        'VERSION = "1"', 'VERSION = "2"').replace(
        '    event = event or {}\n', '    event = event or {}\n    if os.environ.get("SLIPWAY_FLAG_BROKEN") == "on":\n        raise RuntimeError("flag path")\n')
    repo.write("src/app.py", app).commit("v2 behind a flag", tag="v2")
    assert _release(repo, "v2", only=["dev"]).is_completed()
    live_before = lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"]
    v2_release = open_store("default")[1].head(repo.app, "dev").live.release_id
    set_flag(_aws(prefect_api, "ssm"), repo.app, "dev", "BROKEN", "on", actor="test")
    assert _release(repo, "v2", only=["dev"]).is_failed()  # same commit, new flags: a new version, which fails
    assert lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"] == live_before  # back on v2's version, not v1
    head = open_store("default")[1].head(repo.app, "dev")
    assert head.live.release_id == v2_release and head.live.version == live_before and v2_release not in head.rolled_away
    d = _diagnose(repo.app, "dev")
    assert d["diff"]["commits"] == [] and d["diff"]["flags"] == ["+ BROKEN=on (v1)"]
    assert any("RuntimeError: flag path" in line for line in d["evidence"])

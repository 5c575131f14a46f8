"""Feature flags in SSM Parameter Store, against the in-process local AWS (moto's SSM), plus pure unit tests.

moto's SSM keeps versions, descriptions and history and pages GetParametersByPath at 10 parameters, as AWS does.
What it does differently, and how the tests cope:
- it accepts values longer than 4096 characters (AWS refuses them in the standard tier): slipway/record/flags.py checks
  the length itself, and the tests check that refusal happens before any call;
- it never denies access, so the AccessDenied translation is tested with botocore's Stubber on an offline client;
- history entries carry LastModifiedUser "N/A" (AWS: the caller's ARN); Slipway records the actor in the
  Description instead, which moto keeps per version.
"""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.stub import Stubber

from slipway.core.errors import CredentialsError, DeployError, InputError
from slipway.record.flags import (
    FlagValue,
    delete_flag,
    diff_flags,
    flag_env_vars,
    flag_history,
    flag_path,
    flags_fingerprint,
    read_flags,
    set_flag,
)


@pytest.fixture
def ssm(aws_endpoint, boto_session):
    return boto_session.client("ssm", endpoint_url=aws_endpoint)


@pytest.fixture
def app():
    return f"flags-{uuid.uuid4().hex[:10]}"


class NoAwsCalls:
    """Stands in for an SSM client where validation must fail first: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"AWS was called ({name}) before the input was validated")


# ---- against the local AWS endpoint --------------------------------------------------------------------------
def test_setting_a_flag_twice_makes_version_2_and_read_flags_returns_the_latest(ssm, app):
    first = set_flag(ssm, app, "dev", "BETA", "off", actor="alice@laptop")
    second = set_flag(ssm, app, "dev", "BETA", "on", actor="bob@ci")

    assert (first.version, second.version) == (1, 2)
    flags = read_flags(ssm, app, "dev")
    assert list(flags) == ["BETA"]
    assert (flags["BETA"].value, flags["BETA"].version) == ("on", 2)
    assert flags["BETA"].last_modified and flags["BETA"].last_modified.endswith("+00:00")


def test_history_lists_every_version_oldest_first_with_who_set_it(ssm, app):
    set_flag(ssm, app, "dev", "BETA", "off", actor="alice@laptop")
    set_flag(ssm, app, "dev", "BETA", "on", actor="bob@ci")

    history = flag_history(ssm, app, "dev", "BETA")

    assert [(f.version, f.value, f.description) for f in history] == [(1, "off", "set by alice@laptop"), (2, "on", "set by bob@ci")]


def test_flags_of_another_environment_or_app_are_not_visible(ssm, app):
    set_flag(ssm, app, "dev", "BETA", "on", actor="t")
    set_flag(ssm, app, "prod", "BETA", "off", actor="t")
    set_flag(ssm, app, "prod", "PROD_ONLY", "on", actor="t")
    set_flag(ssm, f"{app}-other", "dev", "ELSEWHERE", "on", actor="t")

    assert {name: f.value for name, f in read_flags(ssm, app, "dev").items()} == {"BETA": "on"}
    assert {name: f.value for name, f in read_flags(ssm, app, "prod").items()} == {"BETA": "off", "PROD_ONLY": "on"}


def test_read_flags_follows_the_paginator_past_one_page(ssm, app):
    for i in range(23):  # GetParametersByPath returns at most 10 per page
        set_flag(ssm, app, "dev", f"F{i:02d}", str(i), actor="t")

    flags = read_flags(ssm, app, "dev")

    assert list(flags) == [f"F{i:02d}" for i in range(23)]


def test_an_environment_without_flags_reads_as_empty(ssm, app):
    assert read_flags(ssm, app, "dev") == {}


def test_parameters_below_a_flag_are_not_read_as_flags(ssm, app):
    set_flag(ssm, app, "dev", "BETA", "on", actor="t")
    ssm.put_parameter(Name=f"{flag_path(app, 'dev')}/nested/DEEP", Value="x", Type="String")

    assert list(read_flags(ssm, app, "dev")) == ["BETA"]


def test_a_secure_string_under_the_flags_path_is_reported_not_delivered(ssm, app):
    ssm.put_parameter(Name=f"{flag_path(app, 'dev')}/TOKEN", Value="s3cret", Type="SecureString")

    with pytest.raises(DeployError) as err:
        read_flags(ssm, app, "dev")

    assert str(err.value) == (
        f"parameter /slipway/{app}/dev/flags/TOKEN (SecureString) is not a flag ({app}/dev): "
        "flags are String parameters named like NEW_CHECKOUT; delete it or move it out of the flags path"
    )
    assert "s3cret" not in str(err.value)


def test_a_value_of_4096_characters_is_stored(ssm, app):
    assert set_flag(ssm, app, "dev", "BIG", "x" * 4096, actor="t").version == 1
    assert read_flags(ssm, app, "dev")["BIG"].value == "x" * 4096


def test_set_flag_records_the_default_actor_when_none_is_given(ssm, app):
    flag = set_flag(ssm, app, "dev", "BETA", "on")

    assert flag.description.startswith("set by ") and "@" in flag.description
    assert flag_history(ssm, app, "dev", "BETA")[0].description == flag.description


def test_deleting_a_flag_removes_it_and_an_unknown_flag_is_named_with_the_fix(ssm, app):
    set_flag(ssm, app, "dev", "BETA", "on", actor="t")
    set_flag(ssm, app, "dev", "KEEP", "on", actor="t")

    delete_flag(ssm, app, "dev", "BETA")

    assert list(read_flags(ssm, app, "dev")) == ["KEEP"]
    with pytest.raises(InputError) as err:
        delete_flag(ssm, app, "dev", "BETA")
    assert str(err.value) == f"no flag BETA in {app}/dev: `slipway flag list {app} dev` shows them"
    assert err.value.ref == "unknown-flag"


def test_history_of_an_unknown_flag_is_an_input_error(ssm, app):
    with pytest.raises(InputError, match=r"^no flag NOPE in "):
        flag_history(ssm, app, "dev", "NOPE")


def test_flags_read_back_become_environment_variables_and_a_fingerprint(ssm, app):
    set_flag(ssm, app, "dev", "new_checkout", "on", actor="t")
    set_flag(ssm, app, "dev", "LIMIT", "10", actor="t")
    set_flag(ssm, app, "dev", "LIMIT", "20", actor="t")

    flags = read_flags(ssm, app, "dev")

    assert flag_env_vars(flags) == {"SLIPWAY_FLAG_LIMIT": "20", "SLIPWAY_FLAG_NEW_CHECKOUT": "on"}
    assert flags_fingerprint(flags) == {"LIMIT": {"version": 2, "value": "20"}, "new_checkout": {"version": 1, "value": "on"}}


def test_fingerprints_of_two_deploys_diff_into_human_lines(ssm, app):
    set_flag(ssm, app, "dev", "BETA", "off", actor="t")
    set_flag(ssm, app, "dev", "OLD_FLAG", "on", actor="t")
    set_flag(ssm, app, "dev", "STEADY", "on", actor="t")
    before = flags_fingerprint(read_flags(ssm, app, "dev"))

    set_flag(ssm, app, "dev", "BETA", "on", actor="t")
    delete_flag(ssm, app, "dev", "OLD_FLAG")
    set_flag(ssm, app, "dev", "NEW_CHECKOUT", "on", actor="t")
    after = flags_fingerprint(read_flags(ssm, app, "dev"))

    assert diff_flags(before, after) == ["~ BETA: off → on (v1 → v2)", "+ NEW_CHECKOUT=on (v1)", "- OLD_FLAG"]


# ---- validation before any AWS call --------------------------------------------------------------------------
BAD_CALLS = {
    "app with a slash": (lambda c: read_flags(c, "a/b", "dev"), "invalid app name 'a/b'"),
    "app with dots": (lambda c: read_flags(c, "..", "dev"), "invalid app name '..'"),
    "app in capitals": (lambda c: set_flag(c, "Hello", "dev", "BETA", "on"), "invalid app name 'Hello'"),
    "empty env": (lambda c: read_flags(c, "hello", ""), "invalid environment name ''"),
    "env traversal": (lambda c: delete_flag(c, "hello", "../prod", "BETA"), "invalid environment name '../prod'"),
    "name with a dash": (lambda c: set_flag(c, "hello", "dev", "NEW-CHECKOUT", "on"), "invalid flag name 'NEW-CHECKOUT'"),
    "name starting with a digit": (lambda c: flag_history(c, "hello", "dev", "1BETA"), "invalid flag name '1BETA'"),
    "name too long": (lambda c: set_flag(c, "hello", "dev", "A" * 65, "on"), f"invalid flag name '{'A' * 65}'"),
    "name with a slash": (lambda c: delete_flag(c, "hello", "dev", "x/../BETA"), "invalid flag name 'x/../BETA'"),
    "empty value": (lambda c: set_flag(c, "hello", "dev", "BETA", ""), "flag BETA value is empty"),
    "value too long": (lambda c: set_flag(c, "hello", "dev", "BETA", "x" * 4097), "flag BETA value is 4097 characters"),
    "value not a string": (lambda c: set_flag(c, "hello", "dev", "BETA", True), "flag BETA value must be a string, not bool"),
    "actor with a newline": (lambda c: set_flag(c, "hello", "dev", "BETA", "on", actor="a\nb"), "invalid actor 'a\\nb'"),
}


@pytest.mark.parametrize("call, message", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_is_refused_before_any_aws_call(call, message):
    with pytest.raises(InputError) as err:
        call(NoAwsCalls())

    assert err.value.message == message
    assert "\n" not in str(err.value) and err.value.hint


def test_bad_names_give_the_rule_and_an_example():
    with pytest.raises(InputError) as err:
        flag_path("hello", "dev", "NEW-CHECKOUT")

    assert str(err.value) == (
        "invalid flag name 'NEW-CHECKOUT': start with a letter and use only letters, digits and _ "
        "(at most 64 characters), e.g. NEW_CHECKOUT"
    )


def test_empty_value_names_the_fix():
    with pytest.raises(InputError) as err:
        set_flag(NoAwsCalls(), "hello", "dev", "BETA", "")

    assert str(err.value) == (
        "flag BETA value is empty: SSM refuses empty values; use an explicit value such as off, "
        "or `slipway flag delete` to remove the flag"
    )


def test_flag_path_is_scoped_by_app_and_environment():
    assert flag_path("hello-api", "prod") == "/slipway/hello-api/prod/flags"
    assert flag_path("hello-api", "prod", "NEW_CHECKOUT") == "/slipway/hello-api/prod/flags/NEW_CHECKOUT"


# ---- AccessDenied (moto never denies: botocore's Stubber on an offline client) -------------------------------
@pytest.fixture
def stubbed_ssm():
    client = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").client("ssm")
    with Stubber(client) as stubber:
        yield client, stubber


def test_access_denied_on_put_names_the_permission_needed(stubbed_ssm):
    client, stubber = stubbed_ssm
    stubber.add_client_error("put_parameter", service_error_code="AccessDeniedException", service_message="not authorized", http_status_code=400)

    with pytest.raises(CredentialsError) as err:
        set_flag(client, "hello", "dev", "BETA", "on", actor="t")

    assert str(err.value) == (
        "AWS denied ssm:PutParameter to set flag BETA (AccessDeniedException) (/slipway/hello/dev/flags/BETA): "
        "grant ssm:PutParameter on arn:aws:ssm:*:*:parameter/slipway/hello/dev/flags/BETA to the credentials in the aws-credentials block"
    )
    assert isinstance(err.value.__cause__, Exception)


@pytest.mark.parametrize(
    "operation, call, permission",
    [
        ("get_parameters_by_path", lambda c: read_flags(c, "hello", "dev"), "ssm:GetParametersByPath"),
        ("get_parameter_history", lambda c: flag_history(c, "hello", "dev", "BETA"), "ssm:GetParameterHistory"),
        ("delete_parameter", lambda c: delete_flag(c, "hello", "dev", "BETA"), "ssm:DeleteParameter"),
    ],
)
def test_access_denied_on_reads_and_delete_names_the_permission_needed(stubbed_ssm, operation, call, permission):
    client, stubber = stubbed_ssm
    stubber.add_client_error(operation, service_error_code="AccessDeniedException", http_status_code=400)

    with pytest.raises(CredentialsError) as err:
        call(client)

    assert f"AWS denied {permission} to " in err.value.message
    assert err.value.hint.startswith(f"grant {permission} on arn:aws:ssm:*:*:parameter/slipway/hello/dev/flags")


def test_other_aws_errors_become_deploy_errors(stubbed_ssm):
    client, stubber = stubbed_ssm
    stubber.add_client_error("put_parameter", service_error_code="ParameterLimitExceeded", service_message="too many", http_status_code=400)

    with pytest.raises(DeployError) as err:
        set_flag(client, "hello", "dev", "BETA", "on", actor="t")

    assert err.value.message == "could not set flag BETA: ParameterLimitExceeded: too many"


# ---- delivery and diagnosis (pure) ---------------------------------------------------------------------------
def flag(name: str, value: str, version: int = 1) -> FlagValue:
    return FlagValue(name=name, value=value, version=version)


def test_flags_become_slipway_flag_environment_variables():
    flags = {"new_checkout": flag("new_checkout", "on"), "LIMIT": flag("LIMIT", "20", 3)}

    assert flag_env_vars(flags) == {"SLIPWAY_FLAG_LIMIT": "20", "SLIPWAY_FLAG_NEW_CHECKOUT": "on"}
    assert flag_env_vars({}) == {}


def test_flags_differing_only_in_case_are_refused_as_environment_variables():
    with pytest.raises(InputError) as err:
        flag_env_vars({"BETA": flag("BETA", "on"), "beta": flag("beta", "off")})

    assert str(err.value) == (
        "flags BETA and beta both become SLIPWAY_FLAG_BETA: delete one of them (`slipway flag delete`); "
        "flag names must differ in more than case"
    )


def test_flag_values_are_frozen():
    with pytest.raises(Exception):
        flag("BETA", "on").value = "off"


def test_diff_flags_lists_added_changed_and_removed_flags_by_name():
    old = {"BETA": {"version": 2, "value": "off"}, "OLD_FLAG": {"version": 1, "value": "on"}, "SAME": {"version": 4, "value": "x"}}
    new = {"BETA": {"version": 3, "value": "on"}, "NEW_CHECKOUT": {"version": 1, "value": "on"}, "SAME": {"version": 4, "value": "x"}}

    assert diff_flags(old, new) == ["~ BETA: off → on (v2 → v3)", "+ NEW_CHECKOUT=on (v1)", "- OLD_FLAG"]


def test_diff_flags_reports_a_reset_with_the_same_value_and_nothing_for_equal_sets():
    old = {"BETA": {"version": 2, "value": "on"}}

    assert diff_flags(old, {"BETA": {"version": 3, "value": "on"}}) == ["~ BETA: on (v2 → v3, value unchanged)"]
    assert diff_flags(old, old) == []
    assert diff_flags({}, {}) == []


def test_diff_flags_quotes_values_that_are_not_plain_and_keeps_one_line():
    old = {"MSG": {"version": 1, "value": "hello world"}}
    new = {"MSG": {"version": 2, "value": "line1\nline2"}, "LONG": {"version": 1, "value": "y" * 100}}

    assert diff_flags(old, new) == [
        f"+ LONG=\"{'y' * 60}…\" (v1)",
        '~ MSG: "hello world" → "line1\\nline2" (v1 → v2)',
    ]

from pathlib import Path

import pytest

from slipway.core.errors import SpecError
from slipway.spec.loading import check_spec_against_checkout, load_spec, parse_spec

GOOD = """
app: hello
artifact:
  type: lambda-zip
  source: src
  handler: app.handler
  runtime: python3.11
test:
  command: ["python", "-m", "pytest", "-q"]
verify:
  smoke:
    - name: health
      event: {"path": "/health"}
      expect: {statusCode: 200}
environments:
  - name: dev
  - name: staging
  - name: prod
"""


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return str(info.value)


def test_a_complete_spec_parses_with_defaults():
    spec = parse_spec(GOOD)
    assert spec.app == "hello"
    assert [e.name for e in spec.environments] == ["dev", "staging", "prod"]
    assert spec.function_name(spec.environments[0]) == "hello-dev"
    assert spec.environments[0].alias == "live"
    assert spec.artifact.handler_module == "app" and spec.artifact.handler_function == "handler"


def test_unknown_top_level_key_is_an_error_that_suggests_the_fix():
    assert error_of(GOOD + "enviroments: []\n") == "slipway.yaml: enviroments: unknown key; did you mean 'environments'?"


def test_unknown_nested_key_names_its_path():
    text = GOOD.replace("  handler: app.handler", "  handler: app.handler\n  handlr: x")
    assert error_of(text) == "slipway.yaml: artifact.handlr: unknown key; did you mean 'handler'?"


def test_handler_without_a_function_is_refused_with_an_example():
    text = GOOD.replace("handler: app.handler", "handler: app")
    assert error_of(text) == "slipway.yaml: artifact.handler: 'app' is not module.function; write it like app.handler"


def test_app_name_must_be_a_slug():
    assert error_of(GOOD.replace("app: hello", "app: Hello_World")).startswith("slipway.yaml: app: 'Hello_World' must be lowercase")


def test_missing_field_is_named():
    text = GOOD.replace("  source: src\n", "")
    assert error_of(text) == "slipway.yaml: artifact.source: required field is missing; add it (see the slipway.yaml reference in docs/spec.md)"


def test_unsupported_artifact_type_is_named():
    assert error_of(GOOD.replace("type: lambda-zip", "type: tarball")) == (
        "slipway.yaml: artifact.type: unsupported artifact type; use type: lambda-zip or type: docker-image"
    )


def test_duplicate_environment_names_are_refused():
    text = GOOD.replace("  - name: prod", "  - name: dev")
    assert "dev appears twice" in error_of(text)


def test_paths_may_not_leave_the_repository():
    assert "must be a path inside the repository" in error_of(GOOD.replace("source: src", "source: ../etc"))


def test_invalid_yaml_reports_the_line():
    assert error_of("app: [unclosed\n").startswith("slipway.yaml: not valid YAML at line")


def test_several_problems_are_counted():
    text = GOOD.replace("app: hello", "app: Bad!").replace("runtime: python3.11", "runtime: node18")
    message = error_of(text)
    assert message.endswith("(and 1 more problem)")


def test_spec_digest_is_stable_and_sensitive():
    a, b = parse_spec(GOOD), parse_spec(GOOD)
    assert a.digest() == b.digest()
    assert parse_spec(GOOD.replace("name: health", "name: ping")).digest() != a.digest()


def test_build_key_ignores_verify_but_not_commit_or_build_inputs():
    spec = parse_spec(GOOD)
    key = spec.build_key("a" * 40, "b1")
    assert parse_spec(GOOD.replace("name: health", "name: ping")).build_key("a" * 40, "b1") == key
    assert spec.build_key("c" * 40, "b1") != key
    assert parse_spec(GOOD.replace("source: src", "source: lib")).build_key("a" * 40, "b1") != key


def make_repo(tmp_path: Path, module_text: str = "def handler(event, context):\n    return {}\n") -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(module_text)
    (tmp_path / "slipway.yaml").write_text(GOOD)
    return tmp_path


def test_checkout_checks_pass_for_a_good_repo(tmp_path):
    repo = make_repo(tmp_path)
    check_spec_against_checkout(load_spec(repo), repo)


def test_missing_handler_module_is_named(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "src" / "app.py").unlink()
    with pytest.raises(SpecError) as info:
        check_spec_against_checkout(load_spec(repo), repo)
    assert str(info.value) == "slipway.yaml: artifact.handler: module 'app' not found in src/: create src/app.py or fix the handler"


def test_missing_handler_function_is_named(tmp_path):
    repo = make_repo(tmp_path, "def other(event, context):\n    return {}\n")
    with pytest.raises(SpecError) as info:
        check_spec_against_checkout(load_spec(repo), repo)
    assert str(info.value) == "slipway.yaml: artifact.handler: app.py defines no function 'handler': define it or fix the handler"


def test_missing_spec_file_says_how_to_fix(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert "add slipway.yaml at the repo root or pass --spec PATH" in str(info.value)


def test_reserved_lambda_environment_variables_are_refused():
    text = GOOD.replace("  runtime: python3.11", "  runtime: python3.11\n  environment: {AWS_REGION: eu-west-1}")
    assert error_of(text) == "slipway.yaml: artifact.environment: environment variable 'AWS_REGION' is reserved by Lambda; choose another name"


def test_environment_variable_names_are_checked_per_environment():
    text = GOOD.replace("  - name: prod", "  - name: prod\n    environment: {'1BAD': x}")
    assert "environments[2].environment: environment variable name '1BAD' must start with a letter" in error_of(text)


DOCKER = """
app: hello-service
artifact:
  type: docker-image
  dockerfile: Dockerfile
  context: .
  build_args: {PY: "3.11"}
verify:
  smoke:
    - name: health
      request: {method: GET, path: /health}
      expect: {status: 200, body_contains: ok}
environments:
  - name: dev
  - name: prod
    type: ecs
"""


def test_a_docker_image_spec_parses_with_target_types():
    spec = parse_spec(DOCKER)
    assert spec.artifact.type == "docker-image" and spec.artifact.port_env == "PORT"
    assert [spec.target_type(e) for e in spec.environments] == ["docker-host", "ecs"]
    assert spec.verify.smoke[0].request.path == "/health"


def test_a_lambda_field_in_a_docker_image_artifact_is_named_as_such():
    text = DOCKER.replace("  context: .", "  context: .\n  handler: app.handler")
    assert error_of(text) == (
        "slipway.yaml: artifact.handler: 'handler' is a lambda-zip field; a docker-image artifact does not take it (remove it)"
    )


def test_a_docker_field_in_a_lambda_artifact_is_named_as_such():
    text = GOOD.replace("  runtime: python3.11", "  runtime: python3.11\n  dockerfile: Dockerfile")
    assert error_of(text) == (
        "slipway.yaml: artifact.dockerfile: 'dockerfile' is a docker-image field; a lambda-zip artifact does not take it (remove it)"
    )


def test_target_type_must_fit_the_artifact():
    assert "environments[0].type 'docker-host' cannot run a lambda-zip artifact; use lambda" in error_of(
        GOOD.replace("  - name: dev", "  - name: dev\n    type: docker-host")
    )


def test_http_checks_take_request_and_lambda_checks_take_event():
    assert "request is for docker-image artifacts" in error_of(GOOD.replace('event: {"path": "/health"}', "request: {path: /health}"))
    assert "HTTP expect takes status and body_contains, not statusCode" in error_of(DOCKER.replace("expect: {status: 200, body_contains: ok}", "expect: {statusCode: 200}"))


def test_unknown_key_in_a_docker_artifact_suggests_the_docker_field():
    assert error_of(DOCKER.replace("  context: .", "  contxt: .")) == "slipway.yaml: artifact.contxt: unknown key; did you mean 'context'?"


# ---- progressive delivery ----------------------------------------------------------------------------------
def with_prod(extra: str, artifact: str = "type: lambda-zip\n  source: src\n  handler: app.handler") -> str:
    return f"app: hello\nartifact:\n  {artifact}\nenvironments:\n  - name: dev\n  - name: prod\n{extra}"


def test_canary_linear_and_the_gates_parse():
    spec = parse_spec(with_prod(
        "    strategy: {canary: {steps: [10, 50, 100], bake: 5m}}\n"
        "    analysis: {min_requests: 80, inconclusive: pause}\n"
        "    traffic: {rate: 30/m, events: [{}]}\n"
        "    alarms: [api-5xx]\n"
        "    approval: required\n"
        "    approval_timeout: 30m\n"))
    prod = spec.environment("prod")
    assert prod.progressive.steps() == [10, 50, 100] and prod.progressive.bake_s == 300
    assert prod.analysis.inconclusive == "pause" and prod.analysis.thresholds()["min_requests"] == 80
    assert prod.traffic.rate_per_s == 0.5 and prod.alarms == ["api-5xx"]
    assert (prod.approval, prod.approval_timeout) == ("required", 1800)
    assert spec.environment("dev").progressive is None and spec.environment("dev").approval == "none"
    linear = parse_spec(with_prod("    strategy: {linear: {step: 30, interval: 90s}}\n")).environment("prod").progressive
    assert (linear.name, linear.steps(), linear.bake_s) == ("linear", [30, 60, 90, 100], 90)
    assert parse_spec(with_prod("    strategy: all-at-once\n")).environment("prod").progressive is None


@pytest.mark.parametrize("extra, message", [
    ("    strategy: {canary: {steps: [10, 50], bake: 5m}}\n",
     "environments[1].strategy.canary.steps: [10, 50]: the last step must be 100 (promotion is 100% on the new version); add 100"),
    ("    strategy: {canary: {steps: [50, 10, 100], bake: 5m}}\n", "steps must increase, e.g. [10, 50, 100]"),
    ("    strategy: {canary: {steps: [10, 100], bake: 5 minutes}}\n", "'5 minutes' is not a duration; write it like 30s, 5m or 1h"),
    ("    strategy: blue-green\n", "'blue-green' is not a strategy; write all-at-once, canary: {steps, bake} or linear: {step, interval}"),
    ("    strategy: {canary: {steps: [100], bake: 1m}, linear: {step: 10, interval: 1m}}\n", "give exactly one of canary"),
    ("    strategy: {canary: {step: [10, 100], bake: 1m}}\n", "environments[1].strategy.canary.step: unknown key; did you mean 'steps'?"),
    ("    traffic: {rate: fast, events: [{}]}\n", "traffic rate 'fast' is not N/s or N/m"),
    ("    traffic: {rate: 5/s, requests: [{path: /}]}\n", "a Lambda environment takes events (invoke payloads), not requests"),
    ("    analysis: {inconclusive: ignore}\n", "environments[1].analysis.inconclusive"),
    ("    approval: maybe\n", "environments[1].approval"),
])
def test_bad_progressive_settings_are_one_line_errors(extra, message):
    assert message in error_of(with_prod(extra))


def test_canary_is_refused_on_ecs_and_http_traffic_takes_requests():
    image = "type: docker-image"
    msg = error_of(with_prod("    type: ecs\n    strategy: {canary: {steps: [10, 100], bake: 1m}}\n", image))
    assert "environments[1].strategy: canary is not supported on ecs" in msg and "use all-at-once for ecs environments" in msg
    assert "takes requests (HTTP), not events" in error_of(with_prod("    traffic: {rate: 5/s, events: [{}]}\n", image))
    ok = parse_spec(with_prod("    strategy: {linear: {step: 50, interval: 1m}}\n    traffic: {rate: 5/s, requests: [{path: /}]}\n", image))
    assert ok.environment("prod").traffic.requests[0].path == "/"



DUPLICATE_APP = """app: one
artifact:
  type: lambda-zip
  source: src
  handler: app.handler
  runtime: python3.11
environments:
  - name: dev
app: two
"""


def test_a_key_written_twice_is_refused_naming_both_lines():
    with pytest.raises(SpecError) as info:
        parse_spec(DUPLICATE_APP)
    assert str(info.value) == (
        "slipway.yaml: key 'app' is written twice (first at line 1) at line 9, column 1: keep one: YAML would silently use the last"
    )


def test_the_same_key_in_two_mappings_is_not_a_duplicate():
    spec = parse_spec(DUPLICATE_APP.replace("app: two\n", "").replace("  - name: dev\n", "  - name: dev\n  - name: prod\n"))
    assert [e.name for e in spec.environments] == ["dev", "prod"]


def test_a_spec_path_to_a_device_is_refused_without_reading_it(tmp_path):
    (tmp_path / "slipway.yaml").symlink_to("/dev/zero")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert info.value.ref in ("spec-missing", "path-escapes-repo")


def test_the_app_of_a_spec_that_does_not_validate_is_read_only_from_inside_the_repository(tmp_path):
    from slipway.spec.loading import declared_app

    (tmp_path / "slipway.yaml").write_text("app: mine\nartifact: {type: lambda-zip}\n")
    assert declared_app(tmp_path) == "mine"
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("app: someone-else\n")
    (tmp_path / "other.yaml").symlink_to(outside)
    assert declared_app(tmp_path, "other.yaml") is None
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    assert declared_app(tmp_path, "zero.yaml") is None
    (tmp_path / "big.yaml").write_text("app: big\n" + "# padding\n" * 40_000)
    assert declared_app(tmp_path, "big.yaml") is None


def test_lambda_environment_variables_over_4_kb_in_one_environment_are_refused_naming_the_largest():
    big = "x" * 3000
    text = GOOD.replace("  runtime: python3.11", f"  runtime: python3.11\n  environment: {{CONFIG_BLOB: '{big}', SMALL: 'y'}}")
    assert parse_spec(text)  # 3 KB fits
    over = text.replace("  - name: prod", f"  - name: prod\n    environment: {{CERT: '{big}'}}")
    message = error_of(over)
    assert "\n" not in message
    assert "environments[2] (prod): environment variables total 6021 bytes, over Lambda's 4 KB limit" in message
    assert "largest: CONFIG_BLOB, CERT" in message and "Secrets Manager" in message


FROZEN_PROD = GOOD.replace("  - name: prod\n", """  - name: prod
    freeze:
      - reason: weekend
        cron: "0 18 * * FRI"
        duration: 62h
        timezone: Europe/Berlin
      - reason: year end
        start: "2026-12-21T00:00:00+01:00"
        end: "2027-01-04T08:00:00+01:00"
""")


def _utc(*args) -> "datetime":
    from datetime import datetime, timezone

    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize("now, frozen_until", [
    (_utc(2026, 12, 4, 16, 59), None),                       # Friday 17:59 in Berlin: not yet
    (_utc(2026, 12, 4, 17, 0), "2026-12-07T08:00:00+01:00"),  # Friday 18:00 in Berlin: the weekend starts
    (_utc(2026, 12, 6, 23, 0), "2026-12-07T08:00:00+01:00"),  # Monday 00:00 in Berlin
    (_utc(2026, 12, 7, 7, 0), None),                         # Monday 08:00 in Berlin: over
    (_utc(2026, 12, 23, 12, 0), "2027-01-04T08:00:00+01:00"), # in the dated window (it ends later than the weekend's)
    (_utc(2027, 3, 26, 17, 0), "2027-03-29T08:00:00+02:00"),  # the window spans the change to summer time: local hours count
])
def test_freeze_windows_recurring_in_their_time_zone_and_dated(now, frozen_until):
    from slipway.spec.schema import active_freeze

    hit = active_freeze(parse_spec(FROZEN_PROD).environment("prod").freeze, now)
    assert (hit[1].isoformat() if hit else None) == frozen_until


@pytest.mark.parametrize("window, problem", [
    ("{reason: x, cron: '0 18 * * FRI'}", "needs a duration"),
    ("{reason: x, cron: 'every friday', duration: 1h}", "is not a cron expression"),
    ("{reason: x, cron: '0 18 * * FRI', duration: 1h, timezone: Mars/Olympus}", "unknown time zone 'Mars/Olympus'"),
    ("{reason: x, start: '2026-12-21T00:00:00', end: '2027-01-04T00:00:00'}", "need their UTC offset"),
    ("{reason: x, start: '2026-12-21T00:00:00Z', end: '2026-12-20T00:00:00Z'}", "must end after it starts"),
    ("{reason: x}", "either recurring (cron + duration) or dated (start + end)"),
])
def test_a_bad_freeze_window_is_one_line_naming_the_problem(window, problem):
    message = error_of(GOOD.replace("  - name: prod\n", f"  - name: prod\n    freeze: [{window}]\n"))
    assert problem in message and "environments[2].freeze[0]: " in message and "\n" not in message

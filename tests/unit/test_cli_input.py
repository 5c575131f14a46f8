"""Numeric options are checked before anything runs: one line, exit 2."""

import pytest

from slipway.cli.main import main


def never_called():
    raise AssertionError("the runner must not be reached")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e9", "soon"])
def test_a_lock_wait_that_is_not_a_number_of_seconds_is_refused(value, capsys):
    code = main(["release", "file:///nowhere", "--lock-wait", value], runner=never_called)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (f"error: argument --lock-wait: {value!r} is not a number of seconds from 0 to 86400 "
                   "(see `slipway release --help`)")


def test_zero_means_refuse_at_once_and_is_accepted(capsys):
    from slipway.cli.main import build_parser

    assert build_parser().parse_args(["rollback", "app", "dev", "--lock-wait", "0"]).lock_wait == 0.0


def test_a_prefect_api_that_is_not_there_or_refuses_gets_one_line_naming_the_fix(monkeypatch):
    import httpx

    from slipway.cli.main import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    request = httpx.Request("GET", "http://127.0.0.1:9/api/admin/version")

    def gone():
        raise RuntimeError("Failed to reach API at http://127.0.0.1:9/api/") from httpx.ConnectError("refused", request=request)

    def refusing():
        raise httpx.HTTPStatusError("401", request=request, response=httpx.Response(401, request=request))

    class Runner:
        def __init__(self, fail):
            self.fail = fail

        def configured_api_url(self):
            return "http://127.0.0.1:9/api"

        def read_history(self, app, env):
            self.fail()

    for fail, expected in ((gone, "no Prefect API answers at http://127.0.0.1:9/api: start it (`slipway local up`"),
                           (refusing, "the Prefect API at http://127.0.0.1:9/api refused the request (401): set PREFECT_API_AUTH_STRING")):
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["history", "app"], runner=lambda fail=fail: Runner(fail))
        assert code == 2 and err.getvalue().startswith("error: " + expected) and err.getvalue().count("\n") == 1, err.getvalue()


def test_check_validates_a_spec_and_the_files_it_names_without_releasing(tmp_path):
    import contextlib
    import io
    import shutil

    from conftest import EXAMPLE
    from slipway.cli.main import main

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("demo", "__pycache__"))

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv), runner=lambda: pytest.fail("check starts no runner"))
        return code, out.getvalue(), err.getvalue()

    assert run("check", str(repo)) == (0, "slipway.yaml: ok: app hello, lambda-zip, environments dev → staging → prod\n", "")
    assert run("check", str(repo / "slipway.yaml"))[0] == 0
    (repo / "slipway.yaml").write_text((repo / "slipway.yaml").read_text().replace("handler: app.handler", "handler: apps.handler"))
    code, _, err = run("check", str(repo))
    assert code == 2 and err.count("\n") == 1 and "apps" in err


def test_schema_prints_a_json_schema_editors_can_use():
    import contextlib
    import io
    import json

    from slipway.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    schema = json.loads(out.getvalue())
    assert schema["title"] == "slipway.yaml" and schema["$schema"].endswith("2020-12/schema")
    assert {"app", "artifact", "environments"} <= set(schema["properties"]) and set(schema["required"]) >= {"app", "artifact", "environments"}


@pytest.mark.parametrize("preset", [None, "3"])
def test_commands_that_reach_prefect_give_its_client_more_retries_unless_told_otherwise(monkeypatch, preset):
    import os

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    if preset is None:
        monkeypatch.delenv("PREFECT_CLIENT_MAX_RETRIES", raising=False)
    else:
        monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", preset)

    class Runner:
        def read_history(self, app, env):
            return [], {}

    main(["history", "app"], runner=Runner)
    assert os.environ["PREFECT_CLIENT_MAX_RETRIES"] == (preset or "10")


def test_every_command_prints_its_help():
    """argparse formats help with %: a bare % in any help text breaks `--help` for the whole command."""
    import argparse

    from slipway.cli.main import build_parser

    parser = build_parser()
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        assert current.format_help().startswith("usage: ")
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
                assert all(choice.help for choice in action._choices_actions)


def test_slipway_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"], runner=never_called)
    assert exited.value.code == 0
    assert "release" in capsys.readouterr().out

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

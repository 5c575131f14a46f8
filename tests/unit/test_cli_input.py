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

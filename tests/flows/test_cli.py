"""The `slipway` command as a user runs it: a subprocess, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys



def slipway(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI. Against the session's server it runs in this process (``slipway.cli.main.main``, stdout/stderr
    captured, the environment restored): a fresh interpreter costs ~2 s of imports per call. Anything else (another
    API URL, `local`, or SLIPWAY_TEST_CLI_SUBPROCESS=1) runs `python -m slipway.cli.main` in a subprocess."""
    if os.environ.get("SLIPWAY_TEST_CLI_SUBPROCESS") or args[:1] == ("local",) or not _this_sessions_server(env):
        return subprocess.run([sys.executable, "-m", "slipway.cli", *args], text=True, capture_output=True,
                              env={**os.environ, **(env or {})}, timeout=300)
    return _in_process(args, env or {})


def _this_sessions_server(env: dict | None) -> bool:
    from prefect.settings import PREFECT_API_URL

    wanted = (env or {}).get("PREFECT_API_URL")
    return bool(wanted) and wanted == PREFECT_API_URL.value()


def _in_process(args: tuple[str, ...], env: dict) -> subprocess.CompletedProcess:
    import contextlib
    import io

    from slipway.cli.main import main

    out, err, saved = io.StringIO(), io.StringIO(), dict(os.environ)
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["slipway", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert text in errors[0]


def test_a_hostile_url_is_refused_without_reaching_prefect(tmp_path):
    marker = tmp_path / "pwned"
    proc = slipway("release", f"ext::sh -c touch% {marker}", env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert_one_line_error(proc, 2, "refused repository URL")
    assert not marker.exists()


def test_an_option_looking_ref_is_refused(tmp_path):
    proc = slipway("release", str(tmp_path), "--ref", "--upload-pack=x")
    assert_one_line_error(proc, 2, "expected one argument")
    proc = slipway("release", str(tmp_path), "--ref=-x")
    assert_one_line_error(proc, 2, "refused ref '-x'")


def test_unknown_command_is_one_line():
    assert_one_line_error(slipway("deploy"), 2, "invalid choice: 'deploy'")


def test_without_any_prefect_api_the_fix_is_named(tmp_path):
    proc = slipway("history", "hello", env={"SLIPWAY_HOME": str(tmp_path / "empty"), "PREFECT_HOME": str(tmp_path / "p")})
    assert_one_line_error(proc, 2, "no Prefect API configured: run `slipway local up`")


def test_local_status_json_reports_the_environment_to_export(local_stack):
    proc = slipway("local", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["running"] is True
    assert info["env"]["PREFECT_API_URL"].startswith("http://127.0.0.1:")
    assert info["env"]["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_release_history_rollback_and_stats_through_the_cli(prefect_api, app_repo, tmp_path):
    repo = app_repo()
    env = {"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    proc = slipway("release", repo.url, "--ref", "v1", "--only", "dev", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dev" in proc.stdout and "live" in proc.stdout and "skipped" in proc.stdout

    proc = slipway("rollback", repo.app, "dev", env=env)
    assert_one_line_error(proc, 2, "no earlier verified release in dev to roll back to")

    repo.break_health_check().commit("v2", tag="v2")
    proc = slipway("release", repo.url, "--ref", "v2", "--only", "dev", env=env)
    assert proc.returncode == 1
    assert_one_line_error(proc, 1, "failed at verify: smoke check 'health' failed in dev")
    assert "rolled-back" in proc.stdout

    proc = slipway("history", repo.app, "--json", env=env)
    kinds = [e["kind"] for e in json.loads(proc.stdout)["entries"]]
    assert kinds[:3] == ["rolled-back", "rollback-started", "verify-failed"]

    # whether releases fail less: the two deploys above, from the ledger (and the failure record's cause)
    chart = tmp_path / "stats.png"
    proc = slipway("stats", repo.app, "--json", "--chart", str(chart), env=env)
    assert proc.returncode == 0, proc.stderr
    (dev,) = json.loads(proc.stdout.split("\nchart: ")[0])[0]["environments"]
    assert (dev["deploys"], dev["change_failure_rate"]) == (2, 0.5)
    assert dev["median_time_to_restore_min"] is not None and dev["median_lead_time_h"] is not None  # the commit date is recorded
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = slipway("stats", repo.app, env=env).stdout
    assert f"{repo.app}/dev *" in text and "50%" in text and "configuration" in text

    from flows.maintain import delivery_stats

    rows = delivery_stats(apps=[repo.app])
    assert rows == [dict(dev, app=repo.app, environment="dev")]


def test_a_malformed_spec_is_one_line_naming_the_field(prefect_api, app_repo):
    repo = app_repo()
    spec = (repo.path / "slipway.yaml").read_text().replace("handler: app.handler", "handler: app.handler\n  handlr: typo")
    repo.write("slipway.yaml", spec).commit("typo in spec")
    proc = slipway("release", repo.url, "--ref", "main", env={"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]})
    assert_one_line_error(proc, 2, "slipway.yaml: artifact.handlr: unknown key; did you mean 'handler'?")


def test_history_of_an_unknown_app_says_so(prefect_api):
    proc = slipway("history", "never-released", env={"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]})
    assert_one_line_error(proc, 2, "no ledger for app 'never-released'")


def test_history_of_an_environment_never_released_to_says_so(prefect_api, app_repo):
    repo = app_repo()
    env = {"PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    assert slipway("release", repo.url, "--ref", "v1", "--only", "dev", env=env).returncode == 0
    proc = slipway("history", repo.app, "--env", "prdo", env=env)
    assert_one_line_error(proc, 2, f"no ledger for app '{repo.app}' in environment 'prdo'")


def test_history_reads_the_ledger_without_importing_prefect_or_starting_a_flow(prefect_api, app_repo):
    repo = app_repo()
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
    assert slipway("release", repo.url, "--ref", "v1", "--only", "dev", env={"PREFECT_API_URL": env["PREFECT_API_URL"]}).returncode == 0
    # the command's own entry point (main, then its exit): a check at interpreter exit sees every module imported
    code = ("import atexit, sys; atexit.register(lambda: print('prefect imported' if 'prefect' in sys.modules else "
            "'prefect not imported')); sys.argv = ['slipway', 'history', %r, '--env', 'dev']; "
            "from slipway.cli.main import run; run()") % repo.app
    proc = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "prefect not imported" in proc.stdout
    assert "dev: " in proc.stdout and "verified" in proc.stdout

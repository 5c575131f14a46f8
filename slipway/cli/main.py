"""The ``slipway`` command: a thin layer over one runner it is given.

``main(argv, runner=...)`` takes the runner (the Prefect side: ``deployments.runner``, imported lazily by default)
the way chalice's CLI takes its factory: the commands parse, validate and print; the runner runs flows and reads
the ledger. Read-only commands (``history``, ``flag list/history``, ``local status``) start no flow, and ``history``
and ``flag`` read the store block without importing Prefect when they can (``deployments/block_reader.py``).

User errors print one line (``error: ...``) and exit non-zero; no traceback unless ``SLIPWAY_DEBUG=1``.
Exit codes: 0 success, 1 the release/rollback ran and failed, 2 bad input or configuration (from each error's
declared reference: ``slipway.core.errors.exit_code_for``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable, Sequence

from slipway.local import stack as localstack
from slipway.core.errors import BAD_INPUT, SlipwayError, exit_code_for

SUPERSEDED = 4  # `release`: a newer commit is live (or waiting) in an environment; that stage touched nothing


class CliError(Exception):
    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _configure_prefect_api(make_runner: Callable[[], Any]) -> str | None:
    """Use the local stack's Prefect API when none is configured (before Prefect is imported)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    info = localstack.status()
    if info["running"]:
        os.environ["PREFECT_API_URL"] = info["env"]["PREFECT_API_URL"]
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        return os.environ["PREFECT_API_URL"]
    configured = make_runner().configured_api_url()  # a Prefect profile may set it
    if configured:
        return configured
    raise CliError("no Prefect API configured: run `slipway local up` (embedded stack) or set PREFECT_API_URL")


def default_runner():
    """The Prefect side, imported only by the commands that need it."""
    return importlib.import_module("deployments.runner")


# A SQLite-backed Prefect server (the embedded one) answers a write that raced with another with HTTP 503; Prefect's
# client retries it, 5 times by default, which several releases started at once from the command line can exhaust.
CLI_CLIENT_RETRIES = "10"


def _runner(args: argparse.Namespace):
    _configure_prefect_api(args.make_runner)
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", CLI_CLIENT_RETRIES)  # before Prefect is imported; an explicit value wins
    return args.make_runner()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# ---- local -------------------------------------------------------------------------------------------
def cmd_local(args: argparse.Namespace) -> int:
    if args.local_cmd == "up":
        info = localstack.up()
        os.environ["PREFECT_API_URL"] = info["env"]["PREFECT_API_URL"]
        saved = args.make_runner().save_local_blocks(
            info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"], localstack.REGION,
            registry=info["registry"], proxy_root=info["proxy_root"] if info["registry"] else None,
            health_timeout=20,  # local services start in seconds; a broken one should not hold the demo for a minute
        )
        started = ", ".join(info["started"]) or "nothing (already running)"
        print(f"local stack up (started: {started}); state in {info['home']}")
        print(f"  Prefect UI:  {info['ui_url']}")
        print(f"  local AWS:   {info['env']['AWS_ENDPOINT_URL']}  (bucket {info['bucket']}, role {info['role_arn']})")
        if info["registry"]:
            print(f"  registry:    {info['registry']}  (container releases go to the local Docker engine behind nginx)")
        else:
            print(f"  registry:    none — container releases are off: {info['docker']}")
        print(f"  blocks:      {', '.join(saved)}")
        print("export these to use it from other shells:")
        for key, value in info["env"].items():
            print(f"  export {key}={value}")
        return 0
    if args.local_cmd == "down":
        result = localstack.down(reset=args.reset)
        print(f"local stack down (stopped: {', '.join(result['stopped']) or 'nothing was running'})"
              + ("; its state was removed: the next `slipway local up` starts empty" if args.reset else
                 "; its state is kept for the next `slipway local up` (`--reset` removes it)"))
        return 0
    info = localstack.status()
    if args.json:
        _print_json(info)
    else:
        print(f"local stack: {'running' if info['running'] else 'not running'} ({info['home']})")
        if info.get("docker") and info["docker"] != "ok":
            print(f"  docker   off      {info['docker']}")
        for name, comp in info["components"].items():
            print(f"  {name:<8} {'healthy' if comp['healthy'] else 'down':<8} {comp['url'] or '-'}  pid {comp['pid'] or '-'}")
        for key, value in info["env"].items():
            print(f"  export {key}={value}")
    return 0 if info["running"] else 3


# ---- release / rollback / history -----------------------------------------------------------------------
def cmd_release(args: argparse.Namespace) -> int:
    from slipway.source.git import validate_ref, validate_repo_url

    validate_repo_url(args.repo_url)  # before anything else, even before Prefect is reached
    validate_ref(args.ref)
    runner = _runner(args)
    out = runner.run_release(args.repo_url, args.ref, args.spec, args.only, git_token_block=args.git_token_block, lock_wait=args.lock_wait,
                             allow_older=args.allow_older, override_freeze=args.override_freeze)
    result = out["result"]
    from slipway.core.models import StageOutcome
    from slipway.record.report import render_summary

    if isinstance(result, BaseException):
        evidence = getattr(result, "evidence", {}) or {}
        if evidence.get("outcomes"):
            outcomes = [StageOutcome.model_validate(o) for o in evidence["outcomes"]]
            print(render_summary(outcomes, evidence.get("release_id")))
        print(f"error: {result.one_line() if isinstance(result, SlipwayError) else result}", file=sys.stderr)
        if out["run_url"]:
            print(f"run: {out['run_url']}")
        return 1 if evidence.get("outcomes") else exit_code_for(result)  # stages ran: it ran and failed
    outcomes = [StageOutcome.model_validate(o) for o in result["outcomes"]]
    print(render_summary(outcomes, result["release_id"]))
    if out["run_url"]:
        print(f"run: {out['run_url']}")
    requested = [o for o in outcomes if o.status != "skipped"]
    if any(o.status == "superseded" for o in requested):
        superseded = next(o for o in requested if o.status == "superseded")
        print(f"superseded: {superseded.message.removeprefix('untouched: ')}; nothing was touched (--allow-older deploys it anyway)",
              file=sys.stderr)
        return SUPERSEDED
    return 0 if requested and all(o.status == "live" and o.live_release_id == result["release_id"] for o in requested) else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    runner = _runner(args)
    out = runner.run_rollback(args.app, args.env, args.to, lock_wait=args.lock_wait)
    result = out["result"]
    if isinstance(result, BaseException):
        print(f"error: {result.one_line() if isinstance(result, SlipwayError) else result}", file=sys.stderr)
        return exit_code_for(result)
    print(f"{args.app}/{args.env}: {result['message'] if result else 'nothing to do'}")
    if out["run_url"]:
        print(f"run: {out['run_url']}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from slipway.record.ledger import default_actor

    approver = args.approver or default_actor()
    if len(args.reason or "") > 500 or len(approver) > 100:
        raise CliError("--reason is limited to 500 characters and --approver to 100; shorten them")
    runner = _runner(args)
    out = runner.approve(args.app, args.env, approve=not args.reject, reason=args.reason or "", approver=approver)
    verb = "rejected" if args.reject else "approved"
    what = f"release {out['release_id']}" if out.get("release_id") else "the paused release"
    print(f"{args.app}/{args.env}: {what} {verb} by {approver}; the run picks the answer up within a few seconds"
          + (f" (run {out['run_url']})" if out["run_url"] else ""))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    """`slipway abort` / `slipway promote-now`: recorded in the ledger; the baking canary acts on it within seconds."""
    if len(args.reason or "") > 500:
        raise CliError("--reason is limited to 500 characters; shorten it")
    if args.command == "promote-now" and not (args.reason or "").strip():
        raise CliError("promote-now skips the remaining bakes: say why with --reason (it is recorded in the ledger)")
    out = _runner(args).request_control(args.app, args.env, args.command, args.reason or "")
    canary = out.get("canary") or {}
    then = ("traffic goes back to the stable version" if args.command == "abort" else "the remaining bakes are skipped and the "
            "release is promoted to 100%")
    print(f"{args.app}/{args.env}: {args.command} recorded for release {out['release_id']} (canary at {canary.get('percent')}% on "
          f"version {canary.get('version')}); within a few seconds {then}. `slipway history {args.app} --env {args.env}` shows it")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a spec without releasing it: the schema, the files it names in the repository, and (``--blocks``) the
    blocks it needs on the Prefect server."""
    from pathlib import Path

    from slipway.spec.loading import check_spec_against_checkout, load_spec

    path = Path(args.path)
    repo, rel = (path.parent, path.name) if path.is_file() else (path, args.spec)
    if not repo.is_dir():
        raise CliError(f"{args.path}: no such directory or file; give the repository's root or its slipway.yaml")
    spec = load_spec(repo, rel)
    check_spec_against_checkout(spec, repo)
    order = " → ".join(e.name for e in spec.environments)
    print(f"{rel or 'slipway.yaml'}: ok: app {spec.app}, {spec.artifact.type}, environments {order}")
    if args.blocks:
        for line in _runner(args).check_blocks(spec):
            print(f"  {line}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of slipway.yaml, for editors (yaml-language-server: $schema=...)."""
    from slipway.spec.schema import Spec

    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "slipway.yaml"
    _print_json(schema)
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    """Receive push webhooks; each verified push becomes a `slipway.push` event that the release deployment's trigger
    releases. Runs until interrupted."""
    import threading

    runner = _runner(args)
    secret = runner.read_secret(args.secret_block) if args.secret_block else os.environ.get("SLIPWAY_WEBHOOK_SECRET", "")
    if len(secret) < 16:
        raise CliError("no webhook secret: set SLIPWAY_WEBHOOK_SECRET (16 characters or more, the secret the git host signs "
                       "deliveries with) or pass --secret-block NAME (a Prefect Secret block)")
    server = runner.serve_webhook(args.host, args.port, secret.encode())
    print(f"receiving push webhooks on http://{args.host}:{server.server_address[1]}/hooks/push "
          "(GitHub, Gitea: HMAC signature; GitLab: token); Ctrl-C stops", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    out = _runner(args).unlock(args.app, args.env)
    print(out["detail"])
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    runner = _runner(args)
    entries, heads = runner.read_history(args.app, args.env)
    if not heads or (args.env and heads[args.env].last_seq == 0):
        where = f"app {args.app!r}" + (f" in environment {args.env!r}" if args.env else "")
        raise CliError(f"no ledger for {where}: nothing has been released there (check the name)")
    if args.json:
        _print_json({"entries": [e.model_dump(mode="json") for e in entries], "heads": {k: v.model_dump(mode="json") for k, v in heads.items()}})
        return 0
    from slipway.record.report import render_history

    for env, head in heads.items():
        live = f"{head.live.release_id} (version {head.live.version})" if head.live else "nothing live"
        extra = f"  [{head.status}]" if head.status not in ("live", "empty") else ""
        if head.canary:
            extra += f"  [canary: {head.canary.get('percent')}% on version {head.canary.get('version')}]"
        print(f"{env}: {live}{extra}")
    print()
    print(render_history(entries))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Read-only: deployment frequency, lead time, change failure rate and time to restore, from the ledger."""
    from slipway.record.stats import chart_png, render_text

    stats = _runner(args).read_stats(args.app, args.since)
    if args.app and not stats[0].environments:
        raise CliError(f"no ledger for app {args.app!r}: nothing has been released (check the name)")
    if args.json:
        _print_json([{"app": s.app, "since": s.since.isoformat(), "until": s.until.isoformat(), "production": s.production,
                      "environments": [s.row(e) for e in s.environments], "causes": s.causes} for s in stats])
    else:
        print(render_text(stats))
    if args.chart:
        try:
            print(f"chart: {chart_png(stats, args.chart)}")
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Read-only: the diagnosis recorded by the failed release, shown without starting a flow."""
    result = _runner(args).read_diagnosis(args.app, args.env)
    if args.json:
        _print_json({k: v for k, v in result.items() if k not in ("text", "markdown")})
        return 0
    print(result["text"])
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    from slipway.record import flags

    if args.flag_cmd == "set":  # validated before Prefect or AWS is reached
        flags.validate_flag(args.app, args.env, args.name, args.value)
    runner = _runner(args)
    if args.flag_cmd == "set":
        declared = runner.declared_environments(args.app)
        if declared is None:  # nothing to check against yet: flags may be set before the first release
            print(f"note: no release of {args.app} is recorded, so {args.env!r} cannot be checked against its slipway.yaml",
                  file=sys.stderr)
        elif args.env not in declared:
            raise CliError(f"{args.app} has no environment {args.env!r}: its slipway.yaml declares {', '.join(declared)}")
    ssm = runner.flags_client()
    if args.flag_cmd == "set":
        from slipway.record.ledger import default_actor

        value = flags.set_flag(ssm, args.app, args.env, args.name, args.value, actor=default_actor())
        print(f"{args.app}/{args.env}: flag {value.name}={value.value} (version {value.version}); "
              f"the function gets it as {flags.ENV_PREFIX}{value.name.upper()} at the next release to {args.env}")
        return 0
    if args.flag_cmd == "delete":
        flags.delete_flag(ssm, args.app, args.env, args.name)
        print(f"{args.app}/{args.env}: flag {args.name} removed; the function loses it at the next release to {args.env}")
        return 0
    if args.flag_cmd == "history":
        versions = flags.flag_history(ssm, args.app, args.env, args.name)
        if args.json:
            _print_json([v.model_dump(mode="json") for v in versions])
            return 0
        for v in versions:
            print(f"  v{v.version:<4} {v.last_modified or '-':<32} {v.value!r}  {v.description or ''}")
        return 0
    current = flags.read_flags(ssm, args.app, args.env)
    if args.json:
        _print_json({k: v.model_dump(mode="json") for k, v in current.items()})
        return 0
    if not current:
        print(f"{args.app}/{args.env}: no flags")
    for name, v in current.items():
        print(f"  {name}={v.value}  (version {v.version}, {v.last_modified or '-'})")
    return 0


# ---- parser -----------------------------------------------------------------------------------------------
MAX_LOCK_WAIT_S = 24 * 3600


def lock_wait_seconds(text: str) -> float:
    """``--lock-wait``: a number of seconds from 0 (refuse at once) to a day; nan, inf and negatives are refused."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_LOCK_WAIT_S:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to {MAX_LOCK_WAIT_S}")
    return value



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default prints usage too)
        raise CliError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="slipway", description="Build once from git, promote through verified stages, roll back automatically.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    local = sub.add_parser("local", help="the embedded local stack (Prefect server + local AWS)")
    lsub = local.add_subparsers(dest="local_cmd", required=True, parser_class=_Parser)
    lsub.add_parser("up", help="start it in the background (idempotent) and save blocks pointing at it")
    dn = lsub.add_parser("down", help="stop it (what it held is kept for the next `local up`)")
    dn.add_argument("--reset", action="store_true", help="also remove its state: runs, artifacts, ledger, flags, functions")
    st = lsub.add_parser("status", help="what runs and the environment to export")
    st.add_argument("--json", action="store_true")
    local.set_defaults(func=cmd_local)

    rel = sub.add_parser("release", help="release REPO_URL at --ref through the spec's environments")
    rel.add_argument("repo_url")
    rel.add_argument("--ref", default="HEAD", help="branch, tag or commit (default: the remote's HEAD)")
    rel.add_argument("--spec", default=None, help="spec path inside the repo (default slipway.yaml)")
    rel.add_argument("--allow-older", action="store_true",
                     help="a deliberate downgrade: deploy even where a newer commit is live (else that stage ends superseded, exit 4)")
    rel.add_argument("--override-freeze", default=None, metavar="REASON",
                     help="enter environments in a freeze window anyway: each asks for an approval, recorded with REASON")
    rel.add_argument("--only", nargs="+", metavar="ENV", default=None, help="release to these environments only")
    rel.add_argument("--git-token-block", default=None, metavar="NAME", help="Prefect Secret block holding a token for a private https repository")
    rel.add_argument("--lock-wait", type=lock_wait_seconds, default=600, metavar="SECONDS",
                     help="wait this long for another release of the same environment to finish (0: refuse at once)")
    rel.set_defaults(func=cmd_release)

    rb = sub.add_parser("rollback", help="put ENV back on the previous verified release (or --to RELEASE_ID)")
    rb.add_argument("app")
    rb.add_argument("env")
    rb.add_argument("--to", default=None, metavar="RELEASE_ID")
    rb.add_argument("--lock-wait", type=lock_wait_seconds, default=600, metavar="SECONDS", help="wait this long for a running release (0: refuse)")
    rb.set_defaults(func=cmd_rollback)

    ap = sub.add_parser("approve", help="answer a release paused for approval (or at an INCONCLUSIVE canary) in ENV")
    ap.add_argument("app")
    ap.add_argument("env")
    ap.add_argument("--reject", action="store_true", help="stop the release (a paused canary rolls back)")
    ap.add_argument("--reason", default="", help="recorded in the ledger")
    ap.add_argument("--approver", default=None, help="recorded in the ledger (default: user@host)")
    ap.set_defaults(func=cmd_approve)

    for name, what in (("abort", "stop the canary baking in ENV: traffic back to the stable version at once, the release ends aborted"),
                       ("promote-now", "skip the remaining bakes of the canary in ENV and promote it to 100%% (a hotfix)")):
        ctl = sub.add_parser(name, help=what)
        ctl.add_argument("app")
        ctl.add_argument("env")
        ctl.add_argument("--reason", default="", help="recorded in the ledger with who asked" + (" (required)" if name == "promote-now" else ""))
        ctl.set_defaults(func=cmd_control)

    chk = sub.add_parser("check", help="validate a slipway.yaml without releasing it (schema, files it names; --blocks: the blocks it needs)")
    chk.add_argument("path", nargs="?", default=".", help="the repository's root (default: .) or a spec file")
    chk.add_argument("--spec", default=None, help="spec path inside the repository (default slipway.yaml)")
    chk.add_argument("--blocks", action="store_true", help="also check the Prefect server has the blocks the spec needs")
    chk.set_defaults(func=cmd_check)

    sch = sub.add_parser("schema", help="print the JSON Schema of slipway.yaml (for editors)")
    sch.set_defaults(func=cmd_schema)

    wh = sub.add_parser("webhook", help="receive push webhooks (GitHub, GitLab, Gitea) and release the pushed commit through the "
                                        "release deployment's trigger")
    wh.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; put a TLS proxy in front)")
    wh.add_argument("--port", type=int, default=8088)
    wh.add_argument("--secret-block", default=None, help="a Prefect Secret block with the webhook secret (else SLIPWAY_WEBHOOK_SECRET)")
    wh.set_defaults(func=cmd_webhook)

    ul = sub.add_parser("unlock", help="free ENV's lock when no live run holds it (a holder killed, a server that lost its leases)")
    ul.add_argument("app")
    ul.add_argument("env")
    ul.set_defaults(func=cmd_unlock)

    hist = sub.add_parser("history", help="the ledger, newest first")
    hist.add_argument("app")
    hist.add_argument("--env", default=None)
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=cmd_history)
    stats = sub.add_parser("stats", help="the four DORA figures per app and environment, and failure causes by week (from the ledger)")
    stats.add_argument("app", nargs="?", default=None, help="one app (default: every app in the ledger)")
    stats.add_argument("--since", default="30d", help="window start: 30d, 12h, 8w or an ISO date (default 30d)")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--chart", metavar="FILE.png", default=None, help="also draw a PNG chart (needs matplotlib)")
    stats.set_defaults(func=cmd_stats)
    diag = sub.add_parser("diagnose", help="why did the latest release of APP fail? cause, evidence, diff against the last verified release")
    diag.add_argument("app")
    diag.add_argument("--env", default=None, help="the latest failure in this environment")
    diag.add_argument("--json", action="store_true")
    diag.set_defaults(func=cmd_diagnose)

    flag = sub.add_parser("flag", help="feature flags of an environment (SSM Parameter Store; applied at the next release)")
    fsub = flag.add_subparsers(dest="flag_cmd", required=True, parser_class=_Parser)
    fset = fsub.add_parser("set", help="set NAME to VALUE in APP/ENV (a new version)")
    for cmd in (fset, fsub.add_parser("delete", help="remove NAME from APP/ENV"), fsub.add_parser("history", help="every version of NAME")):
        cmd.add_argument("app")
        cmd.add_argument("env")
        cmd.add_argument("name")
    fset.add_argument("value")
    flist = fsub.add_parser("list", help="the flags of APP/ENV")
    flist.add_argument("app")
    flist.add_argument("env")
    for cmd in (flist, fsub.choices["history"]):
        cmd.add_argument("--json", action="store_true")
    flag.set_defaults(func=cmd_flag)
    return p


def _check_names(args: argparse.Namespace) -> None:
    """App and environment names become S3 keys and resource names: refused here, before Prefect or AWS is reached."""
    from slipway.spec.schema import NAME_RE

    for field in ("app", "env"):
        value = getattr(args, field, None)
        if value is not None and not NAME_RE.fullmatch(value):
            shown = value if len(value) <= 60 and value.isprintable() else repr(value[:60]) + "…"
            raise CliError(f"invalid {'app' if field == 'app' else 'environment'} name {shown!r}: use the name from slipway.yaml "
                           "(lowercase letters, digits and dashes)")


def main(argv: Sequence[str] | None = None, runner: Callable[[], Any] | None = None) -> int:
    """Run one command; ``runner`` makes the Prefect-side runner (default: ``deployments.runner``, imported lazily)."""
    try:
        args = build_parser().parse_args(argv)
        args.make_runner = runner or default_runner
        _check_names(args)
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except SlipwayError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line unless debugging
        if os.environ.get("SLIPWAY_DEBUG"):
            raise
        api_problem = prefect_api_problem(exc)
        if api_problem:
            print(f"error: {api_problem}", file=sys.stderr)
            return BAD_INPUT
        print(f"error: unexpected {type(exc).__name__}: {exc} (set SLIPWAY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def prefect_api_problem(exc: BaseException) -> str | None:
    """The Prefect API cannot be used as configured: refused (authentication) or not there (a stale PREFECT_API_URL)."""
    url = os.environ.get("PREFECT_API_URL") or "the configured PREFECT_API_URL"
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"the Prefect API at {url} refused the request ({status}): set PREFECT_API_AUTH_STRING=user:password for a "
                    "server with authentication (PREFECT_API_KEY for Prefect Cloud)")
        if type(exc).__name__ in ("ConnectError", "ConnectTimeout") or "Failed to reach API" in str(exc):
            return (f"no Prefect API answers at {url}: start it (`slipway local up`, then export what `slipway local status` "
                    "prints) or point PREFECT_API_URL at your server")
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """The ``slipway`` command's entry point: ``main``, then exit. After a command that ran flows, Prefect's queued logs
    and events are sent first and the process leaves without the interpreter's teardown: Prefect's service threads and
    event loop take about 0.7 s to wind down and have nothing left to do."""
    code = main()
    runner = sys.modules.get("deployments.runner")
    if runner is None or "prefect" not in sys.modules:  # nothing of Prefect's to send or to wind down
        sys.exit(code)
    try:
        runner.flush_prefect_workers()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

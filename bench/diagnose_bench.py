"""How often `slipway diagnose` names the right cause, on realistic broken releases it was not written for.
Run: `.venv/bin/python bench/diagnose_bench.py [--only ID ...]`.

Each case is a small overlay on examples/hello-lambda (released to one environment, dev): v1 is released and
verified, then the case breaks something the way teams do (a commit, a spec change, or a change made by hand in the
AWS account) and releases v2. The release fails; the `diagnose` flow classifies it. A case is right when the class is
the expected one AND the diagnosis names the evidence a good answer must name (a variable, a module, a spec field,
the hook's answer…). Prints the confusion matrix (expected × diagnosed), the accuracy (class alone, and class with
evidence) and every case that is wrong, and writes bench/out/diagnose_bench.json.

On the embedded local stack (its own SLIPWAY_HOME, stopped at the end). Two cases install PyYAML from the package
index (the release's own dependency step); everything else is offline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import EXAMPLE, ROOT, git, isolate  # noqa: E402

OUT = ROOT / "bench" / "out"
CLASSES = ["code-defect", "incompatible-artifact", "configuration", "network-or-aws", "too-large-or-slow", "drift", "lifecycle-hook",
           "unclassified"]


@dataclass
class Case:
    id: str
    expected: str
    must_name: list[str]  # each must appear (case-insensitive) in the diagnosis: evidence, reasoning, next action or diff
    story: str
    breaks: Callable[["Repo", "Stack"], None]
    spec_extra: str = ""  # YAML lines under the dev environment, in v1 and v2
    v1: Callable[["Repo"], None] | None = None  # extra v1 setup (before the first release)


@dataclass
class Stack:
    info: dict
    lam: object = None
    webhook_url: str = ""
    saved: list[str] = field(default_factory=list)


class Repo:
    def __init__(self, path: Path, app: str) -> None:
        self.path, self.app = path, app

    def write(self, rel: str, text: str) -> "Repo":
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return self

    def edit(self, rel: str, old: str, new: str) -> "Repo":
        text = (self.path / rel).read_text()
        assert old in text, f"{rel}: {old!r} not found"
        return self.write(rel, text.replace(old, new, 1))

    def append(self, rel: str, text: str) -> "Repo":
        return self.write(rel, (self.path / rel).read_text() + "\n" + text)

    def remove(self, rel: str) -> "Repo":
        (self.path / rel).unlink()
        return self

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", message)
        return git(self.path, "rev-parse", "HEAD")

    @property
    def function(self) -> str:
        return f"{self.app}-dev"


APP = "src/app.py"
TESTS = "tests/test_app.py"


def code(repo: Repo, old: str, new: str, message: str) -> None:
    repo.edit(APP, old, new).commit(message)


# ---- the cases ------------------------------------------------------------------------------------------------------
def _degraded_health(r: Repo, s: Stack) -> None:
    r.edit(APP, '{"ok": True, "version": VERSION}', '{"ok": CACHE_WARM, "version": VERSION}')
    r.edit(APP, 'VERSION = "1"', 'VERSION = "2"\nCACHE_WARM = False  # warmed by the first request (TODO)')
    r.edit(TESTS, 'assert json.loads(reply["body"])["ok"] is True', 'assert "ok" in json.loads(reply["body"])').commit("health reports cache state")


def _lookup_table(r: Repo, s: Stack) -> None:
    code(r, 'name = (event.get("queryStringParameters") or {}).get("name", "world")',
         'name = (event.get("queryStringParameters") or {}).get("name", "world")\n'
         '    salutation = {"a": "hi", "g": "hey", "w": "hello"}[name[0]]', "salutations by first letter")


def _tests_fail(r: Repo, s: Stack) -> None:
    code(r, 'f"hello, {name}"', 'f"Hello {name}!"', "friendlier greeting")


def _syntax_error(r: Repo, s: Stack) -> None:
    r.write("src/formatting.py", "def greeting(name):\n    return f'hello, {name}'\n\ndef shout(name)\n    return name.upper()\n")
    code(r, "import json\n", "import json\n\nfrom formatting import greeting\n", "move greeting to a module")


def _health_500(r: Repo, s: Stack) -> None:
    r.edit(APP, 'return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION})}',
           'return {"statusCode": 503 if not READY else 200, "body": json.dumps({"ok": True, "version": VERSION})}')
    r.edit(APP, 'VERSION = "1"', 'VERSION = "2"\nREADY = False')
    r.remove(TESTS).write(TESTS, "from app import handler\n\n\ndef test_greets():\n    assert handler({}, None)['statusCode'] == 200\n")
    r.commit("readiness gate")


def _recursion(r: Repo, s: Stack) -> None:
    code(r, "def handler(event, context):\n",
         "def normalise(name):\n    return normalise(name.strip()) if name else name\n\n\ndef handler(event, context):\n", "x")
    r.edit(APP, 'return {"statusCode": 200, "body": json.dumps({"message": f"hello, {name}", "version": VERSION})}',
           'if name != "ada":\n        name = normalise(name)\n'
           '    return {"statusCode": 200, "body": json.dumps({"message": f"hello, {name}", "version": VERSION})}').commit("normalise names")


def _canary_errors(r: Repo, s: Stack) -> None:
    r.write(APP, (EXAMPLE / "demo" / "app_v3_flaky.py").read_text()).commit("v3: new pricing client")


CANARY = ("    strategy: {canary: {steps: [50, 100], bake: 6s}}\n"
          "    traffic: {rate: 25/s, events: [{queryStringParameters: {name: ada}}, {queryStringParameters: {name: grace}}]}\n"
          "    analysis: {min_requests: 20, min_latency_periods: 3, max_latency_increase: 3, inconclusive: fail}\n")


def _yaml_v1(r: Repo) -> None:
    r.write("requirements.txt", "PyYAML==6.0.2\n")
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  requirements: requirements.txt\n")
    r.edit(APP, "import json\n", "import json\n\nimport yaml\n")


def _dependency_dropped(r: Repo, s: Stack) -> None:
    r.write("requirements.txt", "# runtime dependencies\n").commit("drop unused dependencies")


def _dev_only_dependency(r: Repo, s: Stack) -> None:
    r.write("requirements-dev.txt", "PyYAML==6.0.2\n")
    r.edit("slipway.yaml", '  command: ["python", "-m", "pytest", "-q"]\n',
           '  command: ["python", "-m", "pytest", "-q"]\n  requirements: [requirements-dev.txt]\n')
    code(r, "import json\n", "import json\n\nimport yaml\n", "config from YAML")


def _dev_only_lazy(r: Repo, s: Stack) -> None:
    r.write("requirements-dev.txt", "PyYAML==6.0.2\n")
    r.edit("slipway.yaml", '  command: ["python", "-m", "pytest", "-q"]\n',
           '  command: ["python", "-m", "pytest", "-q"]\n  requirements: [requirements-dev.txt]\n')
    code(r, '    name = (event.get("queryStringParameters") or {}).get("name", "world")',
         '    import yaml  # only the greeting path needs it\n\n'
         '    name = yaml.safe_load(str((event.get("queryStringParameters") or {}).get("name", "world")))', "names may be YAML")


def _outside_source(r: Repo, s: Stack) -> None:
    r.write("shared/__init__.py", "").write("shared/text.py", "def title(name):\n    return name.title()\n")
    r.append("tests/conftest.py", "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # shared/ at the root\n")
    code(r, "import json\n", "import json\n\nfrom shared.text import title\n", "shared helpers for all our lambdas")


def _spec_handler_typo(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "handler: app.handler", "handler: main.handler").commit("rename entry point")


def _handler_renamed(r: Repo, s: Stack) -> None:
    code(r, "def handler(event, context):", "def lambda_handler(event, context):", "AWS naming")
    r.edit(TESTS, "from app import handler", "from app import lambda_handler as handler").commit("tests follow")


def _env_at_call(r: Repo, s: Stack) -> None:
    r.append("tests/conftest.py", "import os\n\nos.environ.setdefault('PAYMENTS_URL', 'https://payments.test')\n")
    code(r, "import json\n", "import json\nimport os\n", "x")
    code(r, '    name = (event.get("queryStringParameters") or {}).get("name", "world")',
         '    name = (event.get("queryStringParameters") or {}).get("name", "world")\n'
         '    if os.environ["PAYMENTS_URL"].startswith("http:"):\n        name += " (insecure)"', "payments endpoint")


def _env_at_import(r: Repo, s: Stack) -> None:
    r.append("tests/conftest.py", "import os\n\nos.environ.setdefault('DB_HOST', 'localhost')\n")
    code(r, "import json\n", "import json\nimport os\n\nDB_HOST = os.environ[\"DB_HOST\"]\n", "database host from the environment")


def _timeout_lowered(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  timeout: 1\n").commit("tighter timeout: we are fast")


def _timeout_v1(r: Repo) -> None:
    r.edit(APP, "import json\n", "import json\nimport time\n")
    r.edit(APP, '    name = (event.get("queryStringParameters") or {}).get("name", "world")',
           '    time.sleep(1.5)  # the downstream greeting service\n    name = (event.get("queryStringParameters") or {}).get("name", "world")')


def _style_v1(r: Repo) -> None:
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  environment: {GREETING_STYLE: plain}\n")
    r.edit(APP, "import json\n", "import json\nimport os\n\nSTYLES = {'plain': '{}', 'loud': '{}!'}\n")
    r.edit(APP, '    name = (event.get("queryStringParameters") or {}).get("name", "world")',
           '    name = (event.get("queryStringParameters") or {}).get("name", "world")\n'
           '    name = STYLES[os.environ.get("GREETING_STYLE", "plain")].format(name)')


def _style_changed(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "{GREETING_STYLE: plain}", "{GREETING_STYLE: fancy}").commit("fancier greetings in dev")


def _slow_v1(r: Repo) -> None:
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  timeout: 2\n")


def _slow_code(r: Repo, s: Stack) -> None:
    code(r, "import json\n", "import json\nimport time\n", "x")
    code(r, '    name = (event.get("queryStringParameters") or {}).get("name", "world")',
         '    name = (event.get("queryStringParameters") or {}).get("name", "world")\n'
         '    if name != "ada":\n        time.sleep(3)  # look the name up in the CRM', "personalised greetings")


def _spec_key_typo(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  enviroment: {LOG_LEVEL: debug}\n").commit("debug logs")


def _unknown_secret(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  environment:\n    API_KEY: {secret: prefect:payments-api-key}\n")
    r.commit("api key from a secret")


def _missing_alarm(r: Repo, s: Stack) -> None:
    r.edit("slipway.yaml", "  - name: dev\n", "  - name: dev\n    alarms: [checkout-5xx-rate]\n").commit("gate on the 5xx alarm")


def _test_requirement_typo(r: Repo, s: Stack) -> None:
    r.write("requirements-dev.txt", "pytest-mocks==99.0.0\n")
    r.edit("slipway.yaml", '  command: ["python", "-m", "pytest", "-q"]\n',
           '  command: ["python", "-m", "pytest", "-q"]\n  requirements: [requirements-dev.txt]\n').commit("mocking for tests")


def _pin_missing(r: Repo, s: Stack) -> None:
    r.write("requirements.txt", "PyYAML==6.0.2\nrequests==99.0.0  # the newest, for the security fix\n").commit("bump requests")


def _requirements_file_missing(r: Repo, s: Stack) -> None:
    r.remove("requirements.txt").commit("requirements moved to pyproject.toml")


def _index_down(r: Repo, s: Stack) -> None:
    r.write("requirements.txt", "--index-url http://127.0.0.1:9/simple\nPyYAML==6.0.2\n")
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  requirements: requirements.txt\n")
    r.commit("use the company mirror")


def _aws_unreachable(r: Repo, s: Stack) -> None:
    _target_block(s, "dx-outage", "http://127.0.0.1:9")  # the account's endpoint stops answering
    r.edit(APP, 'VERSION = "1"', 'VERSION = "2"').commit("v2")


def _target_block(s: Stack, name: str, endpoint: str) -> None:
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import LambdaTargetBlock

    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))
    LambdaTargetBlock(credentials=creds, region="us-east-1", role_arn=s.info["role_arn"], metrics_period_s=1,
                      metrics_delay_s=0).save(name, overwrite=True)


def _fat_asset(r: Repo, s: Stack) -> None:
    r.write("src/assets/model.bin", os.urandom(3 * 1024 * 1024).hex())  # an ML model someone committed
    r.edit("slipway.yaml", "  runtime: python3.11\n", "  runtime: python3.11\n  max_unzipped_mb: 5\n").commit("bundle the model")


def _v2(r: Repo) -> None:
    r.edit(APP, 'VERSION = "1"', 'VERSION = "2"').commit("v2")


def _hand_published(r: Repo, s: Stack) -> None:
    lam = s.lam
    lam.update_function_configuration(FunctionName=r.function, Description="hotfix from the console")
    _wait_updated(lam, r.function)
    version = lam.publish_version(FunctionName=r.function, Description="hotfix")["Version"]
    lam.update_alias(FunctionName=r.function, Name="live", FunctionVersion=version)
    _v2(r)


def _hand_canary(r: Repo, s: Stack) -> None:
    lam = s.lam
    lam.update_function_configuration(FunctionName=r.function, Timeout=7)
    _wait_updated(lam, r.function)
    version = lam.publish_version(FunctionName=r.function)["Version"]
    live = lam.get_alias(FunctionName=r.function, Name="live")["FunctionVersion"]
    lam.update_alias(FunctionName=r.function, Name="live", FunctionVersion=live,
                     RoutingConfig={"AdditionalVersionWeights": {version: 0.1}})
    _v2(r)


def _console_env(r: Repo, s: Stack) -> None:
    s.lam.update_function_configuration(FunctionName=r.function, Environment={"Variables": {"FEATURE_X": "on"}})
    _v2(r)


def _tag_removed(r: Repo, s: Stack) -> None:
    arn = s.lam.get_function(FunctionName=r.function)["Configuration"]["FunctionArn"]
    s.lam.untag_resource(Resource=arn, TagKeys=["slipway:app"])
    _v2(r)


def _wait_updated(lam, name: str) -> None:
    for _ in range(50):
        if lam.get_function_configuration(FunctionName=name).get("LastUpdateStatus", "Successful") == "Successful":
            return
        time.sleep(0.1)


def _hook_refuses(r: Repo, s: Stack) -> None:
    _v2(r)


CASES = [
    Case("degraded-health", "code-defect", ["health"], "health now reports a cache flag that starts false", _degraded_health),
    Case("lookup-keyerror", "code-defect", ["KeyError", "greet"], "a lookup table misses the smoke check's initial", _lookup_table),
    Case("tests-fail", "code-defect", ["test_greets_by_name"], "a wording change the tests catch", _tests_fail),
    Case("syntax-error-module", "code-defect", ["SyntaxError"], "a new module with a syntax error", _syntax_error),
    Case("readiness-503", "code-defect", ["health", "503"], "health answers 503 and its test was deleted", _health_500),
    Case("infinite-recursion", "code-defect", ["RecursionError"], "a normaliser that never ends", _recursion),
    Case("canary-30pct-errors", "code-defect", ["error_rate"], "a flaky client fails 30% of calls under a canary",
         _canary_errors, spec_extra=CANARY),
    Case("dependency-dropped", "incompatible-artifact", ["yaml"], "PyYAML removed from requirements.txt, still imported",
         _dependency_dropped, v1=_yaml_v1),
    Case("dev-only-dependency", "incompatible-artifact", ["yaml"], "PyYAML only in the test requirements, imported at the top",
         _dev_only_dependency),
    Case("dev-only-dependency-lazy", "incompatible-artifact", ["yaml"], "PyYAML only in the test requirements, imported in the handler",
         _dev_only_lazy),
    Case("first-party-outside-source", "incompatible-artifact", ["shared"], "a shared package at the repository root, outside source",
         _outside_source),
    Case("spec-handler-typo", "configuration", ["main"], "slipway.yaml names a module that does not exist", _spec_handler_typo),
    Case("handler-renamed", "configuration", ["handler"], "the function was renamed, the spec still names the old one", _handler_renamed),
    Case("env-var-at-call", "configuration", ["PAYMENTS_URL"], "the handler needs a variable nobody set", _env_at_call),
    Case("env-var-at-import", "configuration", ["DB_HOST"], "module code reads a variable at import", _env_at_import),
    Case("timeout-lowered", "configuration", ["timeout"], "only slipway.yaml changed: timeout 30 → 1 on a 1.5 s handler",
         _timeout_lowered, v1=_timeout_v1),
    Case("spec-env-value-changed", "configuration", ["GREETING_STYLE"], "only slipway.yaml changed: an environment variable's value",
         _style_changed, v1=_style_v1),
    Case("slow-code", "code-defect", ["timeout"], "new code makes a slow call; the spec's timeout did not change", _slow_code, v1=_slow_v1),
    Case("spec-key-typo", "configuration", ["enviroment"], "a typo'd key in slipway.yaml", _spec_key_typo),
    Case("unknown-secret", "configuration", ["payments-api-key"], "a secret reference to a block nobody created", _unknown_secret),
    Case("missing-alarm", "configuration", ["checkout-5xx-rate"], "an alarm gate on an alarm that does not exist", _missing_alarm),
    Case("test-requirement-typo", "configuration", ["pytest-mocks"], "a test requirement that does not exist", _test_requirement_typo),
    Case("pinned-version-missing", "incompatible-artifact", ["requests"], "a pin to a version that does not exist",
         _pin_missing, v1=_yaml_v1),
    Case("requirements-file-missing", "configuration", ["requirements.txt"], "the spec still names a requirements file that was removed",
         _requirements_file_missing, v1=_yaml_v1),
    Case("index-unreachable", "network-or-aws", ["re-run"], "the package mirror refuses connections", _index_down),
    Case("aws-unreachable", "network-or-aws", ["re-run"], "the account's endpoint stops answering", _aws_unreachable,
         spec_extra="    target: dx-outage\n"),
    Case("fat-asset", "too-large-or-slow", ["model.bin"], "a model file pushes the zip over the team's budget", _fat_asset),
    Case("hand-published-version", "drift", ["rollback"], "someone published a hotfix from the console and moved the alias",
         _hand_published),
    Case("hand-made-canary", "drift", ["weight"], "someone set a routing weight on live by hand", _hand_canary),
    Case("console-env-change", "drift", ["heal"], "someone changed $LATEST's environment in the console", _console_env),
    Case("ownership-tag-removed", "drift", ["slipway:app"], "the ownership tag was removed", _tag_removed),
    Case("before-hook-refuses", "lifecycle-hook", ["migration 7 pending"], "the pre-traffic webhook refuses the release",
         _hook_refuses, spec_extra="    hooks: {before_traffic: [{webhook: {url: 'WEBHOOK/refuse'}}]}\n"),
]


# ---- running ---------------------------------------------------------------------------------------------------------
def make_repo(work: Path, case: Case, stack: Stack) -> Repo:
    import shutil

    app = f"dx-{case.id}"[:40].rstrip("-")
    path = work / app
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache", "slipway.canary.yaml"))
    spec = (path / "slipway.yaml").read_text().replace("app: hello\n", f"app: {app}\n")
    extra = case.spec_extra.replace("WEBHOOK", stack.webhook_url)
    spec = spec[: spec.index("environments:")] + "environments:\n  - name: dev\n" + extra
    (path / "slipway.yaml").write_text(spec)
    repo = Repo(path, app)
    git(path, "init", "-q", "-b", "main")
    if case.v1:
        case.v1(repo)
    repo.commit("v1")
    return repo


def run_case(work: Path, case: Case, stack: Stack) -> dict:
    from flows.diagnose import diagnose
    from flows.release import release

    if case.id == "aws-unreachable":
        _target_block(stack, "dx-outage", stack.info["env"]["AWS_ENDPOINT_URL"])
    repo = make_repo(work, case, stack)
    t0 = time.perf_counter()
    first = release(repo_url=f"file://{repo.path}", ref="main", return_state=True)
    if not first.is_completed():
        return {"id": case.id, "expected": case.expected, "got": "setup-failed", "error": str(first.result(raise_on_failure=False))[:300]}
    case.breaks(repo, stack)
    second = release(repo_url=f"file://{repo.path}", ref="main", return_state=True)
    if second.is_completed():
        return {"id": case.id, "expected": case.expected, "got": "not-failed", "error": "v2 was released: the case broke nothing"}
    try:
        d = diagnose(app=repo.app, environment="dev")
    except Exception as exc:  # noqa: BLE001 - no record for the dev environment: ask for the app's latest
        try:
            d = diagnose(app=repo.app)
        except Exception:  # noqa: BLE001
            return {"id": case.id, "expected": case.expected, "got": "no-diagnosis", "error": str(exc)[:300]}
    text = json.dumps({k: d.get(k) for k in ("evidence", "reasoning", "next_action", "check", "error", "diff")}, default=str).lower()
    missing = [m for m in case.must_name if m.lower() not in text]
    return {"id": case.id, "expected": case.expected, "got": d["classification"], "stage": d.get("stage"), "check": d.get("check"),
            "missing_evidence": missing, "reasoning": d.get("reasoning"), "next_action": d.get("next_action"),
            "seconds": round(time.perf_counter() - t0, 1), "text": d.get("text")}


def start_webhook() -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            first = body.get("stable_version") is None  # the first release: nothing to migrate from
            text = b"ok" if first else b"refused: database migration 7 pending on the shared schema"
            self.send_response(200 if first else 409)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def render(results: list[dict]) -> str:
    labels = CLASSES + sorted({r["got"] for r in results} - set(CLASSES))
    used = [c for c in labels if any(r["expected"] == c or r["got"] == c for r in results)]
    short = {c: c.replace("incompatible-artifact", "incompat").replace("too-large-or-slow", "too-large").replace("network-or-aws", "network")
             .replace("configuration", "config").replace("lifecycle-hook", "hook").replace("unclassified", "unclass") for c in used}
    width = max(len(s) for s in short.values()) + 1
    lines = ["confusion matrix (rows: expected, columns: diagnosed)", " " * 14 + "".join(f"{short[c]:>{width}}" for c in used)]
    for exp in used:
        if not any(r["expected"] == exp for r in results):
            continue
        lines.append(f"{short[exp]:<14}" + "".join(f"{sum(1 for r in results if r['expected'] == exp and r['got'] == got) or '.':>{width}}"
                                                   for got in used))
    n = len(results)
    class_ok = [r for r in results if r["got"] == r["expected"]]
    full_ok = [r for r in class_ok if not r.get("missing_evidence")]
    lines += ["", f"class right: {len(class_ok)}/{n} ({len(class_ok) / n:.0%}); class and evidence right: {len(full_ok)}/{n} "
                  f"({len(full_ok) / n:.0%})", ""]
    wrong = [r for r in results if r not in full_ok]
    if wrong:
        lines.append("wrong:")
        for r in wrong:
            why = (f"diagnosed {r['got']}, expected {r['expected']}" if r["got"] != r["expected"] else
                   f"class right, evidence missing: {', '.join(r['missing_evidence'])}")
            lines.append(f"  {r['id']}: {why}" + (f" — {r.get('error')}" if r.get("error") else "")
                         + (f"\n      reasoning: {(r.get('reasoning') or [''])[0]}" if r.get("reasoning") else ""))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="case ids")
    args = parser.parse_args()
    work = isolate("slipway-diagnose-bench-")
    from deployments.local_blocks import save_local_blocks
    from slipway.local import stack as localstack

    info = localstack.up(work / "home")
    results: list[dict] = []
    try:
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        import boto3

        with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"], localstack.REGION)
            stack = Stack(info=info, webhook_url=start_webhook())
            stack.lam = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing").client(
                "lambda", endpoint_url=info["env"]["AWS_ENDPOINT_URL"])
            for case in CASES:
                if args.only and case.id not in args.only:
                    continue
                try:
                    result = run_case(work / "repos", case, stack)
                except Exception as exc:  # noqa: BLE001 - a broken case is reported, the others still run
                    result = {"id": case.id, "expected": case.expected, "got": "bench-error", "error": f"{type(exc).__name__}: {exc}"[:300]}
                results.append(result)
                mark = "ok " if result["got"] == case.expected and not result.get("missing_evidence") else "XX "
                print(f"{mark}{case.id:<28} expected {case.expected:<22} got {result['got']}"
                      + (f" (missing: {', '.join(result['missing_evidence'])})" if result.get("missing_evidence") else "")
                      + (f" — {result['error']}" if result.get("error") else ""), flush=True)
    finally:
        from deployments.runner import flush_prefect_workers

        flush_prefect_workers()
        localstack.down(work / "home")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "diagnose_bench.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

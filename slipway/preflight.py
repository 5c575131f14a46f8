"""Preflight checks on a built Lambda zip, before anything is published or deployed (fail fast, touch nothing).

1. **Imports resolve**: every module-level ``import`` of the app's own modules (the ``.py`` files of the source
   directory, not vendored packages) names a module that is in the zip, in the runtime's standard library, or
   provided by the Lambda Python runtime (boto3, botocore). A module imported but not packaged is the classic
   "works on my machine" failure: the tests pass because the developer's venv has it.
2. **The handler imports**: the zip is extracted and the handler's module imported in an isolated interpreter
   (``python -I -S``: the standard library and the zip only, with the runtime-provided modules stubbed), and the
   handler must be a callable attribute. Catches code that fails at import time (a missing environment variable read
   at module level, a typo in a module-level name) that static checks cannot see.

Plain functions, no Prefect. Each check returns a ``PreflightCheck``; ``raise_for_failures`` turns failures into
one ``PreflightFailed`` naming the first problem and its fix.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from slipway.childenv import scrubbed_environ
from slipway.errors import SlipwayError

RUNTIME_PROVIDED = {"boto3", "botocore", "awslambdaric", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
IMPORT_TIMEOUT_S = 30


class PreflightFailed(SlipwayError):
    stage = "preflight"
    ref = "preflight-failed"


@dataclass(frozen=True)
class PreflightCheck:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def zip_top_level_names(zf: zipfile.ZipFile) -> set[str]:
    """Importable top-level names in the zip: packages (directories), modules (``x.py``), extensions (``x.*.so``)."""
    names: set[str] = set()
    for entry in zf.namelist():
        first = entry.split("/", 1)[0]
        if "/" in entry:
            names.add(first)
        elif first.endswith(".py"):
            names.add(first[:-3])
        elif first.endswith((".so", ".pyd")):
            names.add(first.split(".", 1)[0])
    return names


def unresolved_imports(zip_path: Path, source_files: list[str]) -> list[str]:
    """``file:line: import name`` for module-level imports of the app's own files that nothing provides."""
    with zipfile.ZipFile(zip_path) as zf:
        available = zip_top_level_names(zf) | set(sys.stdlib_module_names) | RUNTIME_PROVIDED | {"__future__"}
        missing = []
        for rel in source_files:
            try:
                tree = ast.parse(zf.read(rel).decode("utf-8", errors="replace"), filename=rel)
            except (KeyError, SyntaxError):
                continue  # not in the zip / a syntax error: the import check below reports it
            for node in tree.body:
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                missing += [f"{rel}:{node.lineno}: import {top}" for top in tops if top not in available]
    return missing


def check_imports(zip_path: Path, source_files: list[str], requirements: str | None) -> PreflightCheck:
    missing = unresolved_imports(zip_path, source_files)
    if not missing:
        return PreflightCheck("imports resolve", True, f"every module-level import of {len(source_files)} source file(s) is packaged, "
                              "in the standard library or provided by the Lambda runtime")
    names = sorted({m.rsplit(" ", 1)[1] for m in missing})
    where = requirements or "a requirements file (artifact.requirements)"
    return PreflightCheck("imports resolve", False,
                          f"imported but not packaged: {', '.join(names)} ({'; '.join(missing[:3])}); add {'them' if len(names) > 1 else 'it'} to {where}")


_IMPORT_SCRIPT = r"""
import importlib, importlib.abc, importlib.machinery, json, sys, types
root, module_name, function_name, provided = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split(","))
class _Anything:
    # what boto3.client("s3") & co. give at import time here: anything, callable, any attribute
    def __call__(self, *a, **k): return self
    def __getattr__(self, name): return self
    def __iter__(self): return iter(())
class _Provided(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # modules the Lambda runtime ships (boto3 & co.): present there, absent from this bare interpreter
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name.split(".")[0] in provided else None
    def create_module(self, spec):
        module = types.ModuleType(spec.name); module.__path__ = []; module.__getattr__ = lambda attr: _Anything()
        return module
    def exec_module(self, module):
        pass
sys.meta_path.append(_Provided())
sys.path.insert(0, root)
try:
    module = importlib.import_module(module_name)
except BaseException as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})); sys.exit(0)
handler = getattr(module, function_name, None)
print(json.dumps({"ok": callable(handler), "error": None if callable(handler) else f"{module_name}.{function_name} is not a callable"}))
"""


def check_handler_imports(zip_path: Path, handler: str, python: str = sys.executable) -> PreflightCheck:
    """Import the handler from the extracted zip in an isolated interpreter with a scrubbed environment."""
    module_name, function_name = handler.rsplit(".", 1)
    with tempfile.TemporaryDirectory(prefix="slipway-preflight-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        try:
            done = subprocess.run(
                [python, "-I", "-S", "-c", _IMPORT_SCRIPT, tmp, module_name, function_name, ",".join(sorted(RUNTIME_PROVIDED))],
                cwd=tmp, env={**scrubbed_environ(), "HOME": tmp}, capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return PreflightCheck("handler imports", False, f"importing {module_name} took over {IMPORT_TIMEOUT_S}s "
                                  "(module-level work: move it into the handler or a lazy initialiser)")
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return PreflightCheck("handler imports", False, f"the import check crashed: {done.stderr.strip()[-300:]}")
    if result["ok"]:
        return PreflightCheck("handler imports", True, f"{handler} imports from the built zip in an isolated interpreter")
    return PreflightCheck("handler imports", False, f"{handler} does not import from the built zip: {result['error']}")


def lambda_zip_checks(zip_path: Path, *, handler: str, source_files: list[str], requirements: str | None) -> list[PreflightCheck]:
    return [check_imports(zip_path, source_files, requirements), check_handler_imports(zip_path, handler)]


def raise_for_failures(checks: list[PreflightCheck]) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise PreflightFailed(
            f"preflight check '{first.name}' failed: {first.detail}{more}",
            hint="nothing was published or deployed; fix the app and release again",
            evidence={"checks": [c.to_dict() for c in checks]},
        )

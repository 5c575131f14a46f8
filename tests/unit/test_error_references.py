"""Every error reference is declared once (slipway/core/errors.py REFERENCES) and the code keeps to the table:
a reference raised anywhere is declared, a declared one is raised somewhere, the diagnosis matches only declared
ones, and the CLI's exit codes come from the declaration."""

import ast
import re
from pathlib import Path

import pytest

from slipway.core import errors
from slipway.core.errors import REFERENCES, SlipwayError, exit_code_for

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("slipway", "flows", "tasks", "blocks", "deployments") for p in sorted((ROOT / folder).rglob("*.py"))]
KEBAB = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def _literals(node):
    """Kebab-case string constants in an expression, except the attribute names given to getattr()."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEBAB.fullmatch(node.value):
        yield node.value
    for child in ast.iter_child_nodes(node):
        yield from _literals(child)


def raised_references(path: Path) -> set[str]:
    """References given where errors and checks are made: ``ref=...`` arguments and parameter defaults, ``ref =``
    class attributes and literal assignments, ``x.ref = ...`` and ``{"ref": ...}``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "ref":
                    found |= set(_literals(kw.value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            literal = isinstance(node.value, (ast.Constant, ast.IfExp))
            if any((isinstance(t, ast.Name) and t.id == "ref" and literal) or (isinstance(t, ast.Attribute) and t.attr == "ref")
                   for t in targets):
                found |= set(_literals(node.value))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.args
            defaults = [None] * (len(positional) - len(node.args.defaults)) + list(node.args.defaults)
            for arg, default in [*zip(positional, defaults), *zip(node.args.kwonlyargs, node.args.kw_defaults)]:
                if arg.arg == "ref" and default is not None:
                    found |= set(_literals(default))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "ref" and value is not None:
                    found |= set(_literals(value))
    return found


def matched_by_diagnosis() -> set[str]:
    """String constants the diagnosis compares an error's reference with."""
    out: set[str] = set()
    trees = [ast.parse((ROOT / "slipway" / "record" / name).read_text()) for name in ("diagnose.py", "rules.py")]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            calls = {n.args[0].value for n in ast.walk(node) if isinstance(n, ast.Call) and n.args
                     and isinstance(n.args[0], ast.Constant) and n.args[0].value == "ref"}
            if "ref" in names or calls:
                out |= set(_literals(node)) - {"ref"}
    return out


def all_raised() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in SOURCES:
        for ref in raised_references(path):
            where.setdefault(ref, []).append(str(path.relative_to(ROOT)))
    return where


def test_every_reference_raised_is_declared():
    undeclared = {ref: files for ref, files in all_raised().items() if ref not in REFERENCES}
    assert undeclared == {}


def test_every_declared_reference_is_raised_somewhere():
    raised = all_raised()
    assert sorted(ref for ref in REFERENCES if ref not in raised) == []


def test_every_reference_the_diagnosis_matches_is_declared_and_raised():
    matched = matched_by_diagnosis()
    assert matched, "the scan found no reference compared in diagnose.py: the test no longer sees the rules"
    assert sorted(matched - set(REFERENCES)) == []
    assert sorted(matched - set(all_raised())) == []


def test_each_error_class_default_reference_is_declared_with_that_class():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, SlipwayError)]
    for cls in classes:
        assert cls.ref in REFERENCES, cls
        assert any(issubclass(cls, declared) for declared in REFERENCES[cls.ref].raised_as), cls


@pytest.mark.parametrize(("error", "code"), [
    (errors.SpecError("x"), 2),
    (errors.InputError("x"), 2),
    (errors.CredentialsError("x", ref="region-missing"), 2),
    (errors.DeployError("x"), 1),
    (errors.DeployError("x", ref="environment-locked"), 2),
    (errors.RollbackError("x", ref="nothing-to-roll-back-to"), 2),
    (errors.RollbackError("x"), 1),
    (errors.ReleaseFailed("x", ref="nothing-deployed"), 2),
    (errors.TestsFailed("x"), 1),
    (RuntimeError("x"), 1),
])
def test_exit_codes_come_from_the_declaration(error, code):
    assert exit_code_for(error) == code


def test_the_cli_takes_exit_codes_from_the_errors_only():
    text = (ROOT / "slipway" / "cli" / "main.py").read_text()
    assert "exit_code_for(" in text
    assert not re.search(r"return 2 if|USER_ERROR_REFS", text)

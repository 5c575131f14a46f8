"""slipway/ never imports Prefect or the Prefect-side packages (STYLE.md: arrows point down only)."""

import ast
from pathlib import Path

FORBIDDEN = ("prefect", "prefect_aws", "flows", "tasks", "blocks", "deployments")
ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_slipway_package_imports_no_prefect_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "slipway").rglob("*.py"))
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_the_cli_reaches_prefect_only_through_importlib():
    text = (ROOT / "slipway" / "cli.py").read_text()
    assert 'importlib.import_module("deployments.runner")' in text

"""The architecture, enforced: which folder of ``slipway/`` may import which (arrows point down only), and
``slipway/`` never imports Prefect or the Prefect-side packages (flows, tasks, blocks, deployments)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "slipway"
FORBIDDEN = ("prefect", "prefect_aws", "flows", "tasks", "blocks", "deployments")

# folder -> the folders it may import (besides itself). Read it bottom-up: core is the floor; the CLI is the roof.
ALLOWED = {
    "core": set(),                       # errors and references, models, AWS clients, home, child environments
    "spec": {"core"},                    # slipway.yaml: schema and loading
    "source": {"core", "spec"},          # clone a pinned commit, run the repository's tests
    "artifact": {"core", "spec"},        # build once (zip, image), preflight, registry, immutable store
    "verify": {"core"},                  # checks, traffic, metrics, alarms, canary statistics
    "targets": {"core", "verify"},       # Lambda, Docker host (+ nginx), ECS behind one protocol
    "record": {"core", "spec"},          # ledger, flags, reports, diagnosis
    "rollout": {"core", "spec", "artifact", "targets", "verify", "record"},  # planning, staged steps, canaries
    "local": {"core", "targets", "verify"},  # the embedded stack and the demo
    "cli": {"core", "spec", "source", "artifact", "verify", "targets", "record", "rollout", "local"},
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            if node.module == "slipway":  # from slipway import ledger
                for alias in node.names:
                    yield node.lineno, f"slipway.{alias.name}"


def folder_of(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def test_every_folder_of_slipway_is_in_the_arrow_table():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ALLOWED)


def test_slipway_has_no_loose_modules_besides_its_init():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_imports_between_folders_follow_the_arrow_table():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = folder_of(path)
        for line, name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != "slipway" or len(parts) < 2 or parts[1] not in ALLOWED:
                continue
            dst = parts[1]
            if src is None or (dst != src and dst not in ALLOWED[src]):
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({src}) imports {name}")
    assert offenders == []


def test_slipway_package_imports_no_prefect_module():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_the_cli_reaches_prefect_only_through_importlib():
    text = (PACKAGE / "cli" / "main.py").read_text()
    assert 'importlib.import_module("deployments.runner")' in text


# The Prefect side, top-level packages: composition points down (deployments → flows → tasks → blocks → slipway), so
# there is no import cycle between flows and the CLI's runner.
TOP_ALLOWED = {
    "blocks": {"slipway"},
    "tasks": {"slipway", "blocks"},
    "flows": {"slipway", "blocks", "tasks"},
    "deployments": {"slipway", "blocks", "tasks", "flows"},
}


def test_the_prefect_side_packages_import_downwards_only():
    offenders = []
    for top, allowed in TOP_ALLOWED.items():
        for path in sorted((ROOT / top).rglob("*.py")):
            for line, name in imported_modules(path):
                first = name.split(".")[0]
                if first in TOP_ALLOWED.keys() | {"slipway"} and first != top and first not in allowed:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


def test_no_task_module_passes_three_hundred_lines_and_no_flow_function_forty():
    long_modules = [p.name for p in (ROOT / "tasks").glob("*.py") if len(p.read_text().splitlines()) > 300]
    long_functions = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 40:
                long_functions.append(f"{path.name}:{node.name}")
    assert (long_modules, long_functions) == ([], [])

"""What a repository and the Lambda runtime provide to ``import``: shared by preflight (is an import packaged?), the
test run (is a missing module the repository's own?) and the diagnosis."""

from __future__ import annotations

from pathlib import Path

# What the Lambda Python runtime provides without packaging it
LAMBDA_RUNTIME_MODULES = frozenset({"boto3", "botocore", "awslambdaric", "s3transfer", "jmespath", "dateutil", "urllib3", "six"})


def repository_modules(repo: Path) -> dict[str, str]:
    """Top-level importable names the repository itself provides, in its root and its first-level folders: name →
    path relative to the repository (a folder ends with ``/``). ``src/app.py`` → app; ``shared/`` → shared; ``src`` →
    src. Hidden entries and ``__pycache__`` are left out; the root comes first, then the folders in name order."""
    found: dict[str, str] = {}
    for base in [repo, *sorted(d for d in repo.iterdir() if d.is_dir() and not d.name.startswith("."))]:
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            rel = entry.relative_to(repo).as_posix()
            if entry.is_dir():
                found.setdefault(entry.name, rel + "/")
            elif entry.suffix == ".py":
                found.setdefault(entry.stem, rel)
    return found

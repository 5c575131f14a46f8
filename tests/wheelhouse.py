"""Offline wheels for test environments: pytest and its dependencies repacked from this interpreter's own
installation, so a test virtualenv installs with ``--no-index`` (no package index needed)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

from packaging.requirements import Requirement


def _repack_as_wheel(dist: importlib.metadata.Distribution, wheelhouse: Path) -> None:
    """Zip an installed pure-Python distribution back into a wheel (files from RECORD, a fresh RECORD)."""
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in f.parts]
    info_dir = next(f.parts[0] for f in files if f.name == "METADATA" and f.parts[0].endswith(".dist-info"))
    skip = {f"{info_dir}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    name, version = info_dir.removesuffix(".dist-info").rsplit("-", 1)
    record = []
    with zipfile.ZipFile(wheelhouse / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for f in files:
            arc = f.as_posix()
            if arc in skip:
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")


def offline_pip_args(wheelhouse: Path, roots: tuple[str, ...] = ("pytest",)) -> list[str]:
    """``--no-index --find-links WHEELHOUSE`` with wheels of ``roots`` and everything they need."""
    todo, done = list(roots), set()
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in done:
            continue
        done.add(key)
        _repack_as_wheel(dist, wheelhouse)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return ["--no-index", "--find-links", str(wheelhouse)]

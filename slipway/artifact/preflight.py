"""Preflight checks on a built Lambda zip, before anything is published or deployed (fail fast, touch nothing).

1. **Imports resolve**: every module-level ``import`` of the app's own modules (the ``.py`` files of the source
   directory, not vendored packages) names a module that is in the zip, in the runtime's standard library, or
   provided by the Lambda Python runtime (boto3, botocore). A module imported but not packaged is the classic
   "works on my machine" failure: the tests pass because the developer's venv has it.
2. **The handler imports**: the zip is extracted and the handler's module imported in an isolated interpreter
   (``python -I -S``: the standard library and the zip only, with the runtime-provided modules stubbed), and the
   handler must be a callable attribute. Catches code that fails at import time (a missing environment variable read
   at module level, a typo in a module-level name) that static checks cannot see.
3. **Platform compatible**: every vendored distribution's wheel tags (``*.dist-info/WHEEL``) include one that the
   Lambda runtime can load (CPython version, abi3, Linux on the function's architecture, a glibc no newer than the
   runtime's OS), and every compiled file agrees: extension suffixes (``.cpython-311-x86_64-linux-gnu.so``), the
   ELF machine of every ``.so``, no ``.pyd``/``.dylib``/Mach-O. A wheel built on a Mac or for another Python
   installs and passes the tests locally, then fails at import on Lambda.
4. **Size limits**: unzipped size within AWS Lambda's 250 MB (and the team's own budget when the spec sets one);
   the five largest top-level entries say what to trim. Over 50 MB zipped is fine: Slipway deploys from S3.

Plain functions, no Prefect. Each check returns a ``PreflightCheck``; ``raise_for_failures`` turns failures into
one ``PreflightFailed`` naming the first problem and its fix, with that check's ``ref`` when it has one.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import canonicalize_name

from slipway.artifact.lambda_zip import MAX_UNZIPPED, MAX_ZIPPED
from slipway.core import sandbox
from slipway.core.layout import LAMBDA_RUNTIME_MODULES, repository_modules
from slipway.core.errors import PreflightFailed, SlipwayError, SpecError

RUNTIME_PROVIDED = LAMBDA_RUNTIME_MODULES
IMPORT_TIMEOUT_S = 30


@dataclass(frozen=True)
class PreflightCheck:
    name: str
    passed: bool
    detail: str
    ref: str | None = None  # the PreflightFailed ref when this check is the first failure; None: "preflight-failed"

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
    """``file:line: import name`` for imports of the app's own files that nothing provides: at module level, and inside
    functions and classes too (``file:line (in handler): import name``; such an import fails only when its code runs,
    which the tests may not reach). An import guarded by ``try: … except ImportError`` (or ModuleNotFoundError,
    Exception) or under ``if TYPE_CHECKING:`` is optional by design and not reported."""
    with zipfile.ZipFile(zip_path) as zf:
        available = zip_top_level_names(zf) | set(sys.stdlib_module_names) | RUNTIME_PROVIDED | {"__future__"}
        missing = []
        for rel in source_files:
            try:
                tree = ast.parse(zf.read(rel).decode("utf-8", errors="replace"), filename=rel)
            except (KeyError, SyntaxError):
                continue  # not in the zip / a syntax error: the import check below reports it
            for node, scope in _imports(tree):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                else:
                    tops = [node.module.split(".")[0]]
                where = f"{rel}:{node.lineno}" + (f" (in {scope})" if scope else "")
                missing += [f"{where}: import {top}" for top in tops if top not in available]
    return missing


_OPTIONAL_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _imports(tree: ast.AST):
    """(import node, enclosing function/class name or "") for every absolute import not optional by design."""
    def visit(node: ast.AST, scope: str, optional: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if not optional and (isinstance(child, ast.Import) or (child.level == 0 and child.module)):
                    yield child, scope
            elif isinstance(child, ast.Try) or (hasattr(ast, "TryStar") and isinstance(child, ast.TryStar)):
                guarded = any(_catches_import_error(h.type) for h in child.handlers)
                for part in child.body:
                    yield from visit(_Block(part), scope, optional or guarded)
                for part in [*child.handlers, *child.orelse, *child.finalbody]:
                    yield from visit(_Block(part) if not isinstance(part, ast.ExceptHandler) else part, scope, optional)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for part in child.orelse:
                    yield from visit(_Block(part), scope, optional)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from visit(child, f"{scope}.{child.name}" if scope else child.name, optional)
            else:
                yield from visit(child, scope, optional)

    yield from visit(tree, "", False)


class _Block(ast.AST):
    """One statement wrapped so ``visit`` sees it as a child (a Try's body statements)."""

    _fields = ("body",)

    def __init__(self, statement: ast.AST) -> None:
        super().__init__()
        self.body = [statement]


def _catches_import_error(handler_type: ast.AST | None) -> bool:
    if handler_type is None:
        return True  # a bare except
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any((n.id if isinstance(n, ast.Name) else getattr(n, "attr", "")) in _OPTIONAL_IMPORT_ERRORS for n in names)


def _is_type_checking(test: ast.AST) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def check_imports(zip_path: Path, source_files: list[str], requirements: str | None, outside_source: dict[str, str] | None = None,
                  source: str = "") -> PreflightCheck:
    """``outside_source``: top-level module/package names of the repository that are outside ``source`` (name → path):
    an import of one of them is the app's own code left out of the zip, not a missing dependency."""
    missing = unresolved_imports(zip_path, source_files)
    if not missing:
        return PreflightCheck("imports resolve", True, f"every import of {len(source_files)} source file(s) is packaged, "
                              "in the standard library or provided by the Lambda runtime")
    names = sorted({m.rsplit(" ", 1)[1] for m in missing})
    ours = [n for n in names if n in (outside_source or {})]
    theirs = [n for n in names if n not in ours]
    fixes = []
    if ours:
        fixes.append(f"{', '.join(f'{n} ({outside_source[n]})' for n in ours)} {'are' if len(ours) > 1 else 'is'} this repository's own "
                     f"code outside source ({source or 'artifact.source'}), so not in the zip: move it under {source or 'source'} "
                     "or make source the directory that holds both")
    if theirs:
        where = requirements or "a requirements file (artifact.requirements)"
        fixes.append(f"add {'them' if len(theirs) > 1 else 'it'} to {where}" if not ours else f"add {', '.join(theirs)} to {where}")
    return PreflightCheck("imports resolve", False,
                          f"imported but not packaged: {', '.join(names)} ({'; '.join(missing[:3])}); {'; '.join(fixes)}")


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


def function_environ(task_root: str, environment: dict[str, str] | None) -> dict[str, str]:
    """The environment a Lambda handler imports in: the function's own variables and the runtime's, never the worker's
    (a variable set on the worker but not on the function would make a broken import pass here, and the reverse)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC", "HOME": task_root, "LAMBDA_TASK_ROOT": task_root,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_NAME": "preflight",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        **(environment or {}),
    }


def check_handler_imports(zip_path: Path, handler: str, python: str = sys.executable,
                          environment: dict[str, str] | None = None) -> PreflightCheck:
    """Import the handler from the extracted zip in an isolated interpreter, with the function's environment variables
    (``environment``: what the spec sets; a secret's value is never read for this) and the runtime's, nothing else."""
    module_name, function_name = handler.rsplit(".", 1)
    with tempfile.TemporaryDirectory(prefix="slipway-preflight-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        try:
            # the app's module-level code runs here: sandboxed (no network, the extracted zip read-only, nothing else)
            box = sandbox.Sandbox(readonly=(Path(tmp).resolve(),))
            done = subprocess.run(
                box.wrap([python, "-I", "-S", "-c", _IMPORT_SCRIPT, tmp, module_name, function_name, ",".join(sorted(RUNTIME_PROVIDED))],
                         cwd=tmp),
                cwd=tmp, env=function_environ(tmp, environment), capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S,
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


# --- platform -------------------------------------------------------------------------------------------------

INCOMPATIBLE_WHEEL = "incompatible-wheel"
ARTIFACT_TOO_LARGE = "artifact-too-large"
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}  # Lambda's name -> the machine's
_ELF_MACHINE = {0x03: "i386", 0x08: "mips", 0x14: "ppc", 0x15: "ppc64", 0x16: "s390x", 0x28: "arm (32-bit)",
                0x3E: "x86_64", 0xB7: "aarch64", 0xF3: "riscv"}
_MACHO_MAGIC = {b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"}
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_FOREIGN_SUFFIXES = {".pyd": "a Windows extension", ".dylib": "a macOS library"}
_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_SHOWN = 5


@dataclass(frozen=True)
class LambdaRuntime:
    runtime: str  # python3.11
    python: tuple[int, int]
    arch: str  # the machine: x86_64 | aarch64
    glibc: tuple[int, int]  # of the runtime's OS

    @property
    def wheel_platform(self) -> str:
        return f"manylinux2014_{self.arch}"

    @property
    def cp(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    def platforms(self) -> list[str]:
        major, newest = self.glibc
        names = [f"manylinux_{major}_{minor}_{self.arch}" for minor in range(newest, 4, -1)]
        names += [f"{legacy}_{self.arch}" for legacy, glibc in _LEGACY_MANYLINUX.items() if glibc <= self.glibc]
        return names + [f"linux_{self.arch}"]

    def supported_tags(self) -> frozenset[Tag]:
        """What pip would accept on the runtime: cp311 / abi3 / py3 tags on this Linux, and ``-none-any``."""
        platforms = self.platforms()
        return frozenset(cpython_tags(python_version=self.python, abis=[self.cp], platforms=platforms)) | frozenset(
            compatible_tags(python_version=self.python, interpreter=self.cp, platforms=platforms))


def lambda_runtime(runtime: str, architecture: str) -> LambdaRuntime:
    match = re.fullmatch(r"python3\.(\d+)", runtime)
    if not match:
        raise SpecError(f"unsupported Lambda runtime {runtime!r}", target="runtime",
                        hint="use a Python runtime name such as 'python3.11'", ref="unsupported-runtime")
    if architecture not in ARCHITECTURES:
        raise SpecError(f"unsupported Lambda architecture {architecture!r}", target="architecture",
                        hint="use 'x86_64' or 'arm64'", ref="unsupported-architecture")
    minor = int(match.group(1))
    # the runtimes' OS: Amazon Linux 2 (glibc 2.26) up to python3.11, Amazon Linux 2023 (glibc 2.34) from python3.12
    glibc = (2, 26) if minor <= 11 else (2, 34)
    return LambdaRuntime(runtime, (3, minor), ARCHITECTURES[architecture], glibc)


def _linux_platform(platform: str) -> tuple[tuple[int, int] | None, str] | None:
    """(minimum glibc or None, machine) of a Linux wheel platform tag; None when it is not a glibc Linux one."""
    if match := re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform):
        return (int(match.group(1)), int(match.group(2))), match.group(3)
    if match := re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", platform):
        return _LEGACY_MANYLINUX[match.group(1)], match.group(2)
    if match := re.fullmatch(r"linux_(\w+)", platform):
        return None, match.group(1)
    return None


def _python_of(interpreter: str) -> str:
    digits = interpreter[2:]
    return f"{digits[0]}.{digits[1:]}" if digits.isdigit() and len(digits) > 1 else digits


def _tag_problem(tag: Tag, target: LambdaRuntime) -> str:
    """Why ``tag`` does not load on the target (only asked about a tag the target does not support)."""
    platform = tag.platform
    if platform != "any" and platform not in target.platforms():
        if platform.startswith("macosx"):
            return "a macOS wheel"
        if platform.startswith("win"):
            return "a Windows wheel"
        if platform.startswith("musllinux"):
            return "a musl libc wheel; Lambda's Linux uses glibc"
        linux = _linux_platform(platform)
        if linux and linux[1] != target.arch:
            return f"built for {linux[1]}, not {target.arch}"
        if linux and linux[0] and linux[0] > target.glibc:
            have = ".".join(map(str, target.glibc))
            return f"needs glibc {linux[0][0]}.{linux[0][1]}, Lambda's {target.runtime} has {have}"
        return f"platform {platform} is not Linux {target.arch}"
    if tag.interpreter.startswith("cp") and tag.abi == "abi3":
        return f"needs CPython {_python_of(tag.interpreter)} or newer, not {target.runtime}"
    if tag.interpreter.startswith("cp") and _python_of(tag.interpreter) != f"{target.python[0]}.{target.python[1]}":
        return f"built for CPython {_python_of(tag.interpreter)}, not {target.runtime}"
    if tag.interpreter.startswith("pp"):
        return "built for PyPy"
    return f"interpreter/ABI {tag.interpreter}-{tag.abi} does not run on {target.runtime}"


def _extension_name_problem(basename: str, target: LambdaRuntime) -> str | None:
    """What a compiled extension's suffix (``.cpython-311-x86_64-linux-gnu.so``) says against the target."""
    match = re.search(r"\.([^.]+)\.so$", basename)
    if not match or match.group(1) == "abi3":
        return None
    suffix = match.group(1)
    if suffix.startswith("pypy"):
        return "compiled for PyPy"
    cpython = re.fullmatch(r"cpython-(\d)(\d+)[a-z]*(?:-(.+))?", suffix)
    if not cpython:
        return None
    version, triplet = f"{cpython.group(1)}.{cpython.group(2)}", cpython.group(3)
    if version != f"{target.python[0]}.{target.python[1]}":
        return f"compiled for CPython {version}, not {target.runtime}"
    if triplet and "darwin" in triplet:
        return "compiled for macOS"
    if triplet and not triplet.startswith(f"{target.arch}-linux-gnu"):
        return f"compiled for {triplet}, not {target.arch}-linux-gnu"
    return None


def _binary_problem(head: bytes, target: LambdaRuntime) -> str | None:
    """What the first bytes of a shared object say: its ELF machine, or a macOS / Windows binary format."""
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)  # e_machine, in EI_DATA's byte order
        if _ELF_MACHINE.get(machine) != target.arch:
            return f"an ELF binary for {_ELF_MACHINE.get(machine, f'machine 0x{machine:x}')}, not {target.arch}"
        return None
    if head[:4] in _MACHO_MAGIC:
        return "a Mach-O (macOS) binary"
    if head[:2] == b"MZ":
        return "a Windows (PE) binary"
    return None  # empty or unknown: no evidence either way (the handler import check loads what it imports)


def _read_text(zf: zipfile.ZipFile, name: str) -> str:
    try:
        return zf.read(name).decode("utf-8", errors="replace")
    except KeyError:
        return ""


@dataclass(frozen=True)
class _Dist:
    label: str  # "numpy 2.1.0"
    tags: tuple[str, ...]  # the WHEEL file's Tag: values
    import_names: frozenset[str]  # canonicalised: top_level.txt and the distribution name


def _dists(zf: zipfile.ZipFile) -> list[_Dist]:
    dists = []
    for name in sorted(zf.namelist()):
        if not name.endswith(".dist-info/WHEEL"):
            continue
        info_dir = name.removesuffix("/WHEEL")
        metadata_head = _read_text(zf, f"{info_dir}/METADATA").split("\n\n", 1)[0]
        headers = dict(line.split(": ", 1) for line in metadata_head.splitlines() if ": " in line)
        # the directory is {name}-{version}.dist-info: the fallback when METADATA is missing
        fallback_name, _, fallback_version = info_dir.rsplit("/", 1)[-1].removesuffix(".dist-info").rpartition("-")
        dist_name = headers.get("Name", fallback_name).strip()
        version = headers.get("Version", fallback_version).strip()
        wheel = _read_text(zf, name).splitlines()
        tags = tuple(line.split(":", 1)[1].strip() for line in wheel if line.startswith("Tag:"))
        imports = {canonicalize_name(n) for n in _read_text(zf, f"{info_dir}/top_level.txt").split()}
        dists.append(_Dist(f"{dist_name} {version}", tags, frozenset(imports | {canonicalize_name(dist_name)})))
    return dists


def _owner(path: str, dists: list[_Dist]) -> str | None:
    """The distribution owning a file, by its top-level name (``numpy/…``, ``numpy.libs/…``, ``_cffi_backend….so``)."""
    first = path.split("/", 1)[0] if "/" in path else path.split(".", 1)[0]
    key = canonicalize_name(first.removesuffix(".libs"))
    return next((d.label for d in dists if key in d.import_names), None)


def incompatible_binaries(
    zip_path: Path, runtime: str = "python3.11", architecture: str = "x86_64",
) -> dict[str, list[str]]:
    """Package (``name version``, or the file when no distribution owns it) → what in it does not load on the target."""
    target = lambda_runtime(runtime, architecture)
    supported = target.supported_tags()
    problems: dict[str, list[str]] = {}
    with zipfile.ZipFile(zip_path) as zf:
        dists = _dists(zf)
        for dist in dists:
            tags = [(text, parse_tag(text)) for text in dist.tags if text.count("-") == 2]
            if tags and not any(parsed & supported for _, parsed in tags):
                text, parsed = tags[0]
                problems.setdefault(dist.label, []).append(f"tag {text}: {_tag_problem(min(parsed, key=str), target)}")
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            path = info.filename
            basename = path.rsplit("/", 1)[-1]
            suffix = next((s for s in _FOREIGN_SUFFIXES if basename.endswith(s)), None)
            if suffix:
                problem = _FOREIGN_SUFFIXES[suffix]
            elif _SHARED_OBJECT.search(basename) and not info.is_dir():
                with zf.open(info) as fh:
                    head = fh.read(20)
                problem = _extension_name_problem(basename, target) or _binary_problem(head, target)
            else:
                continue
            if problem:
                owner = _owner(path, dists)
                problems.setdefault(owner or path, []).append(f"{path}: {problem}" if owner else problem)
    return problems


def check_platform(zip_path: Path, runtime: str = "python3.11", architecture: str = "x86_64") -> PreflightCheck:
    target = lambda_runtime(runtime, architecture)
    problems = incompatible_binaries(zip_path, runtime, architecture)
    if not problems:
        return PreflightCheck("platform compatible", True,
                              f"every vendored wheel and compiled file loads on Lambda {runtime} {architecture}")
    shown = [f"{what} ({found[0]}{f'; +{len(found) - 1} more' if len(found) > 1 else ''})"
             for what, found in list(problems.items())[:_SHOWN]]
    more = f" and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    python = f"{target.python[0]}.{target.python[1]}"
    return PreflightCheck(
        "platform compatible", False,
        f"does not load on Lambda {runtime} {architecture}: {'; '.join(shown)}{more}; pin a version with a "
        f"{target.wheel_platform} wheel for {target.cp} (or a pure-Python one) and vendor it with `pip install "
        f"--platform {target.wheel_platform} --implementation cp --python-version {python} --only-binary=:all:`, "
        "not from this machine's environment",
        ref=INCOMPATIBLE_WHEEL,
    )


# --- size -----------------------------------------------------------------------------------------------------

def _figure(n: int) -> str:
    for unit, scale in (("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})".replace(".0 ", " ")
    return f"{n:,} bytes"


def largest_entries(zf: zipfile.ZipFile, n: int = _SHOWN) -> list[tuple[str, int]]:
    """The ``n`` largest top-level entries (``numpy/``, ``app.py``) by unzipped size, largest first."""
    sizes: dict[str, int] = {}
    for info in zf.infolist():
        first, slash, _ = info.filename.partition("/")
        sizes[first + slash] = sizes.get(first + slash, 0) + info.file_size
    return sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:n]


def check_size(zip_path: Path, max_unzipped_bytes: int | None = None, *, aws_limit_bytes: int = MAX_UNZIPPED,
               direct_upload_bytes: int = MAX_ZIPPED) -> PreflightCheck:
    """Unzipped size against AWS Lambda's limit (function + layers) and the spec's own budget, whichever is smaller."""
    zipped = Path(zip_path).stat().st_size
    with zipfile.ZipFile(zip_path) as zf:
        unzipped = sum(info.file_size for info in zf.infolist())
        largest = largest_entries(zf)
    budget = max_unzipped_bytes is not None and max_unzipped_bytes < aws_limit_bytes
    limit = max_unzipped_bytes if budget else aws_limit_bytes
    whose = (f"the spec's budget (artifact.max_unzipped_mb; AWS allows {aws_limit_bytes:,})" if budget
             else "AWS Lambda's unzipped limit, function + layers")
    figures = (f"{_figure(zipped)} zipped, {_figure(unzipped)} unzipped, limit {_figure(limit)} ({whose}); largest: "
               + (", ".join(f"{name} {_figure(size)}" for name, size in largest) or "nothing"))
    if zipped > direct_upload_bytes:
        figures += f"; zipped over the {_figure(direct_upload_bytes)} direct-upload limit, which is fine: Slipway deploys from S3"
    if unzipped <= limit:
        return PreflightCheck("size limits", True, figures)
    provided = [name for name, _ in largest if name.rstrip("/") in RUNTIME_PROVIDED]
    fix = "trim the largest entries"
    if provided:
        fix += f" ({', '.join(provided)} {'is' if len(provided) == 1 else 'are'} provided by the Lambda runtime)"
    fix += " or raise artifact.max_unzipped_mb in slipway.yaml" if budget else " or deploy a container image (10 GB limit)"
    return PreflightCheck("size limits", False, f"{unzipped - limit:,} bytes over: {figures}; {fix}",
                          ref=ARTIFACT_TOO_LARGE)


def lambda_zip_checks(
    zip_path: Path, *, handler: str, source_files: list[str], requirements: str | None,
    runtime: str = "python3.11", architecture: str = "x86_64", max_unzipped_bytes: int | None = None,
    environment: dict[str, str] | None = None, outside_source: dict[str, str] | None = None, source: str = "",
) -> list[PreflightCheck]:
    # static checks first: a foreign binary also breaks the handler import, and the platform check names the cause
    checks = [
        check_imports(zip_path, source_files, requirements, outside_source, source),
        check_platform(zip_path, runtime, architecture),
        check_size(zip_path, max_unzipped_bytes),
    ]
    if not checks[-1].passed:  # never extract (and import) a zip over its size limit
        return checks + [PreflightCheck("handler imports", False, "not tried: the zip is over its size limit", ref=ARTIFACT_TOO_LARGE)]
    return checks + [check_handler_imports(zip_path, handler, environment=environment)]


def raise_for_failures(checks: list[PreflightCheck], hint: str = "nothing was published or deployed; fix the app and release again") -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise PreflightFailed(
            f"preflight check '{first.name}' failed: {first.detail}{more}",
            hint=hint,
            ref=first.ref,
            evidence={"checks": [c.to_dict() for c in checks]},
        )


def repository_modules_outside(repo: Path, source: str) -> dict[str, str]:
    """The repository's own top-level modules and packages that are not under ``source`` (name → path): root
    ``*.py`` files and packages (folders with ``__init__.py``) of the root and its first-level folders; tests,
    ``node_modules``, ``_private`` entries, setup.py and conftest.py left out."""
    inside = source.strip("/")
    if inside in ("", "."):
        return {}  # the whole repository is packaged
    found = {}
    for name, path in repository_modules(repo).items():
        first = path.rstrip("/").split("/", 1)[0]
        if path.rstrip("/") == inside or path.startswith(inside + "/") or first.startswith("_") or name.startswith("_") \
                or first in ("tests", "test", "node_modules") or name in ("setup", "conftest"):
            continue
        package = path.endswith("/") and (repo / path / "__init__.py").is_file()
        if package or (path.endswith(".py") and "/" not in path):
            found[name] = path
    return found

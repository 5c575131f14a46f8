"""From a file to a ``Spec``: strict, bounded YAML (no aliases, a depth and size limit), pydantic errors turned
into one line that names the key and the fix (with "did you mean"), and the checks of a spec against the
checkout it came from (paths stay inside the repository; the handler module and function exist).
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from slipway.core.errors import SpecError
from slipway.spec.schema import (
    DOCKER_ONLY_FIELDS, LAMBDA_ONLY_FIELDS, MAX_SPEC_BYTES, MAX_SPEC_DEPTH, NAME_RE, SPEC_FILE, DockerImageArtifact, LambdaZipArtifact, Spec,
    _relative_path,
)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("lambda-zip", "docker-image"):  # discriminator tags add no information
            continue
        else:
            part = str(part) if str(part).isprintable() else repr(part)  # a key is the author's text: no newlines in our line
            out += f".{part}" if out else part
    return _clip(out) or "(top level)"


def _clip(text: str, limit: int = 300) -> str:
    """A hostile value can be 256 KB long: keep the start of the message and its fix, which comes last."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def _known_keys(data: Any, loc: tuple) -> list[str]:
    """The keys allowed where an unknown key was found (for "did you mean")."""
    tags = {"lambda-zip": LambdaZipArtifact, "docker-image": DockerImageArtifact}
    model: type[BaseModel] = Spec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in tags:
            model = tags[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        found = None
        for cand in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            for sub in [cand, *getattr(cand, "__args__", ())]:
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    found = found or sub
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _format_error(err: dict, source: str, data: Any) -> str:
    loc = tuple(err.get("loc", ()))
    where = _loc(loc)
    kind = err.get("type")
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "artifact":
        key, art_type = str(loc[-1]), loc[1]
        if art_type == "docker-image" and key in LAMBDA_ONLY_FIELDS:
            return f"{source}: {where}: {key!r} is a lambda-zip field; a docker-image artifact does not take it (remove it)"
        if art_type == "lambda-zip" and key in DOCKER_ONLY_FIELDS:
            return f"{source}: {where}: {key!r} is a docker-image field; a lambda-zip artifact does not take it (remove it)"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(data, loc)
        close = difflib.get_close_matches(key, known, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"allowed keys here: {', '.join(known)}"
        return f"{source}: {where}: unknown key; {fix}"
    if kind == "missing":
        return f"{source}: {where}: required field is missing; add it (see the slipway.yaml reference in docs/spec.md)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{source}: {where}.type: unsupported artifact type; use type: lambda-zip or type: docker-image"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    return f"{source}: {where}: {_clip(msg)}"


class _RefusedYaml(yaml.YAMLError):
    def __init__(self, problem: str, mark, hint: str) -> None:
        super().__init__(problem)
        self.problem, self.mark, self.hint = problem, mark, hint


class _SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load`` minus what a spec never needs and a hostile document relies on: aliases (the billion-laughs
    bomb expands a few lines into gigabytes once dumped) and deep nesting (the composer recurses per level)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _RefusedYaml("YAML aliases (*name) are not allowed", self.peek_event().start_mark,
                               "write the value out in full where it is used")
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise _RefusedYaml(f"nested deeper than {MAX_SPEC_DEPTH} levels", self.peek_event().start_mark,
                                   "a spec is a shallow document; flatten the value")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        """A key written twice is refused: YAML keeps the last one, so the first (an ``app:``, a ``function_name:``)
        would be silently ignored and the release would act on the other."""
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise _RefusedYaml(f"key {key!r} is written twice (first at line {first})", key_node.start_mark,
                                   "keep one: YAML would silently use the last")
        return super().construct_mapping(node, deep)


def _too_large(source: str) -> SpecError:
    return SpecError(f"{source} is larger than {MAX_SPEC_BYTES // 1024} KB", hint="a spec is a short file; check the path", ref="spec-too-large")


def parse_spec(text: str, source: str = SPEC_FILE) -> Spec:
    """Parse and validate spec text. Raises SpecError with one line naming the field and the fix."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise _too_large(source)
    try:
        data = yaml.load(text, Loader=_SpecLoader)
    except _RefusedYaml as exc:
        where = f" at line {exc.mark.line + 1}, column {exc.mark.column + 1}" if exc.mark else ""
        raise SpecError(f"{source}: {exc.problem}{where}", hint=exc.hint, ref="spec-yaml-refused") from None
    except ValueError as exc:  # PyYAML builds ints and dates with int()/date(): 5000 digits, month 13
        raise SpecError(f"{source}: not valid YAML: {str(exc).split(':', 1)[0]}", hint="fix the value, or quote it to make it a string",
                        ref="spec-not-yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{source}: not valid YAML{where}", hint="fix the YAML syntax", ref="spec-not-yaml") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with app, artifact and environments", hint="see the slipway.yaml reference in docs/spec.md")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")  # a typo explains the rest
        first = _format_error(errors[0], source, data)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise SpecError(first + more, evidence={"errors": [_format_error(e, source, data) for e in errors]}) from None


def read_spec_text(repo_dir: Path, spec_path: str | None = None) -> tuple[str, str]:
    """(text, path as given) of the spec in a checkout: a regular file inside the repository, read with a bound (a
    path to /dev/zero or a huge file is refused without reading more than the limit)."""
    rel = spec_path or SPEC_FILE
    try:
        _relative_path(rel, "spec")
    except ValueError:
        raise SpecError(f"spec path {rel!r} is outside the repository", hint="pass a path relative to the repo root") from None
    path = _inside_repo(repo_dir, rel, "spec path")
    if not path.is_file():
        raise SpecError(
            f"no {rel} in the repository",
            target=str(repo_dir.name),
            hint="add slipway.yaml at the repo root or pass --spec PATH",
            ref="spec-missing",
        )
    if path.stat().st_size > MAX_SPEC_BYTES:  # before opening it
        raise _too_large(rel)
    with path.open("rb") as handle:  # and bounded, should it grow after the check
        data = handle.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise _too_large(rel)
    return data.decode("utf-8", errors="replace"), rel


def load_spec(repo_dir: Path, spec_path: str | None = None) -> Spec:
    """Load ``slipway.yaml`` (or ``spec_path``, relative to the repo root) from a checkout."""
    text, rel = read_spec_text(repo_dir, spec_path)
    return parse_spec(text, rel)


def declared_app(repo_dir: Path, spec_path: str | None = None) -> str | None:
    """The ``app:`` of a spec that does not validate, read the same bounded way, so that its failure can still be filed
    under the app; None when the file cannot be read as a spec or names no usable app."""
    try:
        text, _ = read_spec_text(repo_dir, spec_path)
        data = yaml.load(text, Loader=_SpecLoader)
    except (SpecError, yaml.YAMLError, ValueError, OSError):
        return None
    app = data.get("app") if isinstance(data, dict) else None
    return app if isinstance(app, str) and NAME_RE.fullmatch(app) else None


def _inside_repo(repo_dir: Path, rel: str, what: str) -> Path:
    """``repo_dir / rel``, refused when a symlink on the way leads outside the checkout (to /etc, to a home)."""
    path = repo_dir / rel
    if not path.resolve().is_relative_to(repo_dir.resolve()):
        raise SpecError(f"{what} {rel!r} leads outside the repository through a symlink",
                        hint="commit the files themselves, not a link to them", ref="path-escapes-repo")
    return path


def check_spec_against_checkout(spec: Spec, repo_dir: Path) -> None:
    """Checks that need the source tree: source dir, handler module and function, requirement files
    (lambda-zip); context and Dockerfile (docker-image)."""
    art = spec.artifact
    for rel in spec.test.requirements if spec.test else []:
        _inside_repo(repo_dir, rel, "slipway.yaml: test.requirements:")
    if isinstance(art, DockerImageArtifact):
        context = _inside_repo(repo_dir, art.context, "slipway.yaml: artifact.context:")
        _inside_repo(repo_dir, str(Path(art.context) / art.dockerfile), "slipway.yaml: artifact.dockerfile:")
        if not context.is_dir():
            raise SpecError(f"slipway.yaml: artifact.context: directory {art.context!r} not found in the repository", hint="point it at the build context")
        if not (context / art.dockerfile).is_file():
            raise SpecError(
                f"slipway.yaml: artifact.dockerfile: no {art.dockerfile} in context {art.context}",
                hint="add a Dockerfile or set artifact.dockerfile",
                ref="dockerfile-missing",
            )
        for rel in spec.test.requirements if spec.test else []:
            if not (repo_dir / rel).is_file():
                raise SpecError(f"slipway.yaml: requirements file {rel!r} not found in the repository", hint="add the file or remove it from the spec")
        return
    source = _inside_repo(repo_dir, art.source, "slipway.yaml: artifact.source:")
    if art.requirements:
        _inside_repo(repo_dir, art.requirements, "slipway.yaml: artifact.requirements:")
    if not source.is_dir():
        raise SpecError(f"slipway.yaml: artifact.source: directory {art.source!r} not found in the repository", hint="point it at the directory holding the handler")
    module_rel = Path(*art.handler_module.split("."))
    candidates = [source / module_rel.with_suffix(".py"), source / module_rel / "__init__.py"]
    module_file = next((c for c in candidates if c.is_file()), None)
    if module_file is None:
        raise SpecError(
            f"slipway.yaml: artifact.handler: module {art.handler_module!r} not found in {art.source}/",
            hint=f"create {art.source}/{module_rel}.py or fix the handler",
            ref="handler-module-missing",
        )
    try:
        tree = ast.parse(module_file.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError as exc:
        raise SpecError(
            f"{module_file.relative_to(repo_dir)}: syntax error at line {exc.lineno}",
            hint="fix the handler module",
            ref="handler-syntax-error",
        ) from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    if art.handler_function not in names:
        raise SpecError(
            f"slipway.yaml: artifact.handler: {art.handler_module}.py defines no function {art.handler_function!r}",
            hint="define it or fix the handler",
            ref="handler-function-missing",
        )
    for rel in ([art.requirements] if art.requirements else []) + (spec.test.requirements if spec.test else []):
        if not (repo_dir / rel).is_file():
            raise SpecError(f"slipway.yaml: requirements file {rel!r} not found in the repository", hint="add the file or remove it from the spec")

"""Environment-scoped feature flags in AWS SSM Parameter Store.

A flag is one String parameter, ``/slipway/{app}/{env}/flags/{NAME}``. The pattern:

1. **Set**: ``set_flag`` writes a new version of the parameter (SSM numbers versions 1, 2, 3, ... and keeps the
   history); the parameter's Description says who set it. Setting a flag changes nothing that is running.
2. **Deliver**: the next deploy of that environment reads the flags (``read_flags``) and passes them to the
   function as configuration, one environment variable per flag, ``SLIPWAY_FLAG_<NAME upper>`` =
   value (``flag_env_vars``). A flag therefore reaches the code together with a release, is rolled back with
   it, and is never read from SSM at run time (no extra permission, latency or failure mode in the function).
3. **Record**: the ledger entry of that deploy records ``flags_fingerprint(flags)``:
   ``{name: {"version": v, "value": value}}``. Values are recorded as well as versions because flags are not
   secrets (they are plain ``String`` parameters, never ``SecureString``) and because a "diagnose" report
   comparing two releases (``diff_flags``) should say *what* changed, not only that a version moved.

Everything is validated before the first AWS call. Note that Lambda limits a function's environment variables to
4 KB in total, so large flag values (SSM allows 4096 characters each) only fit a Lambda function in small numbers.
"""

from __future__ import annotations

import json
import re
from datetime import timezone
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict

from slipway.core.aws import error_code, translate
from slipway.core.errors import CredentialsError, DeployError, InputError
from slipway.record.ledger import default_actor
from slipway.spec.schema import NAME_RE

FLAG_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_VALUE_CHARS = 4096  # SSM standard tier
MAX_ACTOR_CHARS = 200  # the Description holds 1024; "set by " + a user@host fits with room to spare
ENV_PREFIX = "SLIPWAY_FLAG_"
ACCESS_DENIED_CODES = {"AccessDenied", "AccessDeniedException"}


class FlagValue(BaseModel):
    """One version of a flag. ``description`` ("set by user@host") comes only from ``flag_history``:
    GetParametersByPath does not return a parameter's Description."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str
    version: int
    last_modified: str | None = None  # ISO 8601, UTC
    description: str | None = None


# ---- validation ----------------------------------------------------------------------------------------------
def _check_slug(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InputError(
            f"invalid {kind} name {value!r}",
            hint=f"use the {kind} name from slipway.yaml: lowercase letters, digits and dashes, 1-40 characters, e.g. hello-api",
            ref="invalid-flag-input",
        )
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not FLAG_NAME_RE.fullmatch(name):
        raise InputError(
            f"invalid flag name {name!r}",
            hint="start with a letter and use only letters, digits and _ (at most 64 characters), e.g. NEW_CHECKOUT",
            ref="invalid-flag-input",
        )
    return name


def _check_value(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"flag {name} value must be a string, not {type(value).__name__}", hint="quote it, e.g. \"on\"", ref="invalid-flag-input")
    if value == "":
        raise InputError(
            f"flag {name} value is empty",
            hint="SSM refuses empty values; use an explicit value such as off, or `slipway flag delete` to remove the flag",
            ref="invalid-flag-input",
        )
    if len(value) > MAX_VALUE_CHARS:
        raise InputError(
            f"flag {name} value is {len(value)} characters",
            hint=f"SSM standard parameters hold at most {MAX_VALUE_CHARS}; keep flags short and put data elsewhere",
            ref="invalid-flag-input",
        )
    if "\x00" in value:
        raise InputError(f"flag {name} value contains a NUL character", hint="an environment variable cannot carry one; remove it", ref="invalid-flag-input")
    return value


def _check_actor(actor: str) -> str:
    if len(actor) > MAX_ACTOR_CHARS or not actor.isprintable():
        raise InputError(
            f"invalid actor {actor[:40]!r}",
            hint=f"name who set the flag in at most {MAX_ACTOR_CHARS} printable characters, e.g. user@host",
            ref="invalid-flag-input",
        )
    return actor


def validate_flag(app: str, env: str, name: str, value: str) -> None:
    """Everything ``set_flag`` checks before calling AWS (the CLI calls it before reaching Prefect or AWS)."""
    flag_path(app, env, name)
    _check_value(name, value)


def flag_path(app: str, env: str, name: str | None = None) -> str:
    """``/slipway/{app}/{env}/flags`` or, with a name, ``/slipway/{app}/{env}/flags/{name}``."""
    base = f"/slipway/{_check_slug('app', app)}/{_check_slug('environment', env)}/flags"
    return base if name is None else f"{base}/{_check_name(name)}"


# ---- AWS boundary --------------------------------------------------------------------------------------------
def _ssm(
    action: str,
    permission: str,
    target: str,
    fn: Callable[[], Any],
    *,
    not_found: InputError | None = None,
) -> Any:
    """Run ``fn`` (which may iterate a paginator) and translate botocore errors: access denied names the IAM
    permission; ParameterNotFound becomes ``not_found`` when given; the rest goes through ``slipway.core.aws.translate``."""
    try:
        return fn()
    except ClientError as exc:
        code = error_code(exc)
        if code in ACCESS_DENIED_CODES:
            raise CredentialsError(
                f"AWS denied {permission} to {action} ({code})",
                target=target,
                hint=f"grant {permission} on arn:aws:ssm:*:*:parameter{target} to the credentials in the aws-credentials block",
                ref="flag-access-denied",
                evidence={"aws_error_code": code, "permission": permission},
            ) from exc
        if code == "ParameterNotFound" and not_found is not None:
            raise not_found from exc
        raise translate(exc, DeployError, action, target=target) from exc
    except BotoCoreError as exc:
        raise translate(exc, DeployError, action, target=target) from exc


def _no_such_flag(app: str, env: str, name: str) -> InputError:
    return InputError(f"no flag {name} in {app}/{env}", hint=f"`slipway flag list {app} {env}` shows them", ref="unknown-flag")


def _iso(when: Any) -> str | None:
    return when.astimezone(timezone.utc).isoformat() if when is not None else None


def _flag_from(param: dict, app: str, env: str) -> FlagValue:
    path = param["Name"]
    name = path.rsplit("/", 1)[-1]
    if param.get("Type") != "String" or not FLAG_NAME_RE.fullmatch(name):
        # Someone put it there by hand. Skipping it would hide that it is never delivered; a SecureString
        # must never be copied into environment variables or the ledger.
        raise DeployError(
            f"parameter {path} ({param.get('Type')}) is not a flag",
            target=f"{app}/{env}",
            hint="flags are String parameters named like NEW_CHECKOUT; delete it or move it out of the flags path",
            ref="not-a-flag",
        )
    return FlagValue(
        name=name,
        value=param["Value"],
        version=int(param["Version"]),
        last_modified=_iso(param.get("LastModifiedDate")),
        description=param.get("Description"),
    )


# ---- operations ----------------------------------------------------------------------------------------------
def set_flag(ssm, app: str, env: str, name: str, value: str, *, actor: str | None = None) -> FlagValue:
    """Write a new version of the flag (creating it at version 1). Delivered at the next deploy of ``env``.
    The result has no ``last_modified``: PutParameter does not return it (``read_flags`` does)."""
    path = flag_path(app, env, name)
    _check_value(name, value)
    who = _check_actor(actor if actor is not None else default_actor())
    reply = _ssm(
        f"set flag {name}",
        "ssm:PutParameter",
        path,
        lambda: ssm.put_parameter(Name=path, Value=value, Type="String", Overwrite=True, Description=f"set by {who}"),
    )
    return FlagValue(name=name, value=value, version=int(reply["Version"]), description=f"set by {who}")


def read_flags(ssm, app: str, env: str) -> dict[str, FlagValue]:
    """The latest version of every flag of ``app`` in ``env``, by name (an environment with none gives {})."""
    path = flag_path(app, env)

    def fetch() -> list[dict]:
        pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=False)
        return [param for page in pages for param in page.get("Parameters", [])]

    params = _ssm(f"read the flags of {app}/{env}", "ssm:GetParametersByPath", path, fetch)
    flags = [_flag_from(param, app, env) for param in params]
    return {flag.name: flag for flag in sorted(flags, key=lambda f: f.name)}


def flag_history(ssm, app: str, env: str, name: str) -> list[FlagValue]:
    """Every stored version of the flag, oldest first (SSM keeps the last 100)."""
    path = flag_path(app, env, name)

    def fetch() -> list[dict]:
        pages = ssm.get_paginator("get_parameter_history").paginate(Name=path)
        return [param for page in pages for param in page.get("Parameters", [])]

    params = _ssm(f"read the history of flag {name}", "ssm:GetParameterHistory", path, fetch, not_found=_no_such_flag(app, env, name))
    return sorted((_flag_from(param, app, env) for param in params), key=lambda f: f.version)


def delete_flag(ssm, app: str, env: str, name: str) -> None:
    """Delete the flag and its history. Functions keep the value they were deployed with until the next deploy."""
    path = flag_path(app, env, name)
    _ssm(f"delete flag {name}", "ssm:DeleteParameter", path, lambda: ssm.delete_parameter(Name=path), not_found=_no_such_flag(app, env, name))


# ---- delivery, ledger and diagnosis --------------------------------------------------------------------------
def flag_env_vars(flags: dict[str, FlagValue]) -> dict[str, str]:
    """``{"SLIPWAY_FLAG_<NAME upper>": value}``: how flags reach the function. Two flags whose names differ only
    in case would land on one variable, so that is refused."""
    env: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in sorted(flags):
        key = ENV_PREFIX + _check_name(name).upper()
        if key in env:
            raise InputError(
                f"flags {owner[key]} and {name} both become {key}",
                hint="delete one of them (`slipway flag delete`); flag names must differ in more than case",
                ref="flag-name-clash",
            )
        env[key] = flags[name].value
        owner[key] = name
    return env


def flags_fingerprint(flags: dict[str, FlagValue]) -> dict[str, dict]:
    """What the ledger records for a deploy: ``{name: {"version": v, "value": value}}`` (flags are not secret)."""
    return {name: {"version": flags[name].version, "value": flags[name].value} for name in sorted(flags)}


_PLAIN = re.compile(r"[A-Za-z0-9_.:@/+=,-]{1,60}")


def _show(value: Any) -> str:
    """A value on one line: as is when short and plain, otherwise quoted (JSON escapes) and cut at 60 characters."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text[:60] + ("…" if len(text) > 60 else ""), ensure_ascii=False)


def diff_flags(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """Human lines comparing two fingerprints, by name: ``+ NEW_CHECKOUT=on (v1)``,
    ``~ BETA: off → on (v2 → v3)``, ``~ BETA: on (v2 → v3, value unchanged)``, ``- OLD_FLAG``."""
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(f"- {name}")
        elif name not in old:
            lines.append(f"+ {name}={_show(new[name].get('value'))} (v{new[name].get('version')})")
        else:
            before, after = old[name], new[name]
            versions = f"v{before.get('version')} → v{after.get('version')}"
            if before.get("value") != after.get("value"):
                lines.append(f"~ {name}: {_show(before.get('value'))} → {_show(after.get('value'))} ({versions})")
            elif before.get("version") != after.get("version"):
                lines.append(f"~ {name}: {_show(after.get('value'))} ({versions}, value unchanged)")
    return lines


__all__ = [
    "ENV_PREFIX",
    "FLAG_NAME_RE",
    "MAX_VALUE_CHARS",
    "FlagValue",
    "delete_flag",
    "diff_flags",
    "flag_env_vars",
    "flag_history",
    "flag_path",
    "flags_fingerprint",
    "read_flags",
    "set_flag",
]

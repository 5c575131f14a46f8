"""Preflight checks against an environment's AWS account, before the first deploy of a release (read-only).

- **credentials usable**: STS GetCallerIdentity with the environment's credentials (the caller's ARN is shown;
  no secret is);
- **target**: the execution role exists (IAM GetRole; without iam:GetRole the check says so and passes) and the
  function either exists (its state is shown) or will be created;
- **alarms**: every alarm named in the spec exists (a missing one would stop the release at the alarm gate anyway),
  and one already in ALARM is *reported*, not blocking: the gate fails a stage only on an alarm that newly fires.

Plain functions returning ``PreflightCheck``; no Prefect.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from slipway.verify import alarms
from slipway.core.aws import error_code, is_transient, translate
from slipway.core.errors import CredentialsError, SlipwayError, VerificationFailed
from slipway.artifact.preflight import PreflightCheck

NOT_PERMITTED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


def _refusal(name: str, exc: BaseException, action: str) -> PreflightCheck:
    err = translate(exc, CredentialsError, action)
    ref = "aws-unreachable" if is_transient(exc) or getattr(err, "ref", "") == "aws-unreachable" else getattr(err, "ref", "credentials-refused")
    return PreflightCheck(name=name, passed=False, detail=err.one_line(), ref=ref)


def check_identity(sts: Any, env: str) -> PreflightCheck:
    name = f"{env}: credentials usable"
    try:
        who = sts.get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        return _refusal(name, exc, f"check the credentials of {env} (sts:GetCallerIdentity)")
    return PreflightCheck(name=name, passed=True, detail=f"AWS account {who.get('Account')} as {who.get('Arn')}")


def check_lambda_target(lam: Any, iam: Any, env: str, function: str, role_arn: str) -> PreflightCheck:
    name = f"{env}: target"
    role_name = role_arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=role_name)
        role = f"role {role_name} exists"
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return PreflightCheck(name=name, passed=False, ref="role-missing",
                                  detail=f"execution role {role_arn} does not exist: create it (trusting lambda.amazonaws.com) or fix "
                                         f"role_arn in the lambda-target block of {env}")
        if error_code(exc) not in NOT_PERMITTED:
            return _refusal(name, exc, f"read the execution role of {env}")
        role = f"role {role_name} not checked (no iam:GetRole permission)"
    except BotoCoreError as exc:
        return _refusal(name, exc, f"read the execution role of {env}")
    try:
        conf = lam.get_function_configuration(FunctionName=function)
        where = f"function {function} exists ({conf.get('State') or 'Active'}, {conf.get('Runtime')})"
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            return _refusal(name, exc, f"read function {function}")
        where = f"function {function} will be created"
    except BotoCoreError as exc:
        return _refusal(name, exc, f"read function {function}")
    return PreflightCheck(name=name, passed=True, detail=f"{where}; {role}")


def check_alarms(cw: Any, env: str, names: list[str]) -> PreflightCheck:
    """Passes with a note when an alarm is already in ALARM (reported, not blocking); fails when one is missing."""
    name = f"{env}: alarms"
    try:
        states = alarms.snapshot(cw, names)
    except VerificationFailed as exc:
        return PreflightCheck(name=name, passed=False, detail=exc.one_line(), ref=exc.ref)
    except SlipwayError as exc:
        return PreflightCheck(name=name, passed=False, detail=exc.one_line(), ref=exc.ref)
    firing = [s for s in states.values() if s.state == "ALARM"]
    if firing:
        listed = ", ".join(f"{s.name} ({s.reason})" if s.reason else s.name for s in firing)
        return PreflightCheck(name=name, passed=True,
                              detail=f"ALREADY IN ALARM before the release (reported, not blocking; only a newly firing alarm fails a stage): {listed}")
    return PreflightCheck(name=name, passed=True, detail=f"{len(states)} alarm(s) exist, none in ALARM")


__all__ = ["check_alarms", "check_identity", "check_lambda_target"]

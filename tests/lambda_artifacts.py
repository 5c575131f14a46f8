"""A one-file Lambda zip stored in the test's bucket as an ArtifactRef (for rollout tests against the local AWS)."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile

from slipway.core.models import ArtifactRef


def artifact(ctx, name: str, code: str) -> ArtifactRef:
    """``code`` as ``app.py`` in a zip under ``artifacts/{app}/{sha}.zip``; release id ``name``, commit ``name * 8``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", code)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    key = f"artifacts/{ctx.app}/{sha}.zip"
    ctx.s3.put_object(Bucket=ctx.bucket, Key=key, Body=data)
    return ArtifactRef(app=ctx.app, sha256=sha, size=len(data), bucket=ctx.bucket, key=key, manifest_key=key + ".json",
                       commit=name * 8, release_id=name)


def lambda_context(aws_endpoint: str, boto_session, prefix: str, run_id: str, checks: list | None = None):
    """An EnvContext for app ``{prefix}XXXXXXXX`` in prod on the local AWS: its own bucket and ledger, a Lambda target
    with 1 s metric periods and no delay (as the local stack's block), and ``.lam .s3 .bucket .cw`` for the test."""
    from slipway.record.ledger import Ledger
    from slipway.rollout import staged
    from slipway.targets.aws_lambda import LambdaSettings, LambdaTarget

    s3, lam, cw, iam = (boto_session.client(svc, endpoint_url=aws_endpoint) for svc in ("s3", "lambda", "cloudwatch", "iam"))
    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    try:
        role = iam.create_role(RoleName=f"{prefix}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=f"{prefix}-role")["Role"]["Arn"]
    app = f"{prefix}{uuid.uuid4().hex[:8]}"
    settings = LambdaSettings(function_name=f"{app}-prod", alias="live", role_arn=role, handler="app.handler", runtime="python3.11")
    target = LambdaTarget(lam, settings, sleep=lambda s: None, cw=cw, metrics_period_s=1, metrics_delay_s=0)
    ctx = staged.EnvContext(ledger=Ledger(s3, bucket), app=app, environment="prod", target=target, checks=list(checks or []), run_id=run_id)
    ctx.lam, ctx.s3, ctx.bucket, ctx.cw = lam, s3, bucket, cw  # type: ignore[attr-defined]
    return ctx

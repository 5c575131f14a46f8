"""A one-file Lambda zip stored in the test's bucket as an ArtifactRef (for rollout tests against the local AWS)."""

from __future__ import annotations

import hashlib
import io
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

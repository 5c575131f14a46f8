"""Release on push, by polling: which watched branches have a head not seen before.

A watched branch's last seen head is kept in the artifact store (``watch/{key}.json``, one object per repository and
branch) and claimed with a conditional write: of two watchers that see the same new head, one starts its release.
Only the head is released: commits pushed between two checks are part of it, so a burst of pushes releases the
newest commit once, and a commit is never released twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from botocore.exceptions import ClientError

from slipway.core.aws import is_not_found, is_precondition_failed, translate
from slipway.core.errors import LedgerError


@dataclass(frozen=True)
class Watched:
    repo_url: str
    branch: str = "main"
    spec_path: str | None = None
    only: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.repo_url}\n{self.branch}".encode()).hexdigest()[:32]


def claim_new_head(s3, bucket: str, prefix: str, watched: Watched, head: str) -> bool:
    """Record ``head`` as seen for ``watched``; True only for the one call that recorded it first."""
    key = f"{(prefix.strip('/') + '/') if prefix.strip('/') else ''}watch/{watched.key}.json"
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        seen, condition = json.loads(obj["Body"].read()).get("commit"), {"IfMatch": obj["ETag"]}
    except ClientError as exc:
        if not is_not_found(exc):
            raise translate(exc, LedgerError, "read what the watch saw", target=key) from exc
        seen, condition = None, {"IfNoneMatch": "*"}
    if seen == head:
        return False
    body = json.dumps({"repo_url": watched.repo_url, "branch": watched.branch, "commit": head, "previous": seen}).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        if is_precondition_failed(exc):
            return False  # another watcher recorded a head meanwhile: it starts that release
        raise translate(exc, LedgerError, "record what the watch saw", target=key) from exc
    return True

"""Push webhooks from GitHub, Gitea and GitLab, checked before anything happens.

A delivery is accepted only when: its body is at most ``MAX_BODY`` bytes (413 otherwise, unread); its signature
verifies against the shared secret (GitHub ``X-Hub-Signature-256: sha256=<hmac>``, Gitea ``X-Gitea-Signature: <hmac>``,
GitLab ``X-Gitlab-Token: <secret>``), else 401; its delivery id (``X-GitHub-Delivery``, ``X-Gitea-Delivery``,
``X-Gitlab-Event-UUID``) was not seen before (409: a replay); and it is a push to a branch (other events: 202, nothing
started). What comes out is a ``Push`` (repository URL, branch, commit) for the caller to turn into a release.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass

MAX_BODY = 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Push:
    repo_url: str
    branch: str
    commit: str
    delivery: str
    source: str  # github | gitea | gitlab


@dataclass(frozen=True)
class Verdict:
    status: int  # the HTTP answer
    reason: str
    push: Push | None = None


class Deliveries:
    """Delivery ids already accepted (bounded, oldest forgotten first): a replayed delivery is refused."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, delivery: str) -> bool:
        if delivery in self._seen:
            return False
        self._seen[delivery] = None
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


def _header(headers, name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else None


def check_delivery(headers, body: bytes, secret: bytes, deliveries: Deliveries) -> Verdict:
    """Verify one delivery (``headers``: a case-insensitive mapping); nothing is trusted before the signature."""
    if len(body) > MAX_BODY:
        return Verdict(413, f"body over {MAX_BODY} bytes")
    mac = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if (sig := _header(headers, "X-Hub-Signature-256")) is not None:
        source, ok, delivery = "github", hmac.compare_digest(sig, f"sha256={mac}"), _header(headers, "X-GitHub-Delivery")
        event = _header(headers, "X-GitHub-Event")
    elif (sig := _header(headers, "X-Gitea-Signature")) is not None:
        source, ok, delivery = "gitea", hmac.compare_digest(sig, mac), _header(headers, "X-Gitea-Delivery")
        event = _header(headers, "X-Gitea-Event")
    elif (token := _header(headers, "X-Gitlab-Token")) is not None:
        source, ok, delivery = "gitlab", hmac.compare_digest(token.encode(), secret), _header(headers, "X-Gitlab-Event-UUID")
        event = "push" if _header(headers, "X-Gitlab-Event") == "Push Hook" else _header(headers, "X-Gitlab-Event")
    else:
        return Verdict(401, "no signature (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")
    if not ok:
        return Verdict(401, f"the {source} signature does not verify")
    if not delivery:
        return Verdict(400, "no delivery id: replays could not be told apart")
    if not deliveries.first_time(f"{source}:{delivery}"):
        return Verdict(409, f"delivery {delivery} was already received (a replay)")
    if event != "push":
        return Verdict(202, f"{event or 'unknown'} event: nothing to release")
    try:
        data = json.loads(body)
        ref, commit = data["ref"], data["after"]
        repo = data.get("repository") or data.get("project") or {}
        url = repo.get("clone_url") or repo.get("git_http_url") or repo.get("http_url")
    except (ValueError, KeyError, TypeError, AttributeError):
        return Verdict(400, "not a push payload")
    if not (isinstance(ref, str) and ref.startswith("refs/heads/") and isinstance(url, str) and _SHA.match(str(commit))):
        return Verdict(202, "not a push of a branch head (a tag, or a deleted branch): nothing to release")
    return Verdict(202, "push accepted", Push(url, ref.removeprefix("refs/heads/"), commit, delivery, source))

"""The push-webhook receiver: only a signed, first-time, size-limited push of a branch head starts anything; a bad or
missing signature gets 401, a replay 409, an oversize body 413 (unread), and none of them emits an event."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid

import pytest

from deployments.webhook import serve
from slipway.source.webhook import MAX_BODY

SECRET = b"s3cret-webhook-key-0123456789"
COMMIT = "a" * 40
REPO = "https://git.example.com/team/orders.git"


@pytest.fixture
def receiver():
    pushes = []
    server = serve("127.0.0.1", 0, SECRET, emit=pushes.append)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/push", pushes
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _github(payload: dict, secret: bytes = SECRET, delivery: str | None = None, event: str = "push") -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    return body, {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                  "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


PUSH = {"ref": "refs/heads/main", "after": COMMIT, "repository": {"clone_url": REPO}}


def test_a_signed_github_push_is_accepted_once_and_its_replay_refused(receiver):
    url, pushes = receiver
    body, headers = _github(PUSH)
    assert _post(url, body, headers)[0] == 202
    assert [(p.repo_url, p.branch, p.commit, p.source) for p in pushes] == [(REPO, "main", COMMIT, "github")]
    status, answer = _post(url, body, headers)  # the same delivery again
    assert status == 409 and "replay" in answer["reason"] and len(pushes) == 1


@pytest.mark.parametrize("how", ["wrong secret", "no signature", "tampered body"])
def test_a_bad_or_missing_signature_gets_401_and_starts_nothing(receiver, how):
    url, pushes = receiver
    body, headers = _github(PUSH, secret=b"not-the-secret-at-all" if how == "wrong secret" else SECRET)
    if how == "no signature":
        headers.pop("X-Hub-Signature-256")
    if how == "tampered body":
        body = body.replace(b"main", b"prod")
    assert _post(url, body, headers)[0] == 401
    assert pushes == []


def test_an_oversize_body_is_refused_unread(receiver):
    """Refused on its Content-Length: the answer comes before a byte of the body is sent."""
    import http.client
    from urllib.parse import urlsplit

    url, pushes = receiver
    body, headers = _github({**PUSH, "padding": "x" * (MAX_BODY + 1)})
    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=10)
    conn.putrequest("POST", urlsplit(url).path)
    for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
        conn.putheader(name, value)
    conn.endheaders()  # headers only: the server must answer without the body
    assert conn.getresponse().status == 413
    conn.close()
    assert pushes == []


def test_gitea_and_gitlab_pushes_and_events_that_are_not_pushes(receiver):
    url, pushes = receiver
    body = json.dumps(PUSH).encode()
    gitea = {"X-Gitea-Event": "push", "X-Gitea-Delivery": str(uuid.uuid4()),
             "X-Gitea-Signature": hmac.new(SECRET, body, hashlib.sha256).hexdigest()}
    assert _post(url, body, gitea)[0] == 202
    gitlab_body = json.dumps({"ref": "refs/heads/dev", "after": "b" * 40, "project": {"git_http_url": REPO}}).encode()
    gitlab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": str(uuid.uuid4()), "X-Gitlab-Token": SECRET.decode()}
    assert _post(url, gitlab_body, gitlab)[0] == 202
    assert _post(url, gitlab_body, {**gitlab, "X-Gitlab-Event-UUID": str(uuid.uuid4()), "X-Gitlab-Token": "wrong"})[0] == 401
    tag = dict(PUSH, ref="refs/tags/v1")
    body, headers = _github(tag)
    assert _post(url, body, headers)[0] == 202  # accepted, but not a branch head: nothing to release
    body, headers = _github({"zen": "hi"}, event="ping")
    assert _post(url, body, headers)[0] == 202
    assert [(p.source, p.branch, p.commit) for p in pushes] == [("gitea", "main", COMMIT), ("gitlab", "dev", "b" * 40)]


def test_a_signed_push_naming_a_hostile_repository_url_is_refused(receiver):
    url, pushes = receiver
    body, headers = _github({**PUSH, "repository": {"clone_url": "ext::sh -c touch% /tmp/pwned"}})
    assert _post(url, body, headers)[0] == 400
    assert pushes == []

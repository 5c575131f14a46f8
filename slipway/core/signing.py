"""HMAC signatures on what Slipway stores as pointers and records (build pointers, provenance manifests, ledger
entries and head checkpoints), so that someone who can write the bucket but does not hold the key cannot forge them.

A signed object is its JSON with one more member, ``"signature": "hmac-sha256:<hex>"``, computed over the object's
S3 key and its canonical JSON (sorted keys, no spaces) without that member: a signed entry copied to another key (an
app, an environment, a sequence number) does not verify there. With a key configured every such object must carry a
valid signature; without one, signatures are ignored (and stripped before the object is read)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

PREFIX = "hmac-sha256:"
FIELD = "signature"


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    """Signs and verifies with one secret key (held in memory only; never logged: its repr hides it)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a signing key needs at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Signer(key=**********)"

    def signature(self, object_key: str, obj: dict[str, Any]) -> str:
        body = {k: v for k, v in obj.items() if k != FIELD}
        return PREFIX + hmac.new(self._key, object_key.encode() + b"\n" + canonical(body), hashlib.sha256).hexdigest()

    def seal(self, object_key: str, obj: dict[str, Any]) -> bytes:
        """The object's JSON with its signature."""
        return json.dumps({**{k: v for k, v in obj.items() if k != FIELD}, FIELD: self.signature(object_key, obj)},
                          sort_keys=True).encode()

    def verifies(self, object_key: str, obj: dict[str, Any]) -> bool:
        found = obj.get(FIELD)
        return isinstance(found, str) and hmac.compare_digest(found, self.signature(object_key, obj))


def seal(signer: Signer | None, object_key: str, obj: dict[str, Any]) -> bytes:
    """What to write: signed when there is a key, plain JSON otherwise."""
    return signer.seal(object_key, obj) if signer is not None else json.dumps(obj, sort_keys=True).encode()


def opened(signer: Signer | None, object_key: str, body: bytes | str) -> tuple[dict[str, Any], str | None]:
    """(the object without its signature, a problem or None). With a key, a missing or wrong signature is a problem;
    JSON that is not an object is one too. Raises ValueError for bytes that are not JSON."""
    obj = json.loads(body)
    if not isinstance(obj, dict):
        return {}, "it is not a JSON object"
    problem = None
    if signer is not None and not signer.verifies(object_key, obj):
        problem = "its signature is missing" if FIELD not in obj else "its signature does not verify (written without the key)"
    return {k: v for k, v in obj.items() if k != FIELD}, problem

"""hello-lambda v3: greets through a new dependency that times out on ~30% of real invocations.

The bug the canary part of the demo shows: the unit tests call the handler without a Lambda context and pass;
in Lambda about 3 in 10 greetings fail. The health check never calls the dependency, so smoke checks alone
would promote it; the canary's error-rate comparison against v1 catches it at 20% of the traffic.
"""

import hashlib
import json

VERSION = "3"


def _flaky_dependency(context) -> None:
    if context is None:  # unit tests: no Lambda, no dependency
        return
    draw = int(hashlib.sha256(context.aws_request_id.encode()).hexdigest(), 16) % 10
    if draw < 3:
        raise TimeoutError("greeting service did not answer within 3 s")


def handler(event, context):
    event = event or {}
    if event.get("path") == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION})}
    _flaky_dependency(context)
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {"statusCode": 200, "body": json.dumps({"message": f"hello, {name}", "version": VERSION})}

"""hello-lambda v2: greets with a configurable greeting.

The bug the demo shows: GREETING is read from the environment at call time, the unit tests set it, but no
environment in slipway.yaml does, so every invocation in Lambda fails with KeyError.
"""

import json
import os

VERSION = "2"


def handler(event, context):
    event = event or {}
    greeting = os.environ["GREETING"]
    if event.get("path") == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION, "greeting": greeting})}
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {"statusCode": 200, "body": json.dumps({"message": f"{greeting}, {name}", "version": VERSION})}

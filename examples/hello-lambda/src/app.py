"""hello-lambda: a tiny API Gateway-style handler released by Slipway."""

import json

VERSION = "1"


def handler(event, context):
    event = event or {}
    if event.get("path") == "/health":
        return {"statusCode": 200, "body": json.dumps({"ok": True, "version": VERSION})}
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {"statusCode": 200, "body": json.dumps({"message": f"hello, {name}", "version": VERSION})}

import json

from app import handler


def test_health():
    reply = handler({"path": "/health"}, None)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["ok"] is True


def test_greets_by_name():
    reply = handler({"queryStringParameters": {"name": "ada"}}, None)
    assert json.loads(reply["body"])["message"] == "hello, ada"

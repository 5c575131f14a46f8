import json

from app import handler


def test_health(monkeypatch):
    monkeypatch.setenv("GREETING", "hi")
    reply = handler({"path": "/health"}, None)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["ok"] is True


def test_greets_with_configured_greeting(monkeypatch):
    monkeypatch.setenv("GREETING", "hi")
    reply = handler({"queryStringParameters": {"name": "ada"}}, None)
    assert json.loads(reply["body"])["message"] == "hi, ada"

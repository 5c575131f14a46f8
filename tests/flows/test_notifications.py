"""The notification on rollback of docs/prefect-deployments.md: an automation on ``slipway.rollback.completed`` sends a webhook
notification block, here to a test HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest



@pytest.fixture
def webhook():
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_a_rollback_sends_the_documented_notification(prefect_api, app_repo, webhook):
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger

    from flows.release import release, rollback

    url, received = webhook
    repo = app_repo()
    block = CustomWebhookNotificationBlock(name="slipway-rollbacks", url=url, method="POST", allow_private_urls=True,
                                           json_data={"text": "{{subject}} | {{body}}"})
    block_id = block.save(f"rollbacks-{repo.app}", overwrite=True)
    automation = Automation(  # as in docs/prefect-deployments.md → Events
        name=f"slipway: tell us about rollbacks ({repo.app})",
        trigger=EventTrigger(expect={"slipway.rollback.completed", "slipway.rollback.failed"},
                             match={"prefect.resource.id": f"slipway.env.{repo.app}.*"}, posture="Reactive", threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject="{{ event.event }} {{ event.resource.name }}",
                                  body="{{ event.payload.reason }} → {{ event.payload.to_release }}")],
    ).create()
    try:
        first = release(repo_url=repo.url, ref="v1", only=["dev"], return_state=True).result()
        repo.write("src/app.py", (repo.path / "src/app.py").read_text().replace('VERSION = "1"', 'VERSION = "2"')).commit("v2", tag="v2")
        assert release(repo_url=repo.url, ref="v2", only=["dev"], return_state=True).is_completed()
        outcome = rollback(app=repo.app, environment="dev", reason="manual, from the test")
        assert outcome["to_release"] == first["release_id"]

        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            time.sleep(0.25)  # polling interval for the server's automation, not a wait for an outcome
        assert received, "no notification within 60 s"
        text = received[0]["text"]
        assert text == f"slipway.rollback.completed {repo.app}/dev | manual, from the test → {first['release_id']}"
    finally:
        automation.delete()

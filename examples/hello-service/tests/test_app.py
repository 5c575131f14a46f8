import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import respond  # noqa: E402


def test_health_is_ok():
    assert respond("/health") == (200, "text/plain", "ok")


def test_root_greets_with_the_version():
    status, _, body = respond("/")
    assert status == 200 and json.loads(body)["message"] == "hello from hello-service"

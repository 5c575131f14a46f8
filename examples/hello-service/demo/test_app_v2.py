import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import respond  # noqa: E402


def test_health_is_ok_with_a_database(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/hello")
    assert respond("/health")[0] == 200

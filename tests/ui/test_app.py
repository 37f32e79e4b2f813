"""The Streamlit app without a server; the live run with a trained model is in tests/test_end_to_end.py."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def test_api_down_shows_which_url_and_how_to_start_it(monkeypatch):
    monkeypatch.setenv("AGENTLM_API_URL", "http://127.0.0.1:9/v1")
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception
    message = at.error[0].value
    assert "http://127.0.0.1:9/v1" in message and "agentlm serve" in message

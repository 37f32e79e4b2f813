"""The Streamlit app without a server; the live run with a trained model is in tests/test_end_to_end.py."""

from pathlib import Path

from scripted import hr_opening, scripted_server
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def test_api_down_shows_which_url_and_how_to_start_it(monkeypatch):
    monkeypatch.setenv("AGENTLM_API_URL", "http://127.0.0.1:9/v1")
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception
    message = at.error[0].value
    assert "http://127.0.0.1:9/v1" in message and "agentlm serve" in message


def answer(text: str) -> str:
    return f"I have it.\nAction: Answer\nFinal Answer: {text}"


def test_each_question_carries_the_conversation_until_a_new_one_starts(monkeypatch, tmp_path):
    with scripted_server(tmp_path / "store.sqlite3") as (v1, engine):
        monkeypatch.setenv("AGENTLM_API_URL", v1)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        engine.script(answer("Dana Kim has 18 vacation days left."))
        at.chat_input[0].set_value("How many vacation days does Dana Kim have left?").run()
        assert not at.exception
        engine.script(answer("Zoe Kowalski."))
        at.chat_input[0].set_value("And who is that person's manager?").run()
        assert not at.exception
        # The second question went with the first question and the answer the user saw.
        shown = [[md.value for md in m.markdown] for m in at.chat_message]
        assert len(shown) == 4 and "Dana Kim has 18 vacation days left." in shown[1]
        assert "Zoe Kowalski." in shown[3]
        opening = hr_opening(
            "How many vacation days does Dana Kim have left?", "And who is that person's manager?"
        )
        (prompt,) = engine.prompts()
        assert prompt == [
            *opening,
            {"role": "user", "content": "How many vacation days does Dana Kim have left?"},
            {
                "role": "assistant",
                "content": "Action: Answer\nFinal Answer: Dana Kim has 18 vacation days left.",
            },
            {"role": "user", "content": "And who is that person's manager?"},
        ]

        next(b for b in at.button if b.label == "New conversation").click().run()
        assert len(at.chat_message) == 0
        engine.script(answer("10 people work in Sales."))
        at.chat_input[0].set_value("How many people work in Sales?").run()
        (prompt,) = engine.prompts()
        assert prompt == [
            *hr_opening("How many people work in Sales?"),
            {"role": "user", "content": "How many people work in Sales?"},
        ]

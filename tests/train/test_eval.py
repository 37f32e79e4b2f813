"""agentlm eval: agent success through served models, multiple choice and perplexity in-process."""

from __future__ import annotations

import json

import pytest
from localhttp import Handler, serve
from tiny import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentlm.data.dbgen import HELDOUT_DOMAINS, generate, label_and_verify
from agentlm.data.formats import read_jsonl
from agentlm.train.eval import EvalRow, bundled, chat_perplexity, evaluate, main, mc_accuracy, table


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    records, _ = label_and_verify(generate(HELDOUT_DOMAINS, 6, seed=5, kinds=("counting", "other")))
    path = tmp_path_factory.mktemp("eval") / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, records


def endpoint(policy):
    """An OpenAI-compatible model on 127.0.0.1 whose replies come from `policy(messages)`."""

    class Model(Handler):
        def do_GET(self):  # noqa: N802 - /v1/models
            self.send(
                200,
                json.dumps(
                    {
                        "object": "list",
                        "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}],
                    }
                ).encode(),
                "application/json",
            )

        def do_POST(self):  # noqa: N802 - /v1/chat/completions
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = policy(body["messages"])
            reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}  # fmt: skip
            self.send(200, json.dumps(reply).encode(), "application/json")

    return serve(Model)


def test_agent_success_is_the_share_of_tasks_a_served_model_solves(heldout, tmp_path):
    path, records = heldout
    by_question = {f"{r['description']}\n{r['add_description']}": r for r in records}

    def oracle(messages):  # answers from the gold SQL the way a perfect agent would
        record = by_question[messages[2]["content"]]
        if messages[-1]["role"] == "user" and messages[-1]["content"].startswith("[("):
            return f"Done.\nAction: Answer\nFinal Answer: {json.dumps(record['label'])}"
        return f"I query.\nAction: Operation\n```sql\n{record['sql']['query']}\n```"

    with endpoint(oracle) as base:
        (row,) = evaluate([f"oracle={base}/v1"], [path], None, general=False)
    assert row.tasks == {"heldout": 1.0}
    kinds = {r["type"][0] for r in records}  # AgentBench's per-type rows, as its results report them
    assert kinds == {"counting", "other"} and row.by_type == {"heldout": dict.fromkeys(sorted(kinds), 1.0)}
    assert "heldout by type | counting | other" in table([row])

    def half(messages):  # right on counting questions, a wrong answer on the others
        record = by_question[messages[2]["content"]]
        return oracle(messages) if record["type"] == ["counting"] else 'Action: Answer\nFinal Answer: ["x"]'

    with endpoint(half) as base:
        (row,) = evaluate([f"half={base}/v1"], [path], None, general=False)
    assert row.by_type["heldout"] == {"counting": 1.0, "other": 0.0}
    with endpoint(lambda m: 'Action: Answer\nFinal Answer: ["nobody"]') as base:
        (row,) = evaluate(
            [f"guesser={base}/v1"], [path], None, general=False, runs_dir=tmp_path, max_rounds=2
        )
    assert row.tasks == {"heldout": 0.0}
    runs = [json.loads(line) for line in (tmp_path / "guesser-heldout.jsonl").read_text().splitlines()]
    assert len(runs) == len(records) and {r["reward"] for r in runs} == {0.0}
    assert runs[0]["trajectory"]["final_answer"] == '["nobody"]'


class Favours:
    """A stand-in model whose next-token logits favour the tokens of one text everywhere."""

    def __init__(self, token_ids: set[int], vocab: int):
        self.token_ids, self.vocab = sorted(token_ids), vocab

    def __call__(self, ids):
        import torch

        logits = torch.zeros((1, ids.shape[1], self.vocab))
        logits[..., self.token_ids] = 8.0
        return type("Out", (), {"logits": logits})()


def test_multiple_choice_picks_the_most_likely_answer(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(
        build_tiny_model(tmp_path / "m", ["alpha beta gamma delta"] * 20, vocab_size=300)
    )
    (tmp_path / "mc.jsonl").write_text(
        json.dumps({"question": "q", "choices": ["alpha", "delta"], "answer": 1}) + "\n"
        + json.dumps({"question": "q", "choices": ["delta", "alpha"], "answer": 0}) + "\n"
    )  # fmt: skip

    def tokens_of(choice: str) -> set[int]:
        prompt = len(tokenizer("Question: q\nAnswer:")["input_ids"])
        return set(tokenizer(f"Question: q\nAnswer: {choice}")["input_ids"][prompt:])

    assert mc_accuracy(Favours(tokens_of("delta"), len(tokenizer)), tokenizer, tmp_path / "mc.jsonl") == 1.0
    assert mc_accuracy(Favours(tokens_of("alpha"), len(tokenizer)), tokenizer, tmp_path / "mc.jsonl") == 0.0


def test_a_local_checkpoint_is_served_for_agent_tasks_and_loaded_for_general_ability(
    heldout, tmp_path, capsys
):
    path, _ = heldout
    corpus = [t.content for c in read_jsonl(bundled("general_chat.jsonl")) for t in c.turns]
    ckpt = build_tiny_model(tmp_path / "tiny", corpus, vocab_size=800)
    main(["--model", str(ckpt), "--tasks", str(path), "--limit", "2", "--json", str(tmp_path / "r.json")])
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row["tasks"]["heldout"] == 0.0  # an untrained model solves nothing
    assert 0.0 <= row["mc_accuracy"] <= 1.0 and row["perplexity"] > 1.0
    assert "heldout" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    assert chat_perplexity(model, tokenizer) == pytest.approx(row["perplexity"], rel=1e-4)


def test_the_table_has_a_row_per_model():
    text = table(
        [EvalRow("base", {"heldout": 0.1}, 0.5, 30.0), EvalRow("tuned", {"heldout": 0.6}, 0.5, 31.0)]
    )
    assert text.splitlines()[0] == "model | heldout | general MC | chat ppl"
    assert "tuned | 60.0% | 50.0% | 31.00" in text

"""GET /v1/promotions: the history train/promote.py appends to, newest first, bad lines skipped."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from promotions import promote
from scripted import ScriptedEngine

from agentlm.serve.app import create_app
from agentlm.serve.protocol import EvalScores, PromotionRecord
from agentlm.serve.settings import ServeSettings
from agentlm.train.eval import EvalRow
from agentlm.train.promote import KEEP
from agentlm.train.promote import main as promote_main


def serve(tmp_path: Path, history: Path) -> TestClient:
    settings = ServeSettings(store=tmp_path / "store.sqlite3", profiles=[], promotions=history)
    return TestClient(create_app(settings, engine=ScriptedEngine()))


def test_each_decision_is_recorded_and_served_newest_first(tmp_path, caplog) -> None:
    history = tmp_path / "home" / "promotions.jsonl"
    with serve(tmp_path, history) as http:
        assert http.get("/v1/promotions").json() == {"object": "list", "data": []}  # no file yet

        first = EvalRow("runs/a", {"heldout": 0.5}, mc_accuracy=0.40, perplexity=10.0)
        assert promote(tmp_path, history, [first], "--checkpoint", "runs/a") == 0
        worse = EvalRow("runs/b", {"heldout": 0.25}, mc_accuracy=0.41, perplexity=9.0)
        status = promote(
            tmp_path, history, [first, worse], "--checkpoint", "runs/b", "--link", "runs/current"
        )
        assert status == KEEP
        better = EvalRow("runs/c", {"heldout": 0.75}, mc_accuracy=0.40, perplexity=10.1)
        assert promote(tmp_path, history, [first, better], "--stage", "preference") == 0
        with history.open("a") as f:  # a torn write and a hand edit: skipped, the rest still served
            f.write('{"decided_at": 1, "stage": "sft", "promo\n["not a record"]\n\n')

        with caplog.at_level(logging.WARNING, logger="agentlm.serve.promotions"):
            reply = http.get("/v1/promotions")
        assert reply.status_code == 200, reply.text
        data = reply.json()["data"]
        assert [r["checkpoint"] for r in data] == ["runs/c", "runs/b", "runs/a"]  # newest first
        assert [r["promote"] for r in data] == [True, False, True]
        assert [r["stage"] for r in data] == ["preference", "sft", "sft"]
        assert data[0]["decided_at"] >= data[1]["decided_at"] >= data[2]["decided_at"]
        kept = data[1]
        assert kept["link"] == "runs/current" and kept["reason"].startswith("worse on mean agent success")
        assert kept["previous"] == asdict(first) and kept["new"] == asdict(worse)
        assert kept["checks"][0] == "mean agent success (heldout): 50.0% -> 25.0% worse"
        assert kept["tolerance"] == 2.0 and kept["ppl_tolerance"] == 2.0
        assert data[2]["previous"] is None and data[2]["reason"] == "no previous checkpoint to compare with"
        assert data[0]["checkpoint"] == "runs/c"  # no --checkpoint: the candidate's eval name
        skipped = [r.getMessage() for r in caplog.records]
        assert len(skipped) == 2 and all("skipped, not a promotion record" in m for m in skipped)
        assert f"{history}:4:" in skipped[0] and f"{history}:5:" in skipped[1]


def test_out_gets_the_record_the_history_keeps(tmp_path) -> None:
    history, out = tmp_path / "promotions.jsonl", tmp_path / "promotion.json"
    row = EvalRow("runs/x", {"t": 1.0})
    promote(tmp_path, history, [row], "--out", str(out), "--checkpoint", "runs/x")
    (line,) = history.read_text().splitlines()
    assert PromotionRecord.model_validate_json(line) == PromotionRecord.model_validate(
        json.loads(out.read_text())
    )


def test_a_bad_stage_is_refused_and_eval_scores_mirror_eval_rows(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        promote_main(["--stage", "rlhf", "--history", str(tmp_path / "h.jsonl")])
    assert exit_.value.code == 2 and "--stage" in capsys.readouterr().err
    assert not (tmp_path / "h.jsonl").exists()
    # The API's shape of an eval row is train/eval.py's EvalRow, field for field.
    assert list(EvalScores.model_fields) == [f.name for f in fields(EvalRow)]

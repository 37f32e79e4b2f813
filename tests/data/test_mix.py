"""Seeded eta mixing: the agent share of examples, determinism, edge cases, the CLI."""

import subprocess
import sys
from collections import Counter

import pytest

from agentlm.data.formats import Conversation, Turn, read_jsonl, write_jsonl
from agentlm.data.mix import mix


def convs(source, n):
    return [
        Conversation(f"{source}-{i}", [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")], source)
        for i in range(n)
    ]


AGENT, GENERAL = convs("agent", 20), convs("general", 200)


def test_eta_is_the_agent_share_of_examples():
    mixture, report = mix(AGENT, GENERAL, eta=0.2, seed=0)
    assert report.agent_examples == 20 and report.general_examples == 80
    assert sum(c.source == "agent" for c in mixture) / len(mixture) == pytest.approx(0.2)
    assert not report.general_with_replacement
    assert report.examples_by_source == {"agent": 20, "general": 80}


def test_deterministic_for_a_seed():
    ids = lambda seed: [c.id for c in mix(AGENT, GENERAL, 0.2, seed)[0]]  # noqa: E731
    assert ids(0) == ids(0) and ids(0) != ids(1)


def test_edges_and_shortfall():
    only_agent, _ = mix(AGENT, GENERAL, 1.0)
    assert {c.source for c in only_agent} == {"agent"} and len(only_agent) == 20
    only_general, _ = mix(AGENT, GENERAL, 0.0)
    assert {c.source for c in only_general} == {"general"} and len(only_general) == 200
    mixture, report = mix(AGENT, convs("general", 30), 0.2)
    assert report.general_with_replacement and report.general_examples == 80
    # Short of general data, every example is repeated 2 or 3 times (80 = 2 * 30 + 20), none left out.
    uses = Counter(c.id for c in mixture if c.source == "general")
    assert len(uses) == 30 and set(uses.values()) == {2, 3} and sum(uses.values()) == 80


@pytest.mark.parametrize(("eta", "message"), [(1.5, "between 0 and 1"), (-0.1, "between 0 and 1")])
def test_bad_eta(eta, message):
    with pytest.raises(ValueError, match=message):
        mix(AGENT, GENERAL, eta)


def test_missing_inputs_are_named():
    with pytest.raises(ValueError, match="needs general examples"):
        mix(AGENT, [], 0.2)
    with pytest.raises(ValueError, match="needs agent examples"):
        mix([], GENERAL, 0.2)


def test_cli_writes_the_mixture_and_prints_the_report(tmp_path):
    write_jsonl(tmp_path / "agent.jsonl", AGENT[:10])
    write_jsonl(tmp_path / "general.jsonl", GENERAL[:50])
    out = tmp_path / "mix.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "agentlm.data.mix", "--agent", str(tmp_path / "agent.jsonl"),
         "--general", str(tmp_path / "general.jsonl"), "--eta", "0.5", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "20 examples, agent share 0.500 (10 agent, 10 general of 50 available)" in result.stdout
    assert "agent: 10 examples" in result.stdout and "general: 10 examples" in result.stdout
    assert Counter(c.source for c in read_jsonl(out)) == {"agent": 10, "general": 10}

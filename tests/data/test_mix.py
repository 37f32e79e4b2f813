import pytest

from agentlm.data.formats import Conversation, Turn
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
    _, report = mix(AGENT, convs("general", 10), 0.2)
    assert report.general_with_replacement and report.general_examples == 80


@pytest.mark.parametrize(("eta", "message"), [(1.5, "between 0 and 1"), (-0.1, "between 0 and 1")])
def test_bad_eta(eta, message):
    with pytest.raises(ValueError, match=message):
        mix(AGENT, GENERAL, eta)


def test_missing_inputs_are_named():
    with pytest.raises(ValueError, match="needs general examples"):
        mix(AGENT, [], 0.2)
    with pytest.raises(ValueError, match="needs agent examples"):
        mix([], GENERAL, 0.2)

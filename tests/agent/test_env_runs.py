"""The agent loop inside AgentBench environments: text protocol in, real tool, AgentBench reward out.

A small scripted policy stands in for the model: it writes AgentBench-format replies and reads
the observations it gets back, so these tests check the whole path a checkpoint would take: the
opening prompt, parsing (with repair), the sandboxed shell or the DuckDB table, the observation
format, and the environment's reward.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tasksystems import needs_system

from agentlm.agent.envs.db import DBEnvironment
from agentlm.agent.envs.os import OSEnvironment
from agentlm.agent.loop import Agent
from agentlm.agent.models import Completion
from agentlm.agent.protocols import load_prompt
from agentlm.agent.trajectory import StopReason

AGENTBENCH = Path(__file__).resolve().parents[3] / "shared" / "agentbench"


class Policy:
    """Replies in turn; a callable reply sees the last observation and writes the next reply."""

    model_id = "policy"

    def __init__(self, *replies):
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def complete(self, messages, params, tools=None):
        self.seen.append(list(messages))
        reply = self.replies.pop(0)
        return Completion(reply(messages[-1]["content"]) if callable(reply) else reply)


@pytest.fixture(scope="module")
def os_env():
    env = OSEnvironment()
    return env, {t.id: t for t in env.load(AGENTBENCH / "os_dev.json")}


def count_hidden(bash_act: str):
    def answer(observation: str) -> str:
        (number,) = re.findall(r"^(\d+)$", observation, re.M)
        return f"Think: the output is the count.\n\nAct: answer({number})"

    return bash_act, answer


@pytest.mark.parametrize(
    "act",
    [
        "Act: bash",
        "Akt: bash",  # a malformed action line, repaired to the closest valid one by BLEU
    ],
)
@needs_system
def test_an_os_task_solved_through_the_shell_scores_1(os_env, act):
    env, tasks = os_env
    task = tasks["os_dev-00006"]  # How many hidden files are in /home? (AgentBench counts . and ..)
    first, second = count_hidden(
        f"Think: I count the dot files.\n\n{act}\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```"
    )
    model = Policy(first, second)
    with env.episode(task) as episode:
        traj = Agent(model, episode.setup()).run()
        reward = episode.reward(traj.final_answer)
    assert traj.stop_reason == StopReason.ANSWER and reward == 1.0
    # The model saw AgentBench's exact opening and observation format.
    prompts = load_prompt("os")
    opening = model.seen[0]
    assert opening[0]["content"].startswith(prompts.instruction) and len(opening) == 1 + len(prompts.one_shot)
    assert opening[-1]["content"] == prompts.task_prefix + task.description
    assert traj.steps[0].observation.startswith("The output of the OS:\n\n")
    assert (traj.steps[0].repair is not None) == (act != "Act: bash")


@needs_system
def test_a_wrong_os_answer_scores_0(os_env):
    env, tasks = os_env
    with env.episode(tasks["os_dev-00006"]) as episode:
        traj = Agent(Policy("Think: I guess.\n\nAct: answer(41)"), episode.setup()).run()
        assert episode.reward(traj.final_answer) == 0.0


def test_a_db_query_in_mysql_dialect_solved_through_the_table_scores_1():
    env = DBEnvironment()
    tasks = {t.id: t for t in env.load(AGENTBENCH / "dbbench_dev.jsonl")}
    task = tasks["dbbench_dev-00003"]  # how many floors does the capitol square have?
    sql = "SELECT `Floors` FROM `skyscrapers_in_Columbus` WHERE `Name` = 'Capitol Square'"

    def answer(observation: str) -> str:
        assert observation == "[('26',)]"  # AgentBench's repr of the MySQL rows
        return 'The table says 26.\nAction: Answer\nFinal Answer: ["26"]'

    model = Policy(f"I look it up.\nAction: Operation\n```sql\n{sql}\n```", answer)
    with env.episode(task) as episode:
        traj = Agent(model, episode.setup()).run()
        assert traj.stop_reason == StopReason.ANSWER
        assert episode.reward(traj.final_answer) == 1.0
    assert model.seen[0][:2] == [
        {"role": "user", "content": load_prompt("db").instruction},
        {"role": "assistant", "content": "Ok."},
    ]


def test_a_db_modification_is_scored_by_the_tables_content():
    env = DBEnvironment()
    tasks = {t.id: t for t in env.load(AGENTBENCH / "dbbench_dev.jsonl")}
    task = tasks["dbbench_dev-00020"]  # insert Madison High School
    insert = (
        "INSERT INTO `School Location Table` (`School`, `Location`, `Date moved`, `Currently at this location`) "
        "VALUES ('Madison High School', 'San Diego', '1980', 'nearby junior high school');"
    )
    done = "Done.\nAction: Answer\nFinal Answer: []"
    for replies, expected in (
        ([f"Inserting.\nAction: Operation\n```sql\n{insert}\n```", done], 1.0),
        ([f"Inserting.\nAction: Operation\n```sql\n{insert.replace('1980', '1981')}\n```", done], 0.0),
        ([done], 0.0),
    ):
        with env.episode(task) as episode:
            traj = Agent(Policy(*replies), episode.setup()).run()
            assert episode.reward(traj.final_answer) == expected, replies[0]

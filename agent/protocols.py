"""AgentLM's text protocols: the prompts and observation framing AgentLM checkpoints were trained on.

The prompt texts live as data in ``agent/prompts/<name>.yaml`` (byte for byte as AgentBench v0.2
wrote them); this module loads them and frames tool output the way those tasks did. The parsers
that read the model's replies are in ``actions.py``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict

from agentlm.agent.trajectory import ChatMessage

# AgentBench OS: output over 800 characters becomes its first 780 plus this line.
OS_OUTPUT_LIMIT = 800
OS_OUTPUT_KEEP = 780
OS_TRUNCATED = "\n[truncated because the output is too long]"


class PromptSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int
    instruction: str
    problem_prefix: str = ""
    task_prefix: str = ""
    one_shot: tuple[dict[str, str], ...] = ()


@cache
def load_prompt(name: str) -> PromptSet:
    """The prompt set `name` ("os", "db") from agent/prompts/."""
    path = resources.files("agentlm.agent") / "prompts" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt set {name!r} in agent/prompts/ (have: os, db)")
    return PromptSet.model_validate(yaml.safe_load(path.read_text()))


def os_opening(prompts: PromptSet | None = None) -> list[ChatMessage]:
    """AgentBench OS's opening: the instruction fused with the 1-shot question, then the 1-shot turns."""
    p = prompts or load_prompt("os")
    first, *rest = p.one_shot
    opening: list[ChatMessage] = [
        {"role": "user", "content": p.instruction + p.problem_prefix + first["content"]}
    ]
    opening += [{"role": m["role"], "content": m["content"]} for m in rest]  # type: ignore[misc]
    return opening


def os_task(description: str, prompts: PromptSet | None = None) -> str:
    return (prompts or load_prompt("os")).task_prefix + description


def os_observation(output: str) -> str:
    """Shell output framed as AgentBench's OS task framed it, truncated the same way."""
    if len(output) > OS_OUTPUT_LIMIT:
        output = output[:OS_OUTPUT_KEEP] + OS_TRUNCATED
    return f"The output of the OS:\n\n{output}" if output else "The output of the OS is empty."


def db_opening(prompts: PromptSet | None = None) -> list[ChatMessage]:
    """AgentBench dbbench's opening: the instruction, then the assistant's "Ok."."""
    return [
        {"role": "user", "content": (prompts or load_prompt("db")).instruction},
        {"role": "assistant", "content": "Ok."},
    ]

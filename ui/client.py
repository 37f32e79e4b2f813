"""A small client for the AgentLM API, used by the Streamlit app and `agentlm chat`.

It speaks the OpenAI API with the official `openai` client and reads AgentLM's streaming
extension: agent runs stream each step as a chunk whose ``agentlm`` field carries the step record
(see agent/trajectory.py), then the answer as ordinary content. An agent request carries the
whole conversation (earlier questions and the answers shown), so follow-up questions work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from agentlm.api import AGENT_OWNER, DEFAULT_API_URL


class APIUnavailableError(RuntimeError):
    """The API could not be reached or refused the request."""


@dataclass
class ModelInfo:
    id: str
    is_agent: bool


@dataclass
class AgentEvent:
    """One thing that happened in an agent run, in the order the API streamed it."""

    step: dict[str, Any] | None = None  # a step record (ActionStep / FinalAnswerStep as a dict)
    text: str = ""  # answer text
    trajectory_id: str | None = None
    stop_reason: str | None = None
    pending_writes: list[str] | None = None  # database changes waiting for the user's approval


class AgentLMClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 600.0):
        self.base_url = (base_url or os.environ.get("AGENTLM_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("AGENTLM_API_KEY") or "EMPTY"
        self._openai = openai.OpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=timeout, max_retries=0
        )

    def _unavailable(self, e: Exception) -> APIUnavailableError:
        return APIUnavailableError(
            f"cannot reach the AgentLM API at {self.base_url} ({e}); start it with `agentlm serve` or `agentlm up`"
        )

    def models(self) -> list[ModelInfo]:
        try:
            return [ModelInfo(m.id, m.owned_by == AGENT_OWNER) for m in self._openai.models.list()]
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            raise self._unavailable(e) from e

    def stream_agent(
        self, profile: str, question: str, history: list[dict[str, str]] | None = None
    ) -> Iterator[AgentEvent]:
        """Run an agent profile on a question; yields steps as they happen, then the answer.

        `history` is the conversation so far, alternating the user's questions and the answers
        they were shown (``{"role": "user" | "assistant", "content": ...}``); the server shows
        it to the model so that "and who is that person's manager?" means something.
        """
        messages = [*(history or []), {"role": "user", "content": question}]
        try:
            stream = self._openai.chat.completions.create(model=profile, messages=messages, stream=True)
            for chunk in stream:
                ext = (chunk.model_extra or {}).get("agentlm") or {}
                text = chunk.choices[0].delta.content or "" if chunk.choices else ""
                yield AgentEvent(
                    step=ext.get("step"),
                    text=text,
                    trajectory_id=ext.get("trajectory_id"),
                    stop_reason=ext.get("stop_reason"),
                    pending_writes=ext.get("pending_writes"),
                )
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            raise self._unavailable(e) from e

    def chat(self, model: str, messages: list[dict[str, str]]) -> Iterator[str]:
        """Plain chat with a base model; yields text deltas."""
        try:
            stream = self._openai.chat.completions.create(model=model, messages=messages, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            raise self._unavailable(e) from e

    def decide_writes(self, trajectory_id: str, decision: str, approved_by: str = "ui") -> dict[str, Any]:
        """Approve or discard the database changes a run is holding; returns the server's report."""
        return self._post(
            f"/trajectories/{trajectory_id}/writes",
            {"decision": decision, "approved_by": approved_by},
            what=f"the {decision} was not recorded",
        )

    def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            response = httpx.post(
                f"{self.base_url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=60,
            )
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise APIUnavailableError(f"{what} ({response.status_code}): {message}")
        return response.json()

    def send_feedback(
        self, trajectory_id: str, rating: int, comment: str = "", corrected_answer: str | None = None
    ) -> None:
        body: dict[str, Any] = {"trajectory_id": trajectory_id, "rating": rating, "comment": comment}
        if corrected_answer:
            body["corrected_answer"] = corrected_answer
        self._post("/feedback", body, what="feedback was not recorded")

"""A small client for the AgentLM API, used by the Streamlit app and `agentlm chat`.

It speaks the OpenAI API with the official `openai` client and reads AgentLM's streaming
extension: agent runs stream each step as a chunk whose ``agentlm`` field carries the step record
(see agent/trajectory.py), then the answer as ordinary content. An agent request carries the
whole conversation (earlier questions and the answers shown), so follow-up questions work.
AgentLM's own endpoints (feedback, stored trajectories and their stats, the promotion history)
are plain JSON over httpx; records come back as the API's JSON (the UI never imports agent/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

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


@dataclass
class TrajectoryQuery:
    """Which stored runs (``GET /v1/trajectories`` filters); None leaves a filter out."""

    profile: str | None = None
    model: str | None = None
    rating: Literal["1", "-1", "none"] | None = None  # the latest feedback's; "none": not rated
    min_reward: float | None = None
    max_reward: float | None = None
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    stop_reason: str | None = None
    corrected: bool | None = None  # the latest feedback corrects the run

    def params(self) -> dict[str, str | float]:
        return {
            name: str(value).lower() if isinstance(value, bool) else value
            for name, value in asdict(self).items()
            if value is not None
        }


@dataclass
class TrajectoryPage:
    data: list[dict[str, Any]]  # trajectory records, newest first
    total: int  # matching runs, all pages together
    has_more: bool


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
        return self._request("POST", path, what, json=body)

    def _get(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, what, params=params)

    def _request(self, method: str, path: str, what: str, **kw: Any) -> Any:
        try:
            response = httpx.request(
                method,
                f"{self.base_url}{path}",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=60,
                **kw,
            )
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise APIUnavailableError(f"{what} ({response.status_code}): {message}")
        try:
            return response.json()
        except ValueError as e:
            raise APIUnavailableError(
                f"{what}: {self.base_url}{path} did not answer JSON; is that URL an AgentLM API?"
            ) from e

    def send_feedback(
        self,
        trajectory_id: str,
        rating: int,
        comment: str = "",
        corrected_answer: str | None = None,
        corrected_step: int | None = None,
        corrected_output: str | None = None,
    ) -> None:
        """Rate a run; optionally correct its final answer, or one step (its index and the reply
        the model should have given there, in the run's protocol), not both."""
        body: dict[str, Any] = {"trajectory_id": trajectory_id, "rating": rating, "comment": comment}
        if corrected_answer:
            body["corrected_answer"] = corrected_answer
        if corrected_step is not None:
            body |= {"corrected_step": corrected_step, "corrected_output": corrected_output}
        self._post("/feedback", body, what="feedback was not recorded")

    def trajectories(
        self, query: TrajectoryQuery | None = None, limit: int = 50, offset: int = 0
    ) -> TrajectoryPage:
        """A page of stored runs matching `query`, newest first."""
        params = {**(query or TrajectoryQuery()).params(), "limit": limit, "offset": offset}
        page = self._get("/trajectories", "the runs could not be listed", params)
        return TrajectoryPage(page["data"], page["total"], page["has_more"])

    def trajectory(self, trajectory_id: str) -> dict[str, Any]:
        """One stored run, with its latest feedback."""
        return self._get(f"/trajectories/{trajectory_id}", f"run {trajectory_id} could not be read")

    def trajectory_stats(self, query: TrajectoryQuery | None = None, points: int = 200) -> dict[str, Any]:
        """Aggregates of the matching runs: ``days`` (per day and model), ``stop_reasons``, and
        ``points`` (the latest `points` runs' steps and seconds), as GET /v1/trajectories/stats."""
        params = {**(query or TrajectoryQuery()).params(), "points": points}
        return self._get("/trajectories/stats", "the run statistics could not be read", params)

    def promotions(self) -> list[dict[str, Any]]:
        """The checkpoint promotion decisions, newest first (GET /v1/promotions)."""
        return self._get("/promotions", "the promotion history could not be read")["data"]

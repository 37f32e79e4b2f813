"""Prometheus metrics for the API: requests, latency, tokens, time to first token, agent runs.

Each app owns its ``Metrics`` (its own ``CollectorRegistry``), so several apps in one process (the
tests make many) never share or clash over counters. ``GET /metrics`` renders them in the
Prometheus text format; ``MetricsMiddleware`` counts every HTTP request by route template (never
by raw path, which would let clients create unbounded label values).
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlm.agent.trajectory import ActionStep, Step, StepError, Trajectory

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latencies run from a health probe (ms) to a long agent run (minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The server's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "agentlm_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "agentlm_http_request_duration_seconds",
            "Time from request to the last byte of the response (whole streams included)",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "agentlm_prompt_tokens", "Prompt tokens processed, by requested model id", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "agentlm_generation_tokens", "Tokens generated, by requested model id", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "agentlm_time_to_first_token_seconds",
            "Time from a generation request to the engine's first chunk",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.agent_steps = Counter(
            "agentlm_agent_steps",
            "Agent steps taken, by profile, kind (action, answer) and outcome (ok, invalid_format, tool_error)",
            ["profile", "kind", "outcome"],
            registry=r,
        )
        self.tool_errors = Counter(
            "agentlm_agent_tool_errors",
            "Tool calls that failed, by profile and tool",
            ["profile", "tool"],
            registry=r,
        )
        self.agent_runs = Counter(
            "agentlm_agent_runs",
            "Finished agent runs, by profile and stop reason",
            ["profile", "stop_reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def tokens(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generation_tokens.labels(model).inc(completion_tokens)

    def agent_step(self, profile: str, step: Step) -> None:
        error = step.error if isinstance(step, ActionStep) else None
        self.agent_steps.labels(profile, step.kind, error or "ok").inc()
        if error == StepError.TOOL_ERROR and step.tool_call is not None:  # type: ignore[union-attr]
            self.tool_errors.labels(profile, step.tool_call.name).inc()  # type: ignore[union-attr]

    def agent_run(self, profile: str, traj: Trajectory) -> None:
        self.agent_runs.labels(profile, str(traj.stop_reason)).inc()
        self.tokens(
            profile,
            sum(s.prompt_tokens for s in traj.steps),
            sum(s.completion_tokens for s in traj.steps),
        )


class MetricsMiddleware:
    """Counts each HTTP request by method, route template and status, and times it to the last byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes becomes a 500 further out

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(time.perf_counter() - started)

"""The trajectory routes: stored agent runs, filtered and paged, and the training-ready export.

    GET /v1/trajectories          newest first: {"object": "list", "data", "total", "has_more"}
    GET /v1/trajectories/stats    aggregates for charts: per day and model, per stop reason, per run
    GET /v1/trajectories/export   AgentInstruct JSONL (application/x-ndjson) from one snapshot
    GET /v1/trajectories/{id}     one run, with its latest feedback

app.py mounts ``router`` with the /v1 router's dependencies and responses, so the API key and the
OpenAI error shape (400 for a bad filter) apply as on every /v1 route. (It is not nested in the /v1
router: FastAPI would then label its routes without the /v1 prefix in the request metrics.) The filters are the store's (``TrajectoryFilter``).
Store calls block, so the routes are plain ``def``s that FastAPI runs in its thread pool. The
export is a sync iterator, which Starlette also advances in the thread pool, reading a snapshot on
its own read-only connection: a long download neither holds the writer's lock nor stalls the
event loop, and runs stored meanwhile are not in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from agentlm.agent.trajectory import StopReason, Trajectory
from agentlm.data.export import trajectory_records
from agentlm.serve.protocol import TrajectoryList, TrajectoryStats, error_responses
from agentlm.serve.serving import no_trajectory
from agentlm.serve.store import TrajectoryFilter, TrajectoryStore

router = APIRouter(prefix="/v1/trajectories")


def _store(request: Request) -> TrajectoryStore:
    return request.app.state.serving.store


def _filter(
    profile: Annotated[str | None, Query(description="agent profile id")] = None,
    model: Annotated[str | None, Query(description="the model id the agent talked to")] = None,
    rating: Annotated[
        Literal["1", "-1", "none"] | None,
        Query(description="the latest feedback's rating: 1, -1, or none (no feedback yet)"),
    ] = None,
    min_reward: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    max_reward: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    since: Annotated[float | None, Query(description="unix seconds, inclusive", allow_inf_nan=False)] = None,
    until: Annotated[float | None, Query(description="unix seconds, exclusive", allow_inf_nan=False)] = None,
    stop_reason: Annotated[StopReason | None, Query(description="why the run ended")] = None,
    corrected: Annotated[
        bool | None,
        Query(description="whether the latest feedback corrects the run (its answer or a step)"),
    ] = None,
) -> TrajectoryFilter:
    return TrajectoryFilter(
        profile=profile,
        model=model,
        rating=None if rating is None else "none" if rating == "none" else int(rating),  # type: ignore[arg-type]
        min_reward=min_reward,
        max_reward=max_reward,
        since=since,
        until=until,
        stop_reason=None if stop_reason is None else str(stop_reason),
        corrected=corrected,
    )


StoreDep = Annotated[TrajectoryStore, Depends(_store)]
FilterDep = Annotated[TrajectoryFilter, Depends(_filter)]


@router.get("")
def trajectories(
    store: StoreDep,
    where: FilterDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,  # SQLite integers are 64-bit
) -> TrajectoryList:
    page = store.list(**asdict(where), limit=limit, offset=offset)
    total = store.count(**asdict(where))
    return TrajectoryList(data=page, total=total, has_more=offset + len(page) < total)


# /stats and /export are declared before /{trajectory_id}, which would otherwise take them for ids.
@router.get("/stats")
def stats(
    store: StoreDep,
    where: FilterDep,
    points: Annotated[
        int, Query(ge=0, le=2000, description="how many of the latest runs to give per-run points for")
    ] = 200,
) -> TrajectoryStats:
    """Aggregates of the runs the filters match, for charts (the same filters as the list)."""
    return store.stats(points=points, **asdict(where))


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "AgentInstruct-format JSONL"}},
)
def export(
    store: StoreDep,
    where: FilterDep,
    include_all: Annotated[bool, Query(description="every run, not only liked or rewarded ones")] = False,
    use_corrections: Annotated[
        bool, Query(description="a user's corrected answer replaces the model's")
    ] = True,
) -> StreamingResponse:
    """Training-ready JSONL, as ``agentlm data export`` writes it (liked or reward-1 runs by default)."""
    return StreamingResponse(
        _jsonl(store, where, include_all, use_corrections), media_type="application/x-ndjson"
    )


def _jsonl(
    store: TrajectoryStore, where: TrajectoryFilter, include_all: bool, use_corrections: bool
) -> Iterator[bytes]:
    records = trajectory_records(store.snapshot(**asdict(where)), include_all, use_corrections)
    for record in records:
        yield (json.dumps(record, ensure_ascii=False) + "\n").encode()


@router.get("/{trajectory_id}", responses=error_responses(404))
def trajectory(trajectory_id: str, store: StoreDep) -> Trajectory:
    traj = store.get(trajectory_id)
    if traj is None:
        raise no_trajectory(trajectory_id)
    return traj

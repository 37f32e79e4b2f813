"""What every trajectory store does, written once in the SQL that SQLite and PostgreSQL share.

A backend supplies a transaction (``_transaction``: a function that runs one statement, written
with ``?`` placeholders), the few expressions the two dialects spell differently (``_DAY``,
``_STEPS``, ``_SECONDS``), its schema and migrations, and ``snapshot``. Everything else is here:
the upsert of a run, feedback as its own rows with the latest merged in on read, the filters,
the counts and the aggregates for charts, so the two backends cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from agentlm.agent.trajectory import Feedback, Trajectory
from agentlm.serve.protocol import DayStats, RunPoint, TrajectoryStats

# The schema version this AgentLM writes. Each backend's migrations bring an older store to it.
SCHEMA_VERSION = 3

Rating = Literal[1, -1, "none"]
Execute = Callable[..., Any]  # (sql with ? placeholders, args=()) -> a DB-API cursor

# The trajectory's JSON with its latest feedback, if any, as one row.
SELECT = """
SELECT t.data, f.rating, f.comment, f.corrected_answer, f.created_at, f.corrected_step, f.corrected_output
FROM trajectories t
LEFT JOIN feedback f ON f.seq = (SELECT max(seq) FROM feedback WHERE trajectory_id = t.id)
"""

_UPSERT = (
    "INSERT INTO trajectories "
    "(id, profile, model, created_at, reward, rating, stop_reason, writes_status, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, "
    "model = excluded.model, created_at = excluded.created_at, reward = excluded.reward, "
    "rating = excluded.rating, stop_reason = excluded.stop_reason, "
    "writes_status = excluded.writes_status, data = excluded.data"
)
# The rating and corrected columns follow the latest recorded feedback, which reads merge in, even
# when the copy of the run just saved carries none (saved again without its feedback).
_FOLLOW_FEEDBACK = (
    "UPDATE trajectories SET (rating, corrected) = (SELECT coalesce(f.rating, t.rating), "
    "CASE WHEN f.seq IS NULL THEN t.corrected "
    "WHEN coalesce(f.corrected_answer, '') != '' OR f.corrected_step IS NOT NULL THEN 1 ELSE 0 END "
    "FROM trajectories t LEFT JOIN feedback f ON f.seq = (SELECT max(seq) FROM feedback "
    "WHERE trajectory_id = ?) WHERE t.id = ?) WHERE id = ?"
)
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (trajectory_id, rating, comment, corrected_answer, created_at, "
    "corrected_step, corrected_output) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class TrajectoryFilter:
    """Which trajectories: each given field narrows the result (times are unix seconds)."""

    profile: str | None = None
    model: str | None = None
    rating: Rating | None = None  # the latest feedback's; "none": no feedback yet
    min_reward: float | None = None
    max_reward: float | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive
    stop_reason: str | None = None
    corrected: bool | None = None  # the latest feedback corrects the run (an answer or a step)

    def __post_init__(self) -> None:
        if self.rating not in (None, 1, -1, "none"):
            raise ValueError(f"rating must be 1, -1 or 'none', not {self.rating!r}")

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause (on ``trajectories t``) and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, op, value in (
            ("t.profile", "=", self.profile),
            ("t.model", "=", self.model),
            ("t.reward", ">=", self.min_reward),
            ("t.reward", "<=", self.max_reward),
            ("t.created_at", ">=", self.since),
            ("t.created_at", "<", self.until),
            ("t.stop_reason", "=", self.stop_reason),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        if self.corrected is not None:
            clauses.append("t.corrected = ?")
            args.append(int(self.corrected))
        if self.rating == "none":
            clauses.append("t.rating IS NULL")
        elif self.rating is not None:
            clauses.append("t.rating = ?")
            args.append(self.rating)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


class StoreError(RuntimeError):
    """The store cannot be used: missing, not a store, written by a newer AgentLM, unreachable,
    or opened read-only for a write."""


class StoreInputError(StoreError, ValueError):
    """A value the store cannot hold (PostgreSQL's text cannot hold NUL characters): the caller's
    input, not the store, is what is wrong."""


class TrajectoryStore:
    """Trajectories and feedback; safe to share between threads. Open one with ``open_store``."""

    readonly: bool
    location: str  # for messages: the file, or the URL without its password
    # SQL expressions on ``trajectories t`` that the dialects spell differently: the run's UTC day
    # (YYYY-MM-DD), its steps (actions and the answer) and its seconds, read from the stored JSON.
    _DAY: str
    _STEPS: str
    _SECONDS: str

    def _transaction(self) -> AbstractContextManager[Execute]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def snapshot(self, page: int = 200, **filters: Any) -> Iterator[Trajectory]:
        """Every matching trajectory, oldest first, as of one moment; writers are never blocked.
        Rows come `page` at a time, so a large store is never all in memory."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- writes -------------------------------------------------------------------------------

    def save(self, traj: Trajectory, record_feedback: bool = True) -> None:
        """Insert or replace a trajectory (its feedback, if it carries one, is recorded too).

        `record_feedback=False` updates a stored run without recording its feedback again.
        Returns once the commit is durable.
        """
        self._writable()
        with self._transaction() as sql:
            sql(
                _UPSERT,
                (
                    traj.id,
                    traj.profile,
                    traj.model,
                    traj.created_at,
                    traj.reward,
                    traj.feedback.rating if traj.feedback else None,
                    str(traj.stop_reason) if traj.stop_reason else None,
                    traj.writes_status,
                    traj.to_json(),
                ),
            )
            if traj.feedback is not None and record_feedback:
                _insert_feedback(sql, traj.id, traj.feedback)
            sql(_FOLLOW_FEEDBACK, (traj.id, traj.id, traj.id))

    def set_feedback(self, trajectory_id: str, feedback: Feedback) -> bool:
        """Record feedback on a stored trajectory; False when there is no such trajectory.

        Returns once the commit is durable. Feedback on one run from several replicas at once is
        serialised by the row update, so the latest recorded is the one the rating column shows."""
        self._writable()
        with self._transaction() as sql:
            cursor = sql(
                "UPDATE trajectories SET rating = ?, corrected = ? WHERE id = ?",
                (feedback.rating, int(feedback.corrected), trajectory_id),
            )
            if cursor.rowcount == 0:
                return False
            _insert_feedback(sql, trajectory_id, feedback)
            return True

    def claim_writes(self, trajectory_id: str) -> bool:
        """Take a run's pending database changes to decide on them: True for the one caller that
        moved them from pending, whichever replica it runs in (one row update wins). The caller
        then saves the run with its decision, or calls ``release_writes`` if it could not decide."""
        self._writable()
        with self._transaction() as sql:
            claimed = sql(
                "UPDATE trajectories SET writes_status = 'deciding' WHERE id = ? AND writes_status = 'pending'",
                (trajectory_id,),
            )
            return claimed.rowcount == 1

    def release_writes(self, trajectory_id: str) -> None:
        """Give back a claim whose decision failed: the changes are pending again."""
        self._writable()
        with self._transaction() as sql:
            sql(
                "UPDATE trajectories SET writes_status = 'pending' WHERE id = ? AND writes_status = 'deciding'",
                (trajectory_id,),
            )

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(
                f"the store at {self.location} was opened read-only: open it without readonly=True to write"
            )

    # --- reads --------------------------------------------------------------------------------

    def get(self, trajectory_id: str) -> Trajectory | None:
        with self._transaction() as sql:
            row = sql(f"{SELECT} WHERE t.id = ?", (trajectory_id,)).fetchone()
        return None if row is None else trajectory(row)

    def list(self, limit: int = 50, offset: int = 0, **filters: Any) -> list[Trajectory]:
        """A page of the trajectories matching ``filters`` (``TrajectoryFilter``'s fields), newest first."""
        where, args = TrajectoryFilter(**filters).sql()
        with self._transaction() as sql:
            rows = sql(
                f"{SELECT} {where} ORDER BY t.created_at DESC, t.id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [trajectory(r) for r in rows]

    def count(self, **filters: Any) -> int:
        """How many trajectories match (the same filters as ``list``, all pages together)."""
        where, args = TrajectoryFilter(**filters).sql()
        with self._transaction() as sql:
            return sql(f"SELECT count(*) FROM trajectories t {where}", args).fetchone()[0]

    def stats(self, points: int = 200, **filters: Any) -> TrajectoryStats:
        """Aggregates of the matching trajectories, computed in SQL from the stored JSON: per UTC
        day and model (runs, answered, thumbs up and down, mean steps and seconds), runs per stop
        reason, and the latest `points` runs' steps and duration, oldest first."""
        where, args = TrajectoryFilter(**filters).sql()
        day, steps, seconds = self._DAY, self._STEPS, self._SECONDS
        with self._transaction() as sql:  # one transaction: the three agree with each other
            days = sql(
                f"SELECT coalesce({day}, 'unknown') AS day, t.model, count(*), "
                "count(*) FILTER (WHERE t.stop_reason = 'answer'), count(*) FILTER (WHERE t.rating = 1), "
                f"count(*) FILTER (WHERE t.rating = -1), CAST(avg({steps}) AS DOUBLE PRECISION), "
                f"CAST(avg({seconds}) AS DOUBLE PRECISION) "
                f"FROM trajectories t {where} GROUP BY 1, t.model ORDER BY 1, t.model",
                args,
            ).fetchall()
            reasons = sql(
                f"SELECT coalesce(t.stop_reason, 'unknown') AS reason, count(*) FROM trajectories t "
                f"{where} GROUP BY 1 ORDER BY count(*) DESC, 1",
                args,
            ).fetchall()
            latest = sql(
                f"SELECT * FROM (SELECT t.id, t.created_at, t.model, t.profile, {steps}, {seconds} "
                f"FROM trajectories t {where} ORDER BY t.created_at DESC, t.id DESC LIMIT ?) AS latest "
                "ORDER BY 2, 1",
                (*args, points),
            ).fetchall()
        return TrajectoryStats(
            total=sum(n for _, n in reasons),
            days=[
                DayStats(
                    day=d,
                    model=m,
                    runs=n,
                    answered=a,
                    thumbs_up=up,
                    thumbs_down=down,
                    mean_steps=s,
                    mean_seconds=secs,
                )
                for d, m, n, a, up, down, s, secs in days
            ],
            stop_reasons=dict(reasons),
            points=[
                RunPoint(id=i, created_at=c, model=m, profile=p, steps=s, duration_seconds=secs)
                for i, c, m, p, s, secs in latest
            ],
        )

    def iter_all(self) -> Iterator[Trajectory]:
        """Every trajectory, oldest first: ``snapshot()`` without filters."""
        return self.snapshot()

    def __len__(self) -> int:
        with self._transaction() as sql:
            return sql("SELECT count(*) FROM trajectories").fetchone()[0]

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _insert_feedback(sql: Execute, trajectory_id: str, fb: Feedback) -> None:
    sql(
        _INSERT_FEEDBACK,
        (
            trajectory_id,
            fb.rating,
            fb.comment,
            fb.corrected_answer,
            fb.created_at,
            fb.corrected_step,
            fb.corrected_output,
        ),  # fmt: skip
    )


def check_version(location: str, version: int, current: int) -> None:
    """Refuse a store without a schema version, or one a newer AgentLM wrote."""
    if version == 0:
        raise StoreError(f"{location} is not an AgentLM trajectory store (no schema_version)")
    if version > current:
        raise StoreError(
            f"{location} has store schema version {version}, written by a newer AgentLM; this "
            f"AgentLM reads up to version {current}: upgrade AgentLM or point at another store"
        )


def migrate(
    execute: Callable[[str], Any],
    location: str,
    version: int,
    current: int,
    migrations: dict[int, list[str]],
    errors: type[Exception] | tuple[type[Exception], ...],
) -> None:
    """Take a version `version` store to `current` through `execute`, each step's version
    recorded; the caller's transaction makes it all or nothing. Raises StoreError naming the step."""
    check_version(location, version, current)
    for target in range(version + 1, current + 1):
        try:
            for statement in migrations[target]:
                execute(statement)
        except errors as e:
            raise StoreError(
                f"upgrading {location} from store schema version {version} to {current} failed "
                f"at step {target} ({str(e).strip()}); the store was left as it was: report this, with "
                "the AgentLM version, and use the older AgentLM meanwhile"
            ) from e
        execute(f"UPDATE schema_version SET version = {int(target)}")


def trajectory(row: tuple) -> Trajectory:
    """A trajectory from a ``SELECT`` row, its latest feedback merged in."""
    data, rating, comment, corrected_answer, created_at, corrected_step, corrected_output = row
    traj = Trajectory.from_json(data)
    if rating is not None:
        traj.feedback = Feedback(
            rating, comment, corrected_answer, created_at, corrected_step, corrected_output
        )
    return traj

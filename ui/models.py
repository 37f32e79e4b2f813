"""The Models page: every promotion decision, and how each candidate checkpoint scored.

train/promote.py appends each decision to the promotion history, which GET /v1/promotions
serves: when, which training stage made the candidate, the checkpoint, promoted or not and why,
and the eval rows compared (the checkpoint in service and the candidate: agent task success per
task file, general multiple-choice accuracy, chat perplexity). A page of the app in ui/app.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from agentlm.ui.client import APIUnavailableError
from agentlm.ui.render import api_client, when

HOW = """No promotion decisions yet. Each run of the training pipeline that evaluates a new checkpoint
records one here, promoted or not:

```bash
bash train/run.sh --base-model runs/current --output runs/$(date +%F) \\
    --eval-tasks heldout.jsonl --promote runs/current
```

(or `python -m agentlm.train.promote --eval eval.json --checkpoint DIR` on eval rows you have).
Decisions go to `$AGENTLM_HOME/promotions.jsonl`, which the API reads (`AGENTLM_PROMOTIONS` moves it).
"""


def decision(record: dict[str, Any]) -> str:
    return "promoted" if record["promote"] else "kept previous"


def candidate(record: dict[str, Any]) -> str:
    return record.get("checkpoint") or (record.get("new") or {}).get("model") or "?"


def metrics(row: dict[str, Any] | None) -> dict[str, float | None]:
    """An eval row as named metrics: agent success per task file, MC accuracy, perplexity."""
    if not row:
        return {}
    out: dict[str, float | None] = {f"success: {task}": rate for task, rate in sorted(row["tasks"].items())}
    return out | {"MC accuracy": row.get("mc_accuracy"), "perplexity": row.get("perplexity")}


def history_table(history: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Time (UTC)": when(r["decided_at"]),
                "Stage": r["stage"],
                "Checkpoint": candidate(r),
                "Decision": decision(r),
                "Reason": r["reason"],
            }
            for r in history
        ]
    )


def candidate_details(record: dict[str, Any]) -> None:
    """The eval rows the decision compared, as a table and a bar chart, and its checks."""
    rows = {"previous": metrics(record.get("previous")), "new": metrics(record.get("new"))}
    rows = {name: row for name, row in rows.items() if row}
    if not rows:
        st.info("This decision compared no eval rows (no eval file was given).")
        return
    table = pd.DataFrame(rows).T  # a row per checkpoint, a column per metric
    names = {"previous": (record.get("previous") or {}).get("model"), "new": candidate(record)}
    table.insert(0, "checkpoint", [names[n] for n in table.index])
    st.dataframe(table, key="models-eval-table")
    rates = pd.DataFrame(rows).drop(index="perplexity", errors="ignore").dropna(how="all")
    if not rates.empty:
        st.markdown("**Success rates and accuracy**")
        st.bar_chart(rates, stack=False, y_label="share")
    if record.get("checks"):
        st.markdown("**Checks**\n\n" + "\n".join(f"- {line}" for line in record["checks"]))
    st.caption(
        f"{decision(record)}: {record['reason']} (tolerances: MC {record.get('tolerance')} points, "
        f"perplexity {record.get('ppl_tolerance')} %)"
    )


def trend(history: list[dict[str, Any]]) -> None:
    """Each candidate's metrics, oldest first."""
    ordered = list(reversed(history))
    frame = pd.DataFrame(
        [metrics(r.get("new")) for r in ordered],
        index=pd.to_datetime([r["decided_at"] for r in ordered], unit="s", utc=True),
    ).dropna(axis=1, how="all")
    if frame.empty:
        return
    st.subheader("Metrics over candidates")
    rates = frame.drop(columns="perplexity", errors="ignore")
    left, right = st.columns(2)
    if not rates.empty:
        left.markdown("**Success rates and accuracy**")
        left.line_chart(rates, y_label="share")
    if "perplexity" in frame:
        right.markdown("**Chat perplexity** (lower is better)")
        right.line_chart(frame[["perplexity"]])


def main() -> None:
    st.title("Models")
    try:
        history = api_client().promotions()
    except APIUnavailableError as e:
        st.error(str(e))
        return
    if not history:
        st.info(HOW)
        return
    st.subheader("Promotion history")
    st.caption("Newest first. A candidate is promoted when it is not worse than the checkpoint in service.")
    st.dataframe(history_table(history), hide_index=True, key="models-history")
    st.subheader("Candidate")
    picked = st.selectbox(
        "Candidate",
        range(len(history)),
        format_func=lambda i: (
            f"{when(history[i]['decided_at'])} · {history[i]['stage']} · {candidate(history[i])} "
            f"({decision(history[i])})"
        ),
        key="models-candidate",
    )
    candidate_details(history[picked])
    trend(history)


if __name__ == "__main__":  # Streamlit runs a page file as __main__
    main()

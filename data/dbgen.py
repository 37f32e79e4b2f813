"""Instruction construction for the database task, offline: new dbbench-format tasks from tables.

AgentTuning had GPT-4 propose tables, questions and the SQL that answers them, and kept a task
only when its SQL ran. This module does the same from deterministic generators so it works
offline (a teacher endpoint can be added behind the same record format): for a domain (a table
schema with value pools) it draws a table, then questions of AgentBench's types (lookup, counting,
aggregation, ranking, INSERT, UPDATE) with MySQL-flavoured gold SQL. Each record is exactly
AgentBench's dbbench shape, and ``verified`` keeps only tasks whose gold SQL passes the DB
environment's own evaluation (what ``agentlm tasks verify`` checks).

Domains are split so evaluation can be held out: ``TRAIN_DOMAINS`` for training data,
``HELDOUT_DOMAINS`` (a different subject and unseen column names) for held-out evaluation.

    python -m agentlm.data.dbgen --domains train --tasks 200 --seed 0 --out db_tasks.jsonl
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlm.agent.envs.base import EnvTask
from agentlm.agent.envs.db import MODIFICATIONS, DBEnvironment
from agentlm.agent.tools.sql import SQLError
from agentlm.options import invoke, options_from, settings_of


@dataclass(frozen=True)
class Domain:
    table: str
    entity: str  # "book"
    key: str  # the column that names a row
    keys: tuple[str, ...]  # its values
    text: dict[str, tuple[str, ...]]  # categorical columns and their values
    numbers: dict[str, tuple[int, int]]  # numeric columns and their ranges


TRAIN_DOMAINS = (
    Domain(
        "Library Books", "book", "Title",
        ("Dune", "Emma", "Ulysses", "Beloved", "Rebecca", "Matilda", "Ivanhoe", "Carrie", "Heidi", "Persuasion",
         "Middlemarch", "Frankenstein", "Dracula", "Walden", "Kindred", "Solaris"),
        {"Genre": ("Fiction", "Classic", "Horror", "Science Fiction", "Memoir"), "Language": ("English", "French", "Polish")},
        {"Pages": (90, 900), "Year": (1800, 2020), "Copies": (1, 12)},
    ),
    Domain(
        "City Weather", "city", "City",
        ("Oslo", "Lima", "Perth", "Quito", "Hanoi", "Dakar", "Porto", "Tunis", "Cusco", "Leeds", "Osaka", "Cairo",
         "Split", "Turin"),
        {"Climate": ("Temperate", "Tropical", "Arid", "Continental"), "Hemisphere": ("North", "South")},
        {"Rain Days": (5, 200), "Sun Hours": (1000, 3600), "Elevation": (0, 3400)},
    ),
    Domain(
        "Shop Products", "product", "Product",
        ("Kettle", "Toaster", "Blender", "Lamp", "Fan", "Heater", "Mixer", "Grill", "Radio", "Clock", "Scale",
         "Iron", "Juicer", "Fryer"),
        {"Category": ("Kitchen", "Living", "Bathroom", "Outdoor"), "Brand": ("Acme", "Orbit", "Nova", "Zenith")},
        {"Price": (9, 400), "Stock": (0, 250), "Rating": (1, 5)},
    ),
)  # fmt: skip

HELDOUT_DOMAINS = (
    Domain(
        "Airline Flights", "flight", "Flight",
        ("AZ101", "BA202", "CX303", "DL404", "EK505", "FR606", "GA707", "HA808", "IB909", "JL110", "KL211",
         "LH312"),
        {"Origin": ("Rome", "London", "Dubai", "Tokyo"), "Aircraft": ("A320", "B737", "A350", "B787")},
        {"Distance": (300, 12000), "Seats": (120, 420), "Delay Minutes": (0, 180)},
    ),
)  # fmt: skip

DOMAINS = {"train": TRAIN_DOMAINS, "heldout": HELDOUT_DOMAINS}


def _q(name: str) -> str:
    return f"`{name}`"


def _table(domain: Domain, rng: random.Random, rows: int) -> dict[str, Any]:
    names = rng.sample(domain.keys, min(rows, len(domain.keys)))
    columns = [domain.key, *domain.text, *domain.numbers]
    data = [
        [
            name,
            *(rng.choice(v) for v in domain.text.values()),
            *(str(rng.randint(*r)) for r in domain.numbers.values()),
        ]
        for name in names
    ]
    return {
        "table_name": domain.table,
        "table_info": {"columns": [{"name": c, "type": "TEXT"} for c in columns], "rows": data},
    }


def _question(domain: Domain, table: dict[str, Any], rng: random.Random, kind: str) -> tuple[str, str, str]:
    """(type, description, gold SQL) of one question about `table`."""
    rows = table["table_info"]["rows"]
    columns = [c["name"] for c in table["table_info"]["columns"]]
    row = rng.choice(rows)
    value_of = dict(zip(columns, row, strict=True))
    text_col = rng.choice(list(domain.text))
    num_col = rng.choice(list(domain.numbers))
    t, key = _q(domain.table), _q(domain.key)
    if kind == "other":
        return (
            kind,
            f"What is the {num_col} of the {domain.entity} {value_of[domain.key]}?",
            (f"SELECT {_q(num_col)} FROM {t} WHERE {key} = '{value_of[domain.key]}';"),
        )
    if kind == "counting":
        v = value_of[text_col]
        return (
            kind,
            f"How many {domain.entity}s have {text_col} {v}?",
            f"SELECT COUNT(*) FROM {t} WHERE {_q(text_col)} = '{v}';",
        )
    if kind.startswith("aggregation-"):
        fn = kind.split("-")[1]
        word = {"SUM": "total", "MAX": "highest", "MIN": "lowest", "AVG": "average"}[fn]
        v = value_of[text_col]
        return (
            kind,
            f"What is the {word} {num_col} of the {domain.entity}s whose {text_col} is {v}?",
            (f"SELECT {fn}({_q(num_col)}) FROM {t} WHERE {_q(text_col)} = '{v}';"),
        )
    if kind == "ranking":
        direction, word = rng.choice(
            [("DESC", "most"), ("ASC", "fewest")] if num_col != "Rating" else [("DESC", "best")]
        )
        return (
            kind,
            f"Which {domain.entity} has the {word} {num_col}?",
            (f"SELECT {key} FROM {t} ORDER BY {_q(num_col)} + 0 {direction} LIMIT 1;"),
        )
    if kind == "INSERT":
        name = f"New {domain.entity.title()} {rng.randint(100, 999)}"
        values = [
            name,
            *(rng.choice(v) for v in domain.text.values()),
            *(str(rng.randint(*r)) for r in domain.numbers.values()),
        ]
        described = ", ".join(f"'{v}' for '{c}'" for c, v in zip(columns[1:], values[1:], strict=True))
        cols = ", ".join(_q(c) for c in columns)
        vals = ", ".join(f"'{v}'" for v in values)
        return (
            kind,
            f"Insert '{name}' into '{domain.table}' with values {described}.",
            f"INSERT INTO {t} ({cols}) VALUES ({vals});",
        )
    if kind == "UPDATE":
        new = str(rng.randint(*domain.numbers[num_col]))
        return (
            kind,
            f"Change the {num_col} of {value_of[domain.key]} to {new} in '{domain.table}'.",
            (f"UPDATE {t} SET {_q(num_col)} = '{new}' WHERE {key} = '{value_of[domain.key]}';"),
        )
    raise ValueError(f"unknown question type {kind!r}")


KINDS = (
    "other", "counting", "aggregation-SUM", "aggregation-MAX", "aggregation-MIN", "aggregation-AVG", "ranking",
    "INSERT", "UPDATE",
)  # fmt: skip


def generate(
    domains: tuple[Domain, ...], n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS
) -> list[dict[str, Any]]:
    """`n` dbbench records (labels still empty: ``label_and_verify`` fills and checks them)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        domain = domains[i % len(domains)]
        table = _table(domain, rng, rows=rng.randint(6, len(domain.keys)))
        kind = kinds[rng.randrange(len(kinds))]
        kind, description, sql = _question(domain, table, rng, kind)
        columns = [c["name"] for c in table["table_info"]["columns"]]
        record = {
            "description": description,
            "label": [sql] if kind in ("INSERT", "UPDATE") else [],
            "table": table,
            "type": [kind],
            "heads": columns,
            "add_description": f"The name of this table is {domain.table}, and the headers of this table are {','.join(columns)}.",
            "sql": {"query": sql},
            "source": f"agentlm-dbgen/{domain.table}",
            "id": f"dbgen-{seed}-{i:05d}",
        }
        out.append(record)
    return out


def label_and_verify(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Label each task by running its gold SQL (query answers; ``answer_md5`` for modifications, as
    AgentBench's files have it); keep only tasks whose reference passes its evaluation."""
    env = DBEnvironment()
    kept = []
    for record in records:
        task = EnvTask(id=record["id"], description=record["description"], raw=record)
        try:
            with env.episode(task) as episode:
                answer = episode.reference_answer()
                if record["type"][0] in MODIFICATIONS:
                    record["answer_md5"] = episode.table_hash()
                else:
                    record["label"] = json.loads(answer or "[]")
        except SQLError:
            continue  # the gold SQL does not run: dropped, as AgentTuning dropped such tasks
        reward = next(iter(env.verify([task])))[1]
        if reward == 1.0:
            kept.append(record)
    return kept, len(records) - len(kept)


class DBGenSettings(BaseModel):
    """`agentlm data dbgen`: which domains, how many tasks, from which seed, written where."""

    model_config = ConfigDict(extra="forbid")

    domains: Literal["heldout", "train"] = Field(  # the keys of DOMAINS
        default="train",
        description="'train': the training domains; 'heldout': another subject with unseen column names, "
        "for held-out evaluation.",
    )
    tasks: int = Field(
        default=100, ge=0, description="Tasks to draw; those whose gold SQL fails its evaluation are dropped."
    )
    seed: int = Field(default=0, description="Seeds the tables and questions (and the tasks' ids).")
    out: Path = Field(description="Where the verified tasks go (dbbench JSONL).")


@options_from(DBGenSettings, list(DBGenSettings.model_fields))
def run(**options: Any) -> None:
    """Instruction construction for the database task, offline: new dbbench-format tasks from tables."""
    settings = settings_of(DBGenSettings, options, "agentlm data dbgen")
    records, dropped = label_and_verify(generate(DOMAINS[settings.domains], settings.tasks, settings.seed))
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(
        f"wrote {len(records)} verified tasks to {settings.out} ({dropped} dropped: their reference failed)"
    )


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data dbgen")


if __name__ == "__main__":
    main()

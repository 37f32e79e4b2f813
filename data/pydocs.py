"""General chat built offline from Python's own documentation, for machines without the hub.

AgentTuning mixed agent trajectories with ShareGPT conversations (``data/general.py`` prepares
those from a file or a hub id). A machine with no internet has no ShareGPT, but every Python has
its documentation: the language reference topics behind ``help("for")`` (``pydoc_data``) and the
docstrings of the standard library. This module turns them into single-exchange conversations (a
question in the user turn, the documentation's own English prose in the assistant turn), so the
η mixing and its ablation can run anywhere. It is a stand-in for ShareGPT, narrower (technical
prose only) but real human-written text, licensed under the PSF license like Python itself.

    python -m agentlm.data.pydocs --out general.jsonl --limit 2000 --seed 0
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlm.data.formats import Conversation, Turn, write_jsonl
from agentlm.options import invoke, options_from, settings_of

SOURCE = "python-docs"
# Standard library modules with good prose docstrings and no side effects on import.
_MODULE_NAMES = """
abc argparse array base64 bisect calendar collections colorsys contextlib copy csv dataclasses
datetime decimal difflib enum fnmatch fractions functools gettext glob gzip hashlib heapq hmac
html inspect io ipaddress itertools json keyword linecache locale logging math mimetypes
numbers operator os pathlib pickle platform pprint queue random re reprlib sched secrets
shelve shlex shutil signal socket sqlite3 statistics string struct subprocess tarfile tempfile
textwrap threading time timeit tokenize traceback types typing unicodedata unittest urllib.parse
uuid warnings weakref zipfile zlib
"""
MODULES = tuple(_MODULE_NAMES.split())


def _prose(text: str, max_chars: int) -> str:
    """Whole paragraphs of ``text`` up to ``max_chars`` (at least one), whitespace tidied."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    out: list[str] = []
    for p in paragraphs:
        if out and sum(len(q) + 2 for q in out) + len(p) > max_chars:
            break
        out.append(p)
    return "\n\n".join(out)


def _topic_pairs(max_chars: int) -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    pairs = []
    for key, text in sorted(topics.items()):
        lines = text.strip().splitlines()
        # Each topic opens with its title underlined by asterisks or equals signs.
        title = lines[0].strip() if len(lines) > 1 and set(lines[1].strip()) <= {"*", "="} else key
        body = "\n".join(lines[2:]) if title != key else text
        answer = _prose(body, max_chars)
        if len(answer) >= 80:
            pairs.append((f"Can you explain {title.lower()} in Python?", answer))
    return pairs


def _docstring_pairs(max_chars: int) -> list[tuple[str, str]]:
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            doc = inspect.getdoc(module)
            if doc and len(doc) >= 80:
                pairs.append((f"What is Python's {name} module for?", _prose(doc, max_chars)))
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                    continue
                doc = inspect.getdoc(obj)
                if doc and len(doc) >= 80:
                    kind = "class" if inspect.isclass(obj) else "function"
                    pairs.append((f"What does the {kind} {name}.{attr} do?", _prose(doc, max_chars)))
    return pairs


def conversations(limit: int | None = None, seed: int = 0, max_chars: int = 1200) -> list[Conversation]:
    """Up to ``limit`` conversations (all when None), in a shuffled order fixed by ``seed``."""
    pairs = _topic_pairs(max_chars) + _docstring_pairs(max_chars)
    random.Random(seed).shuffle(pairs)
    return [
        Conversation(
            id=f"pydocs-{i:05d}",
            turns=[Turn("user", question), Turn("assistant", answer)],
            source=SOURCE,
        )
        for i, (question, answer) in enumerate(pairs[:limit])
    ]


class PydocsSettings(BaseModel):
    """How many documentation conversations `agentlm data pydocs` writes, and where."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="The conversations' JSONL file.")
    limit: int | None = Field(
        default=None, ge=0, description="At most this many conversations (default: all)."
    )
    seed: int = Field(default=0, description="Seeds the conversations' order.")
    max_chars: int = Field(default=1200, ge=0, description="Answer length, in whole paragraphs.")


@options_from(PydocsSettings, PydocsSettings.model_fields)
def run(**options: Any) -> None:
    """General chat from Python's own documentation, for machines without the hub."""
    settings = settings_of(PydocsSettings, options, "agentlm data pydocs")
    convs = conversations(settings.limit, settings.seed, settings.max_chars)
    write_jsonl(settings.out, convs)
    print(f"wrote {len(convs)} conversations from Python's documentation to {settings.out}")


def main(argv: list[str] | None = None) -> None:
    invoke(run, argv, "agentlm data pydocs")


if __name__ == "__main__":
    main()

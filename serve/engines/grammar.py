"""Constrained decoding for tool calls on the embedded engine, with xgrammar.

A request that offers tools gets a grammar over the reply's text, in the format of
``agent/toolcalls.py`` (``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` blocks,
written as ``json.dumps`` writes them), whose arguments follow each tool's JSON schema:

- ``auto``: free text until the model writes ``<tool_call>`` (xgrammar's triggered tags), then
  one of the tools' blocks, then free text again (or nothing more, without parallel calls);
- ``required``: the whole reply is one or more blocks, one a line;
- a named function: the whole reply is one block calling it.

So a call's arguments parse and match the schema by construction, even from an untrained model.
Each decode step, the rows that have a grammar get a token bitmask from their ``GrammarMatcher``,
applied in place to their float32 logits before the token is picked; rows without one are not
touched. Grammars are compiled once per distinct (tools, tool_choice, parallel_tool_calls) and
cached. The vocabulary's ``TokenizerInfo`` is built when the engine loads (``ToolGrammars.prepare``),
not on the first request with tools: for Gemma's 262k tokens, building it from the tokenizer takes
~1.2 s and ~200 MB at its peak, which on top of a request in flight was the served peak RSS. It is
built once per tokenizer and kept as xgrammar's JSON in ``AGENTLM_HOME/cache/xgrammar``; reading
that back takes ~0.2 s and holds ~26 MB once the heap is trimmed.
``benchmarks/tool_grammar.py`` measures what the mask costs a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlm.agent.toolcalls import CALL_SEPARATOR, CALL_SUFFIX, TOOL_CALL_OPEN, call_prefix, function_spec
from agentlm.serve.engines.base import InvalidToolSchemaError, UnsupportedFeatureError

if TYPE_CHECKING:
    import torch
    import xgrammar

# Arguments are written as json.dumps writes them (the training format): ", " and ": ", no other spaces.
_SEPARATORS = (", ", ": ")
_CACHE_SIZE = 64  # compiled grammars kept; one holds a mask per grammar state, up to a few MB each
_XGRAMMAR_LOCATION = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[21:12:41] /project/cpp/x.cc:94: "
# The files a Hugging Face tokenizer is read from: what a cached TokenizerInfo is keyed by.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")

log = logging.getLogger(__name__)


def offers_tools(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> bool:
    """Whether the model is offered tools: some are given, and tool_choice is not "none"."""
    return bool(tools) and tool_choice != "none"


# A function without parameters takes none (OpenAI's meaning): its arguments are {}.
_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


def _arguments_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a function's arguments: always an object (OpenAI's rule for parameters)."""
    schema = function.get("parameters") or {}
    if schema.get("type", "object") != "object":
        raise InvalidToolSchemaError(
            f"tool {function['name']!r}: parameters must be a JSON schema of type 'object', "
            f"not {schema['type']!r}"
        )
    return schema or _NO_ARGUMENTS


def structural_tag(
    tools: list[dict[str, Any]],
    tool_choice: str | dict[str, Any] | None,
    parallel: bool,
    ebnf: dict[str, str],
) -> dict[str, Any]:
    """xgrammar's structural tag for a reply: `ebnf` holds each tool's arguments grammar by name."""

    def tag(name: str) -> dict[str, Any]:
        content = {"type": "grammar", "grammar": ebnf[name]}
        return {"type": "tag", "begin": call_prefix(name), "content": content, "end": CALL_SUFFIX}

    names = [function_spec(t)["name"] for t in tools]
    if isinstance(tool_choice, dict):  # a named function: exactly one call of it
        name = tool_choice["function"]["name"]
        if name not in ebnf:
            raise InvalidToolSchemaError(f"tool_choice names {name!r}, which is not among the tools")
        fmt: dict[str, Any] = tag(name)
    elif tool_choice == "required":
        fmt = {
            "type": "tags_with_separator",
            "tags": [tag(n) for n in names],
            "separator": CALL_SEPARATOR,
            "at_least_one": True,
            "stop_after_first": not parallel,
        }
    else:  # "auto"
        fmt = {
            "type": "triggered_tags",
            "triggers": [TOOL_CALL_OPEN],
            "tags": [tag(n) for n in names],
            "stop_after_first": not parallel,
        }
    return {"type": "structural_tag", "format": fmt}


def _reason(error: Exception) -> str:
    """xgrammar's message without its source location prefix."""
    return _XGRAMMAR_LOCATION.sub("", str(error).strip())


def _tokenizer_key(tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> str | None:
    """A digest of what a TokenizerInfo is built from, or None where the tokenizer was not read
    from a directory of files (built in memory: nothing to key a cache by)."""
    digest = hashlib.sha256(
        json.dumps([version("xgrammar"), type(tokenizer).__name__, vocab_size, stop_token_ids]).encode()
    )
    source = getattr(tokenizer, "source", None)  # vocab.LlamaVocab: the GGUF its vocabulary is in
    if source is not None:  # hundreds of MB: known by its path, size and modification time
        from agentlm.serve.engines.weights import file_stamp

        digest.update(file_stamp(Path(source)).encode())
        return digest.hexdigest()[:32]
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    files = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    if not files:
        return None
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def tokenizer_info(
    tokenizer: Any, vocab_size: int, stop_token_ids: list[int], cache: Path | None
) -> xgrammar.TokenizerInfo:
    """xgrammar's view of the vocabulary: read from `cache` (a folder) if it was built before for
    the same tokenizer files, else built from the tokenizer and written there."""
    import xgrammar as xgr

    key = _tokenizer_key(tokenizer, vocab_size, stop_token_ids) if cache is not None else None
    path = cache / f"{key}.json" if cache is not None and key else None
    if path is not None and path.is_file():
        try:
            return xgr.TokenizerInfo.deserialize_json(path.read_text())
        except (RuntimeError, ValueError, OSError) as e:  # another xgrammar's format, a torn file
            log.warning(
                "rebuilding the tool-call grammar's vocabulary: %s is unreadable (%s)", path, _reason(e)
            )
    if hasattr(tokenizer, "encoded_vocab"):  # vocab.LlamaVocab: each token's bytes, as llama.cpp has them
        info = xgr.TokenizerInfo(
            tokenizer.encoded_vocab(), xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
    else:
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(info.serialize_json())
            tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
        except OSError as e:
            log.warning("could not keep the tool-call grammar's vocabulary in %s (%s)", path, e)
    return info


class ToolGrammars:
    """Compiles and caches tool-call grammars for one tokenizer, and masks logits with them."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], cache: Path | None = None):
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        self._info_cache = cache  # where TokenizerInfo is kept between runs (`tokenizer_info`)
        self._compiler: xgrammar.GrammarCompiler | None = None  # built by prepare(), at load
        self._cache: OrderedDict[str, xgrammar.CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self._bitmask: torch.Tensor | None = None  # the worker's, grown to the largest batch masked

    def prepare(self) -> None:
        """Build the grammar compiler (the vocabulary's TokenizerInfo) now rather than on the first
        request with tools. Thread-safe; a no-op once done."""
        import xgrammar as xgr

        with self._lock:
            if self._compiler is None:
                info = tokenizer_info(
                    self._tokenizer, self._vocab_size, self._stop_token_ids, self._info_cache
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)

    def compile(
        self, tools: list[dict[str, Any]], tool_choice: str | dict[str, Any] | None, parallel: bool
    ) -> xgrammar.CompiledGrammar:
        """The compiled grammar for a reply to these tools (cached); InvalidToolSchemaError names a
        tool whose schema cannot be a grammar, and why. Thread-safe; may take a while (call it off
        the event loop)."""
        import xgrammar as xgr

        key = json.dumps([tools, tool_choice, parallel], sort_keys=True)
        try:
            self.prepare()
        except (RuntimeError, ValueError, TypeError) as e:
            raise UnsupportedFeatureError(
                f"tool calls cannot be constrained for this model: xgrammar cannot read its vocabulary "
                f"({_reason(e)}); call it without tools"
            ) from e
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            assert self._compiler is not None
            ebnf = {}
            for tool in tools:
                function = function_spec(tool)
                try:
                    grammar = xgr.Grammar.from_json_schema(
                        _arguments_schema(function), any_whitespace=False, separators=_SEPARATORS
                    )
                except (RuntimeError, ValueError, TypeError) as e:
                    raise InvalidToolSchemaError(
                        f"tool {function['name']!r}: its parameters schema cannot be used to constrain "
                        f"the arguments: {_reason(e)}"
                    ) from e
                ebnf[function["name"]] = str(grammar)
            try:
                tag = structural_tag(tools, tool_choice, parallel, ebnf)
                compiled = self._compiler.compile_grammar(xgr.Grammar.from_structural_tag(tag))
            except (RuntimeError, ValueError, TypeError) as e:
                raise InvalidToolSchemaError(
                    f"the tools cannot be compiled into a grammar: {_reason(e)}"
                ) from e
            self._cache[key] = compiled
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return compiled

    @staticmethod
    def matcher(compiled: xgrammar.CompiledGrammar) -> xgrammar.GrammarMatcher:
        """A fresh matcher for one reply."""
        import xgrammar as xgr

        return xgr.GrammarMatcher(compiled)

    def mask(self, logits: torch.Tensor, rows: list[tuple[int, xgrammar.GrammarMatcher]]) -> None:
        """Set to -inf, in place, each listed row's logits for the tokens its grammar forbids next.
        logits: [rows, vocab] float32. Only the worker thread calls this."""
        import xgrammar as xgr

        need = max(i for i, _ in rows) + 1
        if self._bitmask is None or self._bitmask.shape[0] < need:
            self._bitmask = xgr.allocate_token_bitmask(need, self._vocab_size)
        for i, matcher in rows:
            matcher.fill_next_token_bitmask(self._bitmask, i)
        xgr.apply_token_bitmask_inplace(
            logits, self._bitmask, vocab_size=self._vocab_size, indices=[i for i, _ in rows]
        )

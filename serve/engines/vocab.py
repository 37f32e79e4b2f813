"""The embedded models' tokenizer, read from their GGUF by llama.cpp: no transformers, no torch.

The embedded engine asks a tokenizer for the little of Hugging Face's API it uses (``__call__``,
``decode``, ``convert_tokens_to_ids``, ``apply_chat_template``, the special ids). A converted
checkpoint brings its Hugging Face tokenizer; the embedded Gemma models get this one instead:
llama.cpp's tokenizer over the vocabulary in the GGUF (the same token ids as the Hugging Face
tokenizer transformers reads from that GGUF, which training used: checked on every held-out
prompt), and AgentLM's own chat template rendered in Python (``data/templates.py``). That keeps
the serving process free of transformers and torch (about 550 MB of its resident memory) until a
request offers tools (the grammars need torch).
"""

from __future__ import annotations

import ctypes
from typing import Any

from agentlm.agent.trajectory import ChatMessage
from agentlm.data.templates import get_template
from agentlm.serve.engines.llamacpp import LlamaCpp


class LlamaVocab:
    """llama.cpp's tokenizer for a loaded model, with an AgentLM chat template by name."""

    def __init__(self, llm: LlamaCpp, template: str):
        self.source = llm.gguf  # for caches keyed by the vocabulary
        self._lib = llm.lib
        self._vocab = llm.lib.llama_model_get_vocab(llm.model)
        self.template = get_template(template)
        self.chat_template = self.template.jinja
        self.bos_token_id = self._lib.llama_vocab_bos(self._vocab)
        self.eos_token_id = self._lib.llama_vocab_eos(self._vocab)
        self.unk_token_id = None
        self.vocab_size = self._lib.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(256)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in it (``<start_of_turn>``) are read as such."""
        data = text.encode()
        room = len(data) + 8
        ids = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), ids, room, add_special_tokens, True)
        return list(ids[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for; none for a control token (``<end_of_turn>``)."""
        piece = self._pieces.get(token)
        if piece is None:
            buffer = self._buffer
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            if n < 0:  # longer than the buffer: -n bytes
                buffer = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            piece = self._pieces[token] = buffer.raw[: max(n, 0)]
        return piece

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self.piece(i) for i in ids).decode(errors="replace")

    def convert_tokens_to_ids(self, text: str) -> int | None:
        """The id of a token written as text, if it is one token."""
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None

    def apply_chat_template(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
    ) -> str:
        return self.template.render_prompt(messages, tools)

    def encoded_vocab(self) -> list[bytes]:
        """Every token's bytes, in id order (xgrammar's raw vocabulary)."""
        return [self.piece(i) for i in range(self.vocab_size)]

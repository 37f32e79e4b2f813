"""Tokenize a rendered conversation and label only the tokens the model should learn.

The whole rendering is tokenized at once (so tokens match what serving produces from the same
text), and a token is trainable when its characters overlap a trainable segment. Every other
label is -100, which the loss ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentlm.data.formats import Conversation
from agentlm.data.templates import ChatTemplate

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def tokenize_conversation(
    tokenizer, template: ChatTemplate, conv: Conversation, honour_loss_flag: bool = True
) -> TokenizedExample:
    segments = template.render(conv.turns, honour_loss_flag)
    text = "".join(s.text for s in segments)
    spans, pos = [], 0
    for s in segments:
        if s.trainable:
            spans.append((pos, pos + len(s.text)))
        pos += len(s.text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        inside = any(start < b and end > a for a, b in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return TokenizedExample(list(enc["input_ids"]), labels)

"""The training loss: next-token cross-entropy on the trained tokens only.

Labels come from data/masks.py (IGNORE_INDEX on everything not trained: prompts, observations,
user turns, padding). The recipe divides each micro batch's summed loss by the step's trained
tokens on all ranks, so a long conversation weighs more than a short one whatever the batching.
"""

from __future__ import annotations

from agentlm.data.masks import IGNORE_INDEX
from agentlm.train.prefix import PrefixedBatch, prefixed_hidden


def causal_lm_loss(model, batch, n_tokens):
    """The batch's summed next-token cross-entropy over its trained tokens, divided by ``n_tokens``.

    The same loss as HF's ``labels=``/``num_items_in_batch=`` path, but the vocabulary-sized output
    layer runs only on the hidden states whose next token is trained, row by row: it never runs on
    prompts, observations and user turns (for Gemma 3 270M that layer is 60 % of the forward pass
    per token, and in an agent trajectory most tokens are not trained), and the logits held for the
    backward pass are (trained tokens, vocabulary), not (rows, longest span, vocabulary).
    """
    import torch.nn.functional as F

    logits, targets, _ = trained_logits(model, batch)
    return F.cross_entropy(logits, targets, reduction="sum") / n_tokens


def trained_logits(model, batch):
    """The logits where the next token is trained, (trained tokens, vocabulary) in fp32, their
    target tokens, and the (rows, width - 1) mask that says where they are."""
    decoder, head, softcap = _decoder_and_head(model)
    if isinstance(batch, PrefixedBatch):
        hidden = prefixed_hidden(decoder, batch)
    else:
        hidden = decoder(**batch.model_inputs()).last_hidden_state  # (rows, width, dim)
    targets = batch.labels[:, 1:]
    trained = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][trained]).float()  # (trained tokens, vocabulary)
    if softcap is not None:
        logits = (logits / softcap).tanh() * softcap
    return logits, targets[trained], trained


def _decoder_and_head(model):
    """The transformer body, the output layer and the logit softcap of a causal LM, seen through
    DeepSpeed's engine and a PEFT wrapper (calling the parts keeps their hooks: ZeRO-3 gathers per module)."""
    lm = getattr(model, "module", model)
    if hasattr(lm, "get_base_model"):
        lm = lm.get_base_model()
    return lm.model, lm.lm_head, getattr(lm.config, "final_logit_softcapping", None)

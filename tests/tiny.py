"""Tiny Llama-style models and tokenizers, built locally in seconds (no downloads)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agentlm.data.templates import get_template

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on `corpus`, with Llama's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = get_template("llama-2").jinja
    return fast


def build_tiny_model(
    out_dir: str | Path, corpus: Iterable[str], vocab_size: int = 2000, seed: int = 0
) -> Path:
    """Save a randomly initialised tiny Llama and its tokenizer to `out_dir` as an HF checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_gemma(**overrides):
    """A random two-layer Gemma 3 in memory, with a 4-token sliding window to exercise its cap."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        **{
            "vocab_size": 128,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 256,
            **overrides,
        }
    )
    return Gemma3ForCausalLM(config).eval()

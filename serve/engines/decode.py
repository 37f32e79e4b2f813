"""A decode step written out for the model families the embedded engine knows: Llama and Gemma 3.

A decode step is bound by reading the weights once, so everything else it does is overhead.
transformers' forward is written for every use at once (training, prefill, masks of all kinds,
hooks), and for one new token a row it runs about 3,000 small operations on Gemma 3 270M: about
13 ms of a 64 ms step on two cores, where each operation costs microseconds to dispatch and its
data has been pushed out of the caches by the weights streaming past. ``LeanDecoder`` does the
same arithmetic for a decode step with fewer, larger operations:

- q, k and v are one matrix product, and so are the MLP's gate and up: their weights are
  concatenated once at load and the original modules keep views of the concatenation, so
  transformers' prefill reads the same memory. A fused layer is a shape of its own, so it gets
  its own packed-or-plain decision (``LeanDecoder.pack``); where ``pack_linears`` packed the
  modules already, they are called one by one instead.
- An RMS norm is five operations, not ten: ``x * rsqrt(sum(x^2) + n * eps) * w'``, with the mean's
  ``1/n`` and Gemma's ``1 + w`` folded into ``w'`` at load.
- Rotary embeddings turn q and k in one go, ``rotate_half`` being a roll and a sign folded into
  sin; Gemma's q and k norms run together too, with the attention scaling folded into q's weight.
- Attention for one query a row is two matmuls and a softmax, the query heads that share a
  key/value head (grouped-query attention) as the rows of one product.

It reads and writes transformers' own cache (``batching.py``'s in-place layers), so prefill stays
with transformers and rows move between the two freely. Sliding-window layers need no mask of
their own: their cache holds only the window, so only padding is masked. Built at load, it checks
its logits against transformers' on a padded two-row probe; any other model, or a mismatch, and
the engine keeps transformers' forward. ``benchmarks/serving.py`` measures the result.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agentlm.serve.engines.kernels import choose_packed, packing_available

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """How a family's decoder layer differs from Llama's."""

    norm_offset: float  # a norm multiplies by offset + weight (Gemma stores weights around 0)
    sandwich: bool  # each branch's output is normed too (Gemma's post-attention/feedforward norms)
    qk_norm: bool  # q and k are RMS-normed per head before the rotary embedding
    rope_per_layer_type: bool  # the rotary embedding is asked for each layer type (Gemma 3)


FAMILIES = {
    "LlamaForCausalLM": Family(norm_offset=0.0, sandwich=False, qk_norm=False, rope_per_layer_type=False),
    "Gemma3ForCausalLM": Family(norm_offset=1.0, sandwich=True, qk_norm=True, rope_per_layer_type=True),
}


class _Concat(nn.Module):
    """Layers that cannot share one product (some packed): their outputs side by side."""

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.parts], -1)


# The projections the lean step fuses: ``pack_linears`` leaves them to ``LeanDecoder.pack``.
FUSED = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


def unsupported(model: nn.Module) -> str | None:
    """Why the lean step cannot decode `model`, or None if it can (its probe still decides)."""
    config = model.config
    if type(model).__name__ not in FAMILIES:
        return "no lean decode step for this model family"
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "final_logit_softcapping", None):
        return "logit softcapping"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention"
    return None


def _fuse(modules: list[nn.Module]) -> nn.Module:
    """One module computing the modules' outputs side by side. Plain ``nn.Linear`` layers become
    one over their concatenated weights, which the modules then view (one copy in memory, read by
    transformers' prefill too)."""
    if len(modules) == 1:
        return modules[0]
    if not all(type(m) is nn.Linear for m in modules) or len({m.weight.dtype for m in modules}) > 1:
        return _Concat(modules)
    fused = nn.Linear(modules[0].in_features, sum(m.out_features for m in modules), bias=False)
    fused.weight = nn.Parameter(torch.cat([m.weight for m in modules]), requires_grad=False)
    if any(m.bias is not None for m in modules):
        biases = [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in modules]
        fused.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
    start = 0
    for m in modules:
        end = start + m.out_features
        m.weight.data = fused.weight.data[start:end]
        if m.bias is not None:
            m.bias.data = fused.bias.data[start:end]
        start = end
    return fused


class _FusedMLP(nn.Module):
    """A transformers MLP whose gate and up run as the decode step's one fused product, so prefill
    reads the fused layer's (packed) copy of the weights and the plain ones can be freed."""

    def __init__(self, gate_up: nn.Module, down: nn.Module, act: nn.Module):
        super().__init__()
        self.gate_up, self.down_proj, self.act_fn = gate_up, down, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, -1)
        return self.down_proj(self.act_fn(gate) * up)


@dataclass
class _Layer:
    block: nn.Module  # transformers' decoder layer
    qkv: nn.Module  # -> [rows, (heads + 2 kv_heads) * head_dim]
    o: nn.Module
    gate_up: nn.Module  # -> [rows, 2 * intermediate]
    down: nn.Module
    act: nn.Module
    attn_norm: torch.Tensor  # RMS norm weights, float32, with offset and sqrt(n) folded in
    mlp_norm: torch.Tensor
    post_attn_norm: torch.Tensor | None  # sandwich norms (Gemma)
    post_mlp_norm: torch.Tensor | None
    qk_norm: torch.Tensor | None  # [heads + kv_heads, head_dim], q's rows scaled for attention
    scaling: float  # applied to attention scores where no q norm carries it
    rope: str | None  # the layer type to ask the rotary embedding for (Gemma 3)


class LeanDecoder:
    """The decode step of a Llama or Gemma 3 model; call it as ``PaddedBatch`` steps."""

    def __init__(self, model: nn.Module, family: Family):
        config = model.config
        inner = model.model
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        half = self.head_dim // 2
        self.half = half
        # rotate_half(x) = roll(x, half) * sign, so x * cos + rotate_half(x) * sin needs one roll.
        self.sign = torch.cat([-torch.ones(half), torch.ones(self.head_dim - half)])
        eps = float(config.rms_norm_eps)
        # n * eps per normed width, as 0-dim tensors: adding a Python float wraps it in a new tensor each time.
        self._eps = {n: torch.tensor(n * eps) for n in (config.hidden_size, self.head_dim)}

        def norm(module: nn.Module, scale: float = 1.0) -> torch.Tensor:
            weight = module.weight.detach().float() + family.norm_offset
            return weight * math.sqrt(weight.shape[-1]) * scale

        self.layers = []
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            qk_norm = None
            if family.qk_norm:
                q_norm = norm(attn.q_norm, attn.scaling).expand(self.heads, -1)
                qk_norm = torch.cat([q_norm, norm(attn.k_norm).expand(self.kv_heads, -1)])
            self.layers.append(
                _Layer(
                    block=layer,
                    qkv=_fuse([attn.q_proj, attn.k_proj, attn.v_proj]),
                    o=attn.o_proj,
                    gate_up=_fuse([mlp.gate_proj, mlp.up_proj]),
                    down=mlp.down_proj,
                    act=mlp.act_fn,
                    attn_norm=norm(layer.input_layernorm),
                    mlp_norm=norm(
                        layer.pre_feedforward_layernorm if family.sandwich else layer.post_attention_layernorm
                    ),
                    post_attn_norm=norm(layer.post_attention_layernorm) if family.sandwich else None,
                    post_mlp_norm=norm(layer.post_feedforward_layernorm) if family.sandwich else None,
                    qk_norm=qk_norm,
                    scaling=1.0 if family.qk_norm else float(attn.scaling),
                    rope=config.layer_types[i] if family.rope_per_layer_type else None,
                )
            )
        self.final_norm = norm(inner.norm)
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.head = model.lm_head
        self.packed = 0  # fused layers packed (`pack`)

    @classmethod
    def build(cls, model: nn.Module, kernels: str = "plain", batch: int = 8) -> LeanDecoder | None:
        """The lean decoder for `model`, or None where its family is not one we know or its logits
        do not match transformers' on a probe (the engine then steps with transformers).

        `kernels` and `batch` as for ``pack_linears``, which has packed the model's other layers
        already (leaving ``FUSED`` plain); this packs the fused ones (see `pack`)."""
        name = type(model).__name__
        if reason := unsupported(model):
            log.info("%s: %s; decoding with transformers", name, reason)
            return None
        family = FAMILIES[name]
        try:
            with torch.no_grad():  # not inference mode: the modules' weights become views of its tensors
                decoder = cls(model, family)
            with torch.inference_mode():
                decoder.pack(kernels, batch)
                error = decoder.check()
        except Exception as e:  # an unexpected module layout: transformers knows best
            log.warning("%s: the lean decode step failed to build (%s); decoding with transformers", name, e)
            return None
        tolerance = 1e-3 if model.dtype == torch.float32 else 5e-2
        if not error <= tolerance:
            log.warning(
                "%s: the lean decode step's logits differ by %.2e of their range; decoding with transformers",
                name,
                error,
            )
            return None
        decoder.share_with_prefill()
        return decoder

    def share_with_prefill(self) -> None:
        """Run transformers' MLPs (prefill) through the packed fused gate/up layers, so the plain
        weights are freed. Called once the decode step checked out against transformers' own."""
        for layer in self.layers:
            if type(layer.gate_up) is not nn.Linear and not isinstance(layer.gate_up, _Concat):
                layer.block.mlp = _FusedMLP(layer.gate_up, layer.down, layer.act)

    def pack(self, kernels: str, batch: int) -> int:
        """Pack the fused q/k/v and gate/up layers where `kernels` says so ("auto": where
        ``choose_packed`` finds their shape faster packed for 1 and `batch` rows); returns how
        many. A fused layer is a shape of its own: on a Xeon, gate and up packed as two 2048x640
        layers tie with MKL, while one 4096x640 layer packed is about 1.25x as fast (as fast for
        one row, 1.6x for eight). A packed gate/up also serves prefill (``_FusedMLP`` in place of
        transformers' MLP), so the plain weights are freed: Gemma 3 270M's, 189 MB in float32. A
        packed q/k/v holds a copy of its own, since transformers' attention reads q, k and v apart."""
        if kernels == "plain" or not packing_available():
            return 0
        fused = [
            (layer, name, module)
            for layer in self.layers
            for name in ("qkv", "gate_up")
            if type(module := getattr(layer, name)) is nn.Linear
            and module.weight.dtype in (torch.float32, torch.bfloat16)
        ]
        if not fused:
            return 0
        choice = choose_packed([module for _, _, module in fused], kernels, batch, what="fused layers")
        chosen = [
            (target, module) for target, module in zip(fused, choice, strict=True) if module is not None
        ]
        for (layer, name, _), module in chosen:
            setattr(layer, name, module)
        self.packed = len(chosen)
        return self.packed

    def check(self) -> float:
        """The largest difference from transformers' logits, relative to their range, over two
        decode steps of a left-padded two-row batch."""
        from agentlm.serve.engines.batching import PaddedBatch

        vocab = int(self.model.config.vocab_size)
        prompts = [[(7 * i + 3) % (vocab - 1) + 1 for i in range(n)] for n in (9, 5)]
        batches = [PaddedBatch(self.model), PaddedBatch(self.model, self)]
        for batch in batches:
            batch.join(batch.prefill(prompts))
        error = 0.0
        for tokens in ([11 % vocab, 13 % vocab], [17 % vocab, 19 % vocab]):
            want, got = (batch.step(tokens) for batch in batches)
            scale = float(want.abs().max()) or 1.0
            error = max(error, float((got - want).abs().max()) / scale)
        return error

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMS norm over the last dimension, computed in float32 (`weight` from `norm` above)."""
        if x.dtype != torch.float32:
            return self._rms(x.float(), weight).to(x.dtype)
        return x * torch.rsqrt((x * x).sum(-1, keepdim=True).add_(self._eps[x.shape[-1]])) * weight

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: Any
    ) -> torch.Tensor:
        """Next-token logits [rows, vocab] (float32) for each row's newest token, appending its keys
        and values to `cache`. tokens, positions: [rows]; mask: [rows, columns] (1 = a real token,
        0 = padding), the new column included, or None if nothing is padding."""
        rows, heads, kv, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        h = self.embed(tokens)  # [rows, hidden]
        # Rotary cos and sin [rows, 1, head_dim] per layer type, sin already signed for the roll.
        ropes: dict[str | None, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer_type in {layer.rope for layer in self.layers}:
            extra = () if layer_type is None else (layer_type,)
            cos, sin = self.rotary(h, positions[:, None], *extra)
            ropes[layer_type] = (cos, sin * self.sign.to(sin.dtype))
        bias = None
        if mask is not None:  # padding columns get -inf before the softmax
            bias = torch.zeros(rows, 1, 1, mask.shape[1], dtype=h.dtype)
            bias.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = self._rms(h, layer.attn_norm)
            qkv = layer.qkv(x).view(rows, heads + 2 * kv, dim)
            qk = qkv[:, : heads + kv]
            if layer.qk_norm is not None:
                qk = self._rms(qk, layer.qk_norm)
            cos, sin = ropes[layer.rope]
            qk = torch.addcmul(qk * cos, qk.roll(self.half, -1), sin)
            keys, values = layer_cache.update(qk[:, heads:, None], qkv[:, heads + kv :, None])
            # The query heads sharing a key/value head are the rows of one product: [rows, kv, group, columns].
            scores = torch.matmul(qk[:, :heads].reshape(rows, kv, heads // kv, dim), keys.transpose(-1, -2))
            if layer.scaling != 1.0:
                scores = scores * layer.scaling
            if bias is not None:
                scores = scores + bias[..., -keys.shape[-2] :]
            attention = torch.softmax(scores, -1, dtype=torch.float32).to(values.dtype)
            out = layer.o(torch.matmul(attention, values).reshape(rows, heads * dim))
            if layer.post_attn_norm is not None:
                out = self._rms(out, layer.post_attn_norm)
            h = h + out
            gate, up = layer.gate_up(self._rms(h, layer.mlp_norm)).chunk(2, -1)
            out = layer.down(layer.act(gate) * up)
            if layer.post_mlp_norm is not None:
                out = self._rms(out, layer.post_mlp_norm)
            h = h + out
        return self.head(self._rms(h, self.final_norm)).float()

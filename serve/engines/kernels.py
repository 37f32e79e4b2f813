"""Linear layers with oneDNN-packed weights: what makes CPU decoding read memory at speed.

A decode step multiplies every weight matrix by one vector (or a few, when requests are batched),
so its speed is how fast the weights stream from memory. ``nn.Linear`` hands that to MKL's gemv,
which on this machine (AMD EPYC, 2 cores) runs on one thread and reads ~12 GB/s. The same matrix,
reordered once into oneDNN's blocked layout and multiplied with ``mkldnn::_linear_pointwise``
(what torch.compile's CPU backend emits for a frozen linear), reads 23-30 GB/s on both cores and
is faster for every batch size up to long prefills. ``benchmarks/serving.py`` shows the effect on
a whole decode step.

``pack_linears`` swaps a loaded model's ``nn.Linear`` modules for ``PackedLinear`` and checks the
result: the logits of a short probe must match the unpacked model's, or every module is put back
and the engine runs unpacked (a model whose code reads ``.weight`` of a projection, say). A tied
output layer gets its own packed copy; the input embedding keeps the original for lookups, so a
tied model holds its embedding twice (~670 MB more for Gemma 3 270M in float32).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def weights_dtype(name: str) -> torch.dtype:
    """The dtype to load weights in: "float32", "bfloat16", or "auto" (float32)."""
    if name == "auto":
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use one of auto, {', '.join(DTYPES)}") from None


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight held in oneDNN's packed layout (no plain ``.weight``)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # No batch-size hint: one layout serves a lone decode row, a batch and a prefill alike.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != self.packed.dtype:  # a caller upcast its activations: follow the weights
            rows = rows.to(self.packed.dtype)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear and child.weight.dtype in (torch.float32, torch.bfloat16)
    ]


def _probe(model: nn.Module) -> torch.Tensor:
    vocab = int(getattr(model.config, "vocab_size", 2))
    ids = torch.arange(1, 9).remainder(max(vocab - 1, 1)).add(1)[None]
    return model(input_ids=ids, use_cache=False).logits.float()


def pack_linears(model: nn.Module) -> int:
    """Pack the model's linear layers in place; returns how many (0 if it ran unchanged)."""
    if not packing_available():
        log.info("oneDNN is not available in this torch build; linear layers stay unpacked")
        return 0
    targets = _linears(model)
    if not targets:
        return 0
    with torch.inference_mode():
        expected = _probe(model)
        for parent, name, linear in targets:
            setattr(parent, name, PackedLinear(linear))
        try:
            got = _probe(model)
            tolerance = 1e-3 if expected.dtype == torch.float32 else 5e-2
            scale = float(expected.abs().max()) or 1.0
            error = float((got - expected).abs().max()) / scale
            if not error <= tolerance:
                raise ValueError(f"packed logits differ by {error:.2e} of their range")
        except Exception as e:
            for parent, name, linear in targets:
                setattr(parent, name, linear)
            log.warning("packing %s's linear layers failed (%s); running unpacked", type(model).__name__, e)
            return 0
    return len(targets)

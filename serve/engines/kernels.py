"""Linear layers with oneDNN-packed weights, where they make CPU decoding read memory faster.

A decode step multiplies every weight matrix by one vector (or a few, when requests are batched),
so its speed is how fast the weights stream from memory. ``nn.Linear`` hands that to MKL's gemv or
gemm; the same matrix, reordered once into oneDNN's blocked layout and multiplied with
``mkldnn::_linear_pointwise`` (what torch.compile's CPU backend emits for a frozen linear), is
often faster, but not always:

- AMD EPYC, 2 cores: MKL's gemv runs on one thread and reads ~12 GB/s; the packed kernel reads
  23-30 GB/s on both cores, for one row, a batch or a prefill.
- Intel Xeon with AMX, 2 cores: MKL is 1.2-1.8x faster than the packed kernel through the
  decoder layers' small matrices, about even on the 262k-row output layer for a lone row, and
  2.7x slower on it for 8 rows.

So ``pack_linears`` can decide per machine: with ``layout="auto"`` it times each group of
same-shaped layers both ways, on one row and on a full batch, and packs the groups where the
packed kernel clearly wins (the geometric mean of the two speed ratios above ``PACK_MARGIN``).
That costs about a second at load; a packed layer holds its weight in the packed layout only
(the lean decode step's fused layers are the exception, ``decode.py``). ``benchmarks/serving.py``
shows the effect on a whole decode step.

Whatever it packs is checked: the logits of a short probe must match the unpacked model's, or
every module is put back and the engine runs unpacked (a model whose code reads ``.weight`` of a
projection, say). A tied output layer gets its own packed copy; the input embedding keeps the
original for lookups, so a tied model holds its embedding twice (~670 MB more for Gemma 3 270M
in float32).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Collection

import torch
from torch import nn

log = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LAYOUTS = ("auto", "packed", "plain")
# "auto" packs a group only where it measures this much faster alone: in a whole decode step a
# near tie loses (Gemma 3 270M's gate/up at 1.02x alone made the step 5-10% slower packed), and
# plain layers let the lean decode step fuse q/k/v and gate/up into one product each (decode.py).
PACK_MARGIN = 1.1


def weights_dtype(name: str) -> torch.dtype:
    """The dtype to load weights in: "float32", "bfloat16", or "auto" (float32)."""
    if name == "auto":
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use one of auto, {', '.join(DTYPES)}") from None


def own_weights(model: nn.Module) -> None:
    """Copy every parameter and buffer into this process's own (anonymous) memory.

    transformers maps the checkpoint file and hands out tensors that are views of the mapping, so
    the weights live in the page cache, where the kernel may drop them when another process needs
    memory and read them back from disk, page by page, in the middle of a decode step. Anonymous
    memory stays put (there is no swap on a typical server), and as a new allocation it gets the
    transparent huge pages ``import agentlm`` asks torch for. Costs one copy of the weights at load.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):  # a tied weight is listed once
            tensor.data = tensor.data.clone()


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


def packed_speedups(
    linears: list[nn.Linear], packed: list[PackedLinear], batch: int, rounds: int = 3
) -> dict[tuple[int, int], float]:
    """How much faster each group of same-shaped layers runs packed than plain on this machine,
    keyed by (in_features, out_features): the geometric mean of the speed ratios for one row (a
    lone decode step) and for `batch` rows.

    Each timing is one pass through all the layers, as a decode step makes, so that a matrix's
    weights come from memory and not from a cache that timing it a moment before warmed; each
    group's time is its share of the pass, the best of `rounds`. The two layouts alternate, so
    that a noisy neighbour slows both alike."""
    keys = [(linear.in_features, linear.out_features) for linear in linears]
    ratios: dict[tuple[int, int], list[float]] = defaultdict(list)
    for rows in sorted({1, max(batch, 1)}):
        inputs = {n: torch.randn(rows, n, dtype=linears[0].weight.dtype) for n, _ in keys}
        best = [defaultdict(lambda: math.inf), defaultdict(lambda: math.inf)]
        for attempt in range(rounds + 1):  # the first warms up: oneDNN builds its primitives
            for layout, modules in enumerate((linears, packed)):
                seconds: dict[tuple[int, int], float] = defaultdict(float)
                for key, module in zip(keys, modules, strict=True):
                    start = time.perf_counter()
                    module(inputs[key[0]])
                    seconds[key] += time.perf_counter() - start
                if attempt:
                    for key, value in seconds.items():
                        best[layout][key] = min(best[layout][key], value)
        for key in best[0]:
            ratios[key].append(best[0][key] / best[1][key])
    return {key: math.prod(r) ** (1 / len(r)) for key, r in ratios.items()}


def choose_packed(
    linears: list[nn.Linear], layout: str, batch: int, what: str = "linear layers"
) -> list[PackedLinear | None]:
    """Each layer's packed replacement, or None where it stays plain: "packed" packs every one,
    "auto" those whose group of same-shaped layers `packed_speedups` finds more than PACK_MARGIN
    faster packed, for one row and for `batch` rows (each group's figure is logged as `what`)."""
    packed: list[PackedLinear | None] = [PackedLinear(linear) for linear in linears]
    if layout == "auto":
        speedups = packed_speedups(linears, packed, batch)  # type: ignore[arg-type]
        for (rows_in, rows_out), speedup in speedups.items():
            log.info(
                "%s %dx%d: packed %.2fx as fast as plain (1 and %d rows): %s",
                what,
                rows_out,
                rows_in,
                speedup,
                batch,
                "packing" if speedup > PACK_MARGIN else "leaving plain",
            )
        packed = [
            module if speedups[(linear.in_features, linear.out_features)] > PACK_MARGIN else None
            for linear, module in zip(linears, packed, strict=True)
        ]
    return packed


def pack_linears(
    model: nn.Module, layout: str = "packed", batch: int = 8, leave: Collection[str] = ()
) -> int:
    """Pack the model's linear layers in place; returns how many (0 if it ran unchanged).

    `layout`: "packed" packs them all, "plain" none, "auto" the groups of same-shaped layers that
    `packed_speedups` finds faster packed, for one row and for `batch` rows. Layers named in
    `leave` (the lean decode step's fused projections) stay as they are.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown kernel layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout == "plain":
        return 0
    if not packing_available():
        log.info("oneDNN is not available in this torch build; linear layers stay unpacked")
        return 0
    targets = [target for target in _linears(model) if target[1] not in leave]
    if not targets:
        return 0
    with torch.inference_mode():
        choice = choose_packed([linear for _, _, linear in targets], layout, batch)
        chosen = [
            (target, module) for target, module in zip(targets, choice, strict=True) if module is not None
        ]
        if not chosen:
            return 0
        targets, packed = [t for t, _ in chosen], [m for _, m in chosen]
        expected = _probe(model)
        for (parent, name, _), module in zip(targets, packed, strict=True):
            setattr(parent, name, module)
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

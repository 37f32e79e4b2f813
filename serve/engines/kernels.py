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
projection, say). A tied output layer gets its own packed copy; the input embedding then reads
only a few rows a step, so the engine leaves it a view of the checkpoint file (``own_weights``'
`leave`). A big layer is packed a block of rows at a time (``BlockPackedLinear``), letting each
block's file pages go once packed, so no layer is ever in memory twice while loading.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import mmap
import time
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

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


def own_weights(model: nn.Module, leave: Collection[torch.Tensor] = ()) -> None:
    """Copy every parameter and buffer that is a view of the mapped checkpoint into this process's
    own (anonymous) memory, except those in `leave`.

    transformers maps the checkpoint file and hands out tensors that are views of the mapping, so
    the weights live in the page cache, where the kernel may drop them when another process needs
    memory and read them back from disk, page by page, in the middle of a decode step. Anonymous
    memory stays put (there is no swap on a typical server), and as a new allocation it gets the
    transparent huge pages ``import agentlm`` asks torch for. Each tensor's file pages are let go
    as soon as it is copied, so the load never holds the weights twice.

    A tensor in `leave` stays a view of the file with its pages let go: an input embedding read
    only by lookups touches a few rows a step, so the rows a conversation uses come back into
    memory and the rest of a 262k-token vocabulary never does (~670 MB for Gemma 3 270M in float32).
    """
    mapped = _file_mappings()
    kept = {id(t) for t in leave}
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):  # a tied weight is listed once
            if not _in_file(tensor, mapped):
                continue  # already this process's own memory (a buffer computed at load, a copy)
            if id(tensor) in kept:
                _release_file_pages(tensor, mapped)
                continue
            old = tensor.data
            tensor.data = old.clone()
            _release_file_pages(old, mapped)


def lookup_only(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """The input embedding's weight if only lookups read it (no plain output layer shares it)."""
    embedding = model.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    head = model.get_output_embeddings()
    if weight is None or isinstance(head, nn.Linear) and head.weight is weight:
        return ()
    return (weight,)


CHECKPOINT_FILES = (".safetensors", ".bin", ".pt", ".pth")


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of checkpoint files (from /proc/self/maps)."""
    out = []
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return out  # not Linux: nothing counts as mapped, so every weight is copied
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(CHECKPOINT_FILES):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end))
    return out


def _span(tensor: torch.Tensor) -> tuple[int, int] | None:
    if tensor.is_mkldnn or not tensor.is_contiguous() or not tensor.numel():
        return None
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def _in_file(tensor: torch.Tensor, mapped: list[tuple[int, int]]) -> bool:
    span = _span(tensor)
    return span is not None and any(lo <= span[0] and span[1] <= hi for lo, hi in mapped)


def in_checkpoint_file(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a view of a mapped checkpoint file (not this process's own memory)."""
    return _in_file(tensor, _file_mappings())


def _release_file_pages(tensor: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Drop the whole pages under `tensor` from this process's memory if they are pages of a
    mapped checkpoint file (read again from the file should anything touch them)."""
    if not _in_file(tensor, mapped):
        return  # anonymous memory (a buffer computed at load): dropping it would zero it
    start, end = _span(tensor)  # type: ignore[misc]
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED)


MADV_DONTNEED = 4


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library's functions, from this process's own symbols. Not ``find_library``: that
    runs ``ldconfig`` in a subprocess, a fork of the whole serving process each call."""
    return ctypes.CDLL(None, use_errno=True)


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight held in oneDNN's packed layout (no plain ``.weight``)."""

    def __init__(
        self,
        linear: nn.Linear | None = None,
        *,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ):
        super().__init__()
        if linear is not None:
            weight, bias = linear.weight, linear.bias
        assert weight is not None, "PackedLinear needs a linear layer or a weight"
        self.out_features, self.in_features = weight.shape
        # No batch-size hint: one layout serves a lone decode row, a batch and a prefill alike.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != self.packed.dtype:  # a caller upcast its activations: follow the weights
            rows = rows.to(self.packed.dtype)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


# A layer bigger than this is timed on a block of its rows and packed a block at a time, so that
# neither holds a second copy of it: Gemma 3's 262k-row output layer is 671 MB in float32, three
# blocks. Each block is a kernel call of its own: on the Xeon, 3 blocks made the layer 1.5-3.6 %
# slower than one packed matrix (a decode step ~1 %), 11 blocks of 64 MB 7-10 %.
BLOCK_BYTES = 256 * 2**20


def _blocks(linear: nn.Linear) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """`linear`'s weight (and bias) as views of consecutive blocks of at most BLOCK_BYTES of rows."""
    weight, bias = linear.weight.detach(), linear.bias
    rows = max(1, BLOCK_BYTES // (weight.shape[1] * weight.element_size()))
    return [
        (weight[i : i + rows], None if bias is None else bias.detach()[i : i + rows])
        for i in range(0, weight.shape[0], rows)
    ]


def _is_big(linear: nn.Linear) -> bool:
    return linear.weight.numel() * linear.weight.element_size() > BLOCK_BYTES


class BlockPackedLinear(nn.Module):
    """A big ``nn.Linear`` packed as blocks of rows, each a ``PackedLinear``; their outputs side by
    side. Packing block by block from a weight that still maps the checkpoint lets each block's
    file pages go as soon as it is packed, so the layer is never in memory twice."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        mapped = _file_mappings()
        blocks = []
        for weight, bias in _blocks(linear):
            blocks.append(PackedLinear(weight=weight, bias=bias))
            _release_file_pages(weight, mapped)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([block(x) for block in self.blocks], dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, blocks={len(self.blocks)}"


class _Rows(nn.Module):
    """A block of a linear layer's rows, computed plain (a view: no copy of the weight)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def packed(linear: nn.Linear) -> nn.Module:
    """`linear` in the packed layout: one ``PackedLinear``, or blocks of rows if it is big."""
    return BlockPackedLinear(linear) if _is_big(linear) else PackedLinear(linear)


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
) -> list[nn.Module | None]:
    """Each layer's packed replacement (``packed``), or None where it stays plain: "packed" packs
    every one, "auto" those whose group of same-shaped layers `packed_speedups` finds more than
    PACK_MARGIN faster packed, for one row and for `batch` rows (each group's figure is logged as
    `what`).

    "auto" times one group at a time, a big layer on its first block of rows, and lets a group's
    trial copies go as soon as it is decided, so a load holds at most one group's trial beside the
    weights, never a second copy of the model."""
    if layout != "auto":
        return [packed(linear) for linear in linears]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, linear in enumerate(linears):
        groups[(linear.in_features, linear.out_features)].append(i)
    out: list[nn.Module | None] = [None] * len(linears)
    mapped = _file_mappings()
    for key, members in groups.items():
        plain = [linears[i] for i in members]
        if _is_big(plain[0]):  # its first block stands for it: same kernel, far beyond any cache
            plain = [_Rows(*_blocks(linear)[0]) for linear in plain]  # type: ignore[misc]
        trial = [PackedLinear(weight=linear.weight, bias=linear.bias) for linear in plain]
        speedup = packed_speedups(plain, trial, batch)[(plain[0].in_features, plain[0].out_features)]
        for linear in plain:
            _release_file_pages(linear.weight, mapped)
        log.info(
            "%s %dx%d: packed %.2fx as fast as plain (1 and %d rows): %s",
            what,
            key[1],
            key[0],
            speedup,
            batch,
            "packing" if speedup > PACK_MARGIN else "leaving plain",
        )
        if speedup > PACK_MARGIN:
            for i, module in zip(members, trial, strict=True):
                out[i] = module if not _is_big(linears[i]) else packed(linears[i])
    return out


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
        expected = _probe(model)
        mapped = _file_mappings()
        for _, _, linear in targets:  # the probe read weights that still map the file: let them go
            _release_file_pages(linear.weight, mapped)
        choice = choose_packed([linear for _, _, linear in targets], layout, batch)
        chosen = [
            (target, module) for target, module in zip(targets, choice, strict=True) if module is not None
        ]
        if not chosen:
            return 0
        targets, modules = [t for t, _ in chosen], [m for _, m in chosen]
        for (parent, name, _), module in zip(targets, modules, strict=True):
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

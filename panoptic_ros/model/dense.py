"""How the dense part of the network runs: eagerly, as replayed CUDA graphs, or compiled.

The dense part (backbone, 2-way FPN, semantic head: :meth:`EfficientPS.features`)
is most of the network's time and has static shapes for a given batch and input
size, which is what CUDA graphs need: launching a captured graph costs one call
instead of hundreds of kernel launches, the overhead that dominates small
batches on a fast GPU. The instance head's proposal and RoI stages run eagerly
after it (on CUDA as fixed-shape tensors, :mod:`panoptic_ros.model.static_heads`,
which would make them capturable too; not done yet).

Modes (``ModelParams.dense_mode``):

- ``eager``: plain PyTorch.
- ``cuda_graph``: one graph per (batch, height, width, precision), captured on
  first use after warm-up on a side stream, replayed from a static input buffer.
  The first replay of every new graph is checked against the eager result; a
  graph that cannot be captured or disagrees is dropped and that shape runs
  eagerly from then on (``DenseRunner.fallback_reason`` says why), so a driver
  or kernel quirk costs speed, never correctness.
- ``compile``: ``torch.compile`` of the dense part (inductor's default mode, without
  its own CUDA graphs, so that both can be compared).
- ``auto``: ``cuda_graph`` on CUDA, ``eager`` elsewhere.

The outputs of a replayed graph live in the graph's static buffers and are
overwritten by the next replay of the same shape: callers consume them before
running the next batch (the predictor fuses each batch before it returns).
"""
from __future__ import annotations

import torch

from panoptic_ros.model.graphs import GraphedFunction

DENSE_MODES = ("auto", "eager", "cuda_graph", "compile")

# First-replay check of a captured graph against eager: max |difference| allowed, relative to the eager
# logits' range. Replays are bit-exact in practice; the slack is for kernels whose choice depends on
# workspace availability during capture.
GRAPH_CHECK_TOLERANCE = 1e-2


def resolve_dense_mode(mode: str, device: torch.device) -> str:
    if mode not in DENSE_MODES:
        raise ValueError(f"dense_mode must be one of {', '.join(DENSE_MODES)}, got {mode!r}")
    if mode == "auto":
        return "cuda_graph" if device.type == "cuda" else "eager"
    if mode == "cuda_graph" and device.type != "cuda":
        raise ValueError(f"dense_mode 'cuda_graph' needs a CUDA device, the model is on {device}; use 'auto' or "
                         "'eager'")
    return mode


class DenseRunner:
    """Runs ``model.features`` (normalised images -> (FPN maps, semantic logits)) in the chosen mode."""

    def __init__(self, model: torch.nn.Module, mode: str, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.mode = resolve_dense_mode(mode, device)
        # One graph per (input shape, autocast dtype); the first replay of each is checked against eager.
        self._graphed = GraphedFunction(self._graph_features, tolerance=GRAPH_CHECK_TOLERANCE, warmup=3)
        self._graph_dtype = torch.float32
        self._compiled = None
        if self.mode == "compile":
            # Inductor's default mode: fused pointwise kernels, library convolutions. (max-autotune would also
            # tune the convolutions, at many minutes per input shape: too slow a first call for a node.)
            self._compiled = torch.compile(model.features, dynamic=False)

    def __call__(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor]:
        autocast = dtype != torch.float32
        if self.mode == "cuda_graph":
            return self._graph_call(x, dtype)
        fn = self._compiled if self.mode == "compile" else self.model.features
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=autocast):
            return fn(x)

    def moved_to(self, device: torch.device) -> None:
        """The model moved (fallback device): graphs belong to the old device and are dropped."""
        self._graphed.clear()
        self.device = device
        if self.mode == "cuda_graph" and device.type != "cuda":
            self.mode = "eager"
        if self.mode == "compile":
            self._compiled = torch.compile(self.model.features, dynamic=False)

    # ------------------------------------------------------------------ CUDA graphs

    def _graph_call(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor]:
        self._graph_dtype = dtype
        *p, sem = self._graphed((x,), key=(dtype,))
        return list(p), sem

    def _graph_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dtype = self._graph_dtype  # (no autocast weight cache: cached casts would live outside the graph)
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
            p, sem = self.model.features(x)
        return (*p, sem)

    @property
    def fallback_reason(self) -> str | None:
        """Why a shape runs eagerly (capture failed or its first replay disagreed with eager); None if none."""
        return self._graphed.fallback_reason

    @property
    def captured_graphs(self) -> int:
        """How many input shapes run as replayed graphs (shapes whose capture or check failed not counted)."""
        return self._graphed.captured_graphs

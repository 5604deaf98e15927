"""A function of tensors replayed as CUDA graphs, one per input signature, checked and with an eager fallback.

Used for the dense part (:class:`~panoptic_ros.model.dense.DenseRunner`) and,
experimentally, for the predictor's static detections + batched fusion + id-map
resizing (everything between the dense part and the copies to the host): any
function whose work is fixed by the shapes of its inputs. The
first call with a new signature warms the function up on a side stream,
captures it, replays it and compares the replay with an eager call (floats
within ``tolerance`` of their range, integers equal on all but ``1e-3`` of
their elements); a capture error or a disagreement sends that signature to
eager mode for good (``fallback_reason`` says why). Outputs of a replay live in
the graph's buffers until the next replay of the same signature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: tuple[torch.Tensor, ...]
    static_out: tuple[torch.Tensor, ...]


class GraphedFunction:
    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], tolerance: float = 1e-2,
                 max_graphs: int = 16, warmup: int = 2) -> None:
        self.fn = fn
        self.tolerance = tolerance
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.fallback_reason: str | None = None
        self._graphs: dict[tuple, _Captured | None] = {}

    @property
    def captured_graphs(self) -> int:
        return sum(g is not None for g in self._graphs.values())

    def clear(self) -> None:
        """Forget every graph (what the function computes changed, e.g. a threshold baked into it)."""
        self._graphs.clear()

    def __call__(self, inputs: Sequence[torch.Tensor], key: tuple = ()) -> tuple[torch.Tensor, ...]:
        inputs = tuple(inputs)
        if not inputs or inputs[0].device.type != "cuda":
            return tuple(self.fn(*inputs))
        signature = (key, tuple((tuple(t.shape), t.dtype, t.stride()) for t in inputs))
        first = signature not in self._graphs
        if first:
            if len(self._graphs) >= self.max_graphs:
                self._graphs.clear()
            self._graphs[signature] = self._capture(inputs)
        g = self._graphs[signature]
        if g is None:
            return tuple(self.fn(*inputs))
        for s, t in zip(g.static_in, inputs):
            s.copy_(t)
        g.graph.replay()
        if first and not self._agrees(g, inputs):
            self._graphs[signature] = None
            return tuple(self.fn(*inputs))
        return g.static_out

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> _Captured | None:
        device = inputs[0].device
        try:
            static_in = tuple(t.clone() for t in inputs)  # same strides (channels-last stays channels-last)
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                # Warm-up: cuDNN autotuning, allocator pools and lazily built tables (anchors, resize grids)
                # settle before the capture.
                for _ in range(self.warmup):
                    self.fn(*static_in)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = tuple(self.fn(*static_in))
            return _Captured(graph, static_in, out)
        except RuntimeError as exc:  # capture unsupported for something inside (CudaError is a RuntimeError)
            self.fallback_reason = f"CUDA graph capture failed: {str(exc).splitlines()[0][:300]}"
            return None

    def _agrees(self, g: _Captured, inputs: tuple[torch.Tensor, ...]) -> bool:
        ref = tuple(self.fn(*inputs))
        if len(ref) != len(g.static_out):
            self.fallback_reason = "CUDA graph returned another number of outputs than eager"
            return False
        for i, (a, b) in enumerate(zip(g.static_out, ref)):
            if a.shape != b.shape or a.dtype != b.dtype:
                self.fallback_reason = f"CUDA graph output {i} is {a.dtype} {tuple(a.shape)}, eager's " \
                                       f"{b.dtype} {tuple(b.shape)}"
                return False
            if a.numel() == 0:
                continue
            if a.is_floating_point():
                scale = float(b.float().abs().max()) or 1.0
                bad = not float((a.float() - b.float()).abs().max()) <= self.tolerance * scale
            else:
                bad = float((a != b).float().mean()) > 1e-3
            if bad:
                self.fallback_reason = f"CUDA graph output {i} disagreed with eager; running eagerly"
                return False
        return True

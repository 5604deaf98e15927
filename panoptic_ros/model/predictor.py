"""The one inference API: a batch of HxWx3 uint8 RGB frames in, typed panoptic results out.

Everything else (the ROS node, replay, evaluation, the demo, benchmarks)
calls :class:`Predictor`. It uploads the frames as uint8 (pinned memory on
CUDA), resizes and normalises on the device, runs the network under
autocast (fp16/bf16 on CUDA) and fuses each image with EfficientPS's fusion.
Fusion runs on the frame's pixel grid when the frame has no more pixels than
the network input (the semantic logits resized bilinearly, the boxes scaled:
a 320x640 network on 256x512 frames), else on the network's grid, the two id
maps then enlarged once to the frame's size (so the work stays bounded by the
network's size however large the camera's frames are).

On CUDA everything after the RoI heads stays on the device until one
synchronisation per batch: the batched fusion (:func:`panoptic_fusion_batch`,
no per-instance decisions on the host), the upsampling, the boxes and areas
of the fused masks; then every result tensor is copied to the host without
blocking and the stream is synchronised once. (The RPN's and RoI heads'
NMS and score filtering inside torchvision still synchronise on their own.)
"""
from __future__ import annotations

import math
import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_ros.classes import ClassTable
from panoptic_ros.model.checkpoint import ModelCard, load_model
from panoptic_ros.model.dense import DenseRunner
from panoptic_ros.model.efficientps import EfficientPS
from panoptic_ros.model.fusion import pad_instances, panoptic_fusion, panoptic_fusion_batch
from panoptic_ros.model.graphs import GraphedFunction
from panoptic_ros.model.instance_head import Detections
from panoptic_ros.model.static_heads import StaticDetections, StaticInstanceInference
from panoptic_ros.panoptic import PanopticResult

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FUSION_MODES = ("auto", "per_instance", "batch")
DETECTION_MODES = ("auto", "dynamic", "static")


@dataclass(frozen=True)
class FusionSettings:
    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    min_stuff_area: int = 64


def resolve_device(name: str) -> torch.device:
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name in ("", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {name!r}")
    return PRECISIONS[name]


@dataclass
class _Fused:
    class_map: torch.Tensor  # uint8 (H, W) on the fusion grid (Predictor.fusion_grid)
    instance_map: torch.Tensor  # int32 (H, W): output ids 1..k
    rank: torch.Tensor  # int64 (N,): output id of each detection, 0 if it did not survive (on the device)


class Predictor:
    def __init__(self, model: EfficientPS, card: ModelCard, device: str | torch.device = "auto",
                 precision: str = "auto", fusion: FusionSettings = FusionSettings(),
                 max_detections: int | None = None, rpn_post_nms_top_n: int | None = None,
                 input_size: tuple[int, int] | None = None, channels_last: bool | None = None,
                 dense_mode: str = "eager", fusion_mode: str = "auto", detection_mode: str = "auto",
                 sparse_graph: bool = False, test_time_flip: bool = False) -> None:
        """``channels_last``: NHWC activations (None = on: convolutions are faster that way on CUDA, and on the
        development CPU too, 192 -> 157 ms per 256x512 frame on one core, identical output);
        ``dense_mode``: how the dense part runs (:mod:`panoptic_ros.model.dense`); ``fusion_mode``:
        per_instance (box-sized work per instance, decided on the host: fastest on a CPU), batch (all
        images and instances at once on the device, no host synchronisation) or auto (batch on CUDA);
        ``detection_mode``: dynamic (torchvision's RPN/RoI heads), static (fixed shapes, no host
        synchronisation: :mod:`panoptic_ros.model.static_heads`) or auto (static on CUDA); ``sparse_graph``
        (CUDA with static detections and batched fusion; experimental, off until measured): everything
        between the dense part and the host copies replayed as CUDA graphs (:mod:`panoptic_ros.model.graphs`);
        ``test_time_flip``: the dense part also sees each frame mirrored, in the same batch, and the stuff
        classes' semantic logits are averaged over the two views (:func:`flip_average_stuff`)."""
        if fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode must be one of {', '.join(FUSION_MODES)}, got {fusion_mode!r}")
        if detection_mode not in DETECTION_MODES:
            raise ValueError(f"detection_mode must be one of {', '.join(DETECTION_MODES)}, got {detection_mode!r}")
        self.fusion_mode = fusion_mode
        self.detection_mode = detection_mode
        self.device = resolve_device(str(device))
        if channels_last is None:
            channels_last = True
        self.channels_last = channels_last
        self.dtype = resolve_precision(precision, self.device)
        self.card = card
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dense = DenseRunner(self.model, dense_mode, self.device)
        self.static = StaticInstanceInference(self.model.instance_head)
        self.sparse_graph = GraphedFunction(self._sparse_outputs) if sparse_graph else None
        self._graph_sizes: list[tuple[int, int]] = []
        self.fusion = fusion
        self._box_score_thresh = float(self.model.instance_head.roi_heads.score_thresh)
        cfg = card.config
        self.input_size = input_size or (cfg.input_height, cfg.input_width)
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise ValueError(f"input size must be a multiple of 32, got {self.input_size}")
        heads = self.model.instance_head
        if max_detections is not None:
            heads.roi_heads.detections_per_img = int(max_detections)
        if rpn_post_nms_top_n is not None:
            heads.rpn._post_nms_top_n["testing"] = int(rpn_post_nms_top_n)
        self._thing_ids = list(cfg.classes.thing_ids)
        self._stuff_ids = list(cfg.classes.stuff_ids)
        self._thing_lut = torch.tensor(self._thing_ids, dtype=torch.long, device=self.device)
        self._stuff_lut = torch.tensor(self._stuff_ids, dtype=torch.long, device=self.device)
        self.test_time_flip = test_time_flip
        self._grids: dict[tuple, NearestGrid] = {}  # (network size, frame size) -> id-map resizing
        self._apply_score_threshold()

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto", expected_classes: ClassTable | None = None,
                  **kwargs) -> "Predictor":
        model, card = load_model(path, expected_classes=expected_classes, device="cpu")
        return cls(model, card, device=device, **kwargs)

    @property
    def classes(self) -> ClassTable:
        return self.card.config.classes

    def with_fusion(self, **changes) -> None:
        self.fusion = replace(self.fusion, **changes)
        self._apply_score_threshold()

    def _apply_score_threshold(self) -> None:
        """The RoI heads drop what fusion would drop anyway (score below its threshold) before the mask head.

        Lossless: NMS is greedy by score, so a low-scored box never suppresses a better one, and the
        best ``max_detections`` above the threshold are the same; the mask and embedding heads then run
        on fewer boxes. torchvision keeps scores strictly above its threshold, fusion keeps scores at or
        above its own, hence the next float below.
        """
        below = math.nextafter(float(self.fusion.score_threshold), -math.inf)
        self.model.instance_head.roi_heads.score_thresh = max(self._box_score_thresh, below)

    @property
    def static_detections(self) -> bool:
        return self.detection_mode == "static" or (self.detection_mode == "auto" and self.device.type == "cuda")

    @property
    def batch_fusion(self) -> bool:
        return self.fusion_mode == "batch" or (self.fusion_mode == "auto" and self.device.type == "cuda")

    def to_device(self, device: str | torch.device) -> None:
        """Move the model (the pipeline's fallback after the GPU failed). fp16 becomes fp32 on the CPU,
        where half-precision autocast is slow or missing; bf16 and fp32 stay."""
        dev = resolve_device(str(device))
        self.model.to(dev)
        self._thing_lut = self._thing_lut.to(dev)
        self._stuff_lut = self._stuff_lut.to(dev)
        self.dense.moved_to(dev)
        if dev.type == "cpu" and self.dtype == torch.float16:
            self.dtype = torch.float32
        self.device = dev

    def release_cached_memory(self) -> None:
        """Hand cached blocks back to the device after an out-of-memory error, so a smaller retry can fit."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def predict(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[PanopticResult]:
        """frames: HxWx3 uint8 RGB images (sizes may differ) -> one PanopticResult each, at each frame's size."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        for i, f in enumerate(frames):
            if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
                    and f.shape[0] > 0 and f.shape[1] > 0):
                raise ValueError(f"frame {i} must be an HxWx3 uint8 RGB array, got "
                                 f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
        if not len(frames):
            return []
        t0 = time.perf_counter()
        h, w = self.input_size
        x = self._network_input(frames)
        t1 = time.perf_counter()
        p, sem_logits = self.dense_outputs(x)
        sizes = [tuple(f.shape[:2]) for f in frames]
        if (self.sparse_graph is not None and self.device.type == "cuda" and self.static_detections
                and self.batch_fusion):
            self._graph_sizes = sizes
            flat = self.sparse_graph((*p, sem_logits), key=(tuple(sizes), astuple(self.fusion), self.dtype))
            t2 = time.perf_counter()
            results = self._to_host([flat[i * 8:(i + 1) * 8] for i in range(len(frames))])
            return self._timed(results, t0, t1, t2)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            if self.static_detections:
                static = self.static.detections(p, (h, w))
            else:
                raw = self.model.predict_from_features(p, sem_logits)
        t2 = time.perf_counter()
        if self.static_detections and self.batch_fusion:
            fused = self._fuse_static(sem_logits, static, sizes)
            dets = static.per_image()
        else:
            dets = static.compacted() if self.static_detections else raw.detections
            if self.batch_fusion:
                fused = self._fuse_batch(sem_logits, dets, sizes)
            else:
                fused = [self._fuse_one(sem_logits[i:i + 1], det, out_hw)
                         for i, (det, out_hw) in enumerate(zip(dets, sizes))]
        results = self._collect(fused, dets, sizes)
        return self._timed(results, t0, t1, t2)

    def _network_input(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 frames -> the normalised (B, 3, h, w) network input on the device (uploaded as uint8,
        pinned on CUDA, resized bilinearly to the input size)."""
        h, w = self.input_size
        batch = []
        for f in frames:
            t = torch.from_numpy(np.ascontiguousarray(f))
            if self.device.type == "cuda":
                t = t.pin_memory().to(self.device, non_blocking=True)
            t = t.permute(2, 0, 1)[None].float()
            if t.shape[-2:] != (h, w):
                t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
            batch.append(t)
        x = self.model.normalize(torch.cat(batch))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def fusion_inputs(self, frame: np.ndarray) -> tuple[torch.Tensor, Detections, float]:
        """One frame's network outputs as fusion receives them, for tools that re-run only the fusion
        (``tools/tune_fusion.py``): the semantic logits (C, H, W) and the detections, boxes included, on the
        frame's fusion grid, and that grid's pixels per network-input pixel (``min_stuff_area`` counts the
        latter: :func:`grid_min_stuff_area`). Detections as the dynamic (CPU) heads give them."""
        with torch.no_grad():
            p, sem = self.dense_outputs(self._network_input([frame]))
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                det = self.model.predict_from_features(p, sem).detections[0]
        logits, boxes, area_scale = self._on_grid(sem, det.boxes, self.fusion_grid(frame.shape[:2]))
        return logits[0], replace(det, boxes=boxes), area_scale

    def dense_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised (B, 3, H, W) images -> (FPN maps, semantic logits), with the test-time flip if it is on.

        The flip runs the dense part once on a batch of 2B (the images, then their mirrors), so a CUDA graph
        covers both views; the instance head sees only the unmirrored maps.
        """
        if not self.test_time_flip:
            return self.dense(x, self.dtype)
        b = x.shape[0]
        both = torch.cat([x, x.flip(-1)])
        if self.channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        p, sem = self.dense(both, self.dtype)
        return [t[:b] for t in p], flip_average_stuff(sem, b, self._stuff_lut)

    @staticmethod
    def _timed(results: list[PanopticResult], t0: float, t1: float, t2: float) -> list[PanopticResult]:
        t3 = time.perf_counter()
        n = len(results)
        for r in results:
            r.timings_ms.update(preprocess=(t1 - t0) * 1e3 / n, network=(t2 - t1) * 1e3 / n,
                                fusion=(t3 - t2) * 1e3 / n)
        return results

    def _sparse_outputs(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Static detections + batched fusion + resizing for FPN maps and semantic logits, as one flat tuple
        (8 tensors per image, see :meth:`_device_outputs`): the function the sparse CUDA graph captures."""
        *p, sem_logits = tensors
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32,
                            cache_enabled=False):
            static = self.static.detections(list(p), self.input_size)
        groups = self._device_outputs(self._fuse_static(sem_logits, static, self._graph_sizes), static.per_image(),
                                      self._graph_sizes)
        return tuple(t for g in groups for t in g)

    def _resize_grid(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> "NearestGrid":
        key = (in_hw, out_hw)
        grid = self._grids.get(key)
        if grid is None or grid.rows.device != self.device:
            if len(self._grids) > 16:  # a stream of odd frame sizes must not grow this without bound
                self._grids.clear()
            grid = self._grids[key] = NearestGrid(in_hw, out_hw, self.device)
        return grid

    def fusion_grid(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """The pixel grid a frame of ``frame_hw`` is fused on: its own when it has no more pixels than the
        network input, else the network input's (see the module's docstring)."""
        h, w = self.input_size
        return tuple(frame_hw) if frame_hw[0] * frame_hw[1] <= h * w else (h, w)

    @staticmethod
    def _on_grid(semantic_logits: torch.Tensor, boxes: torch.Tensor,
                 grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(B, C, h, w) logits and (..., 4) boxes of the network's grid -> the same on ``grid_hw``, and the
        grid's pixels per network pixel."""
        ih, iw = semantic_logits.shape[-2:]
        oh, ow = grid_hw
        logits, boxes = semantic_logits.float(), boxes.float()
        if (oh, ow) == (ih, iw):
            return logits, boxes, 1.0
        logits = F.interpolate(logits, size=(oh, ow), mode="bilinear", align_corners=False)
        return logits, boxes * boxes.new_tensor([ow / iw, oh / ih, ow / iw, oh / ih]), oh * ow / (ih * iw)

    def _fusion_kwargs(self, area_scale: float) -> dict:
        f = self.fusion
        return dict(thing_ids=self._thing_lut, stuff_ids=self._stuff_lut, score_threshold=f.score_threshold,
                    overlap_threshold=f.overlap_threshold,
                    min_stuff_area=grid_min_stuff_area(f.min_stuff_area, area_scale))

    def _fuse_one(self, semantic_logits: torch.Tensor, det, frame_hw: tuple[int, int]) -> _Fused:
        """One image: ``semantic_logits`` (1, C, h, w), a slice of the batch (so it keeps the batch's channels-last
        layout, which the per-instance crops read fastest; an unsqueezed (C, h, w) would not)."""
        logits, boxes, area_scale = self._on_grid(semantic_logits, det.boxes, self.fusion_grid(frame_hw))
        out = panoptic_fusion(logits[0], boxes, self._thing_lut[det.labels - 1], det.scores.float(),
                              det.mask_logits.float(), **self._fusion_kwargs(area_scale))
        rank = torch.zeros(len(det.scores), dtype=torch.long, device=self.device)
        rank[out.keep] = torch.arange(1, len(out.keep) + 1, device=self.device)
        return _Fused(out.class_map, out.instance_map, rank)

    def _by_grid(self, sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], list[int]]]:
        """The batch's images grouped by the grid they are fused on, in order of first appearance."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, hw in enumerate(sizes):
            groups.setdefault(self.fusion_grid(hw), []).append(i)
        return list(groups.items())

    def _fuse_static(self, semantic_logits: torch.Tensor, det: StaticDetections,
                     sizes: list[tuple[int, int]]) -> list[_Fused]:
        return self._fuse_padded(semantic_logits, det.boxes, det.labels, det.scores, det.mask_logits, det.valid,
                                 sizes)

    def _fuse_batch(self, semantic_logits: torch.Tensor, dets: list, sizes: list[tuple[int, int]]) -> list[_Fused]:
        valid = [torch.ones(len(d.scores), dtype=torch.bool, device=self.device) for d in dets]
        return self._fuse_padded(
            semantic_logits, pad_instances([d.boxes.float() for d in dets]), pad_instances([d.labels for d in dets], 1),
            pad_instances([d.scores.float() for d in dets]), pad_instances([d.mask_logits.float() for d in dets]),
            pad_instances(valid, False), sizes, counts=[len(d.scores) for d in dets])

    def _fuse_padded(self, semantic_logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                     scores: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor,
                     sizes: list[tuple[int, int]], counts: list[int] | None = None) -> list[_Fused]:
        """Batched fusion of detections padded to (B, N, ...), in groups of the images that share a fusion
        grid; ``counts``: each image's real detections, to cut its rank to (all N slots when None)."""
        fused: list[_Fused | None] = [None] * len(sizes)
        for grid_hw, idx in self._by_grid(sizes):
            logits, grid_boxes, area_scale = self._on_grid(_rows(semantic_logits, idx), _rows(boxes, idx), grid_hw)
            out = panoptic_fusion_batch(logits, grid_boxes, self._thing_lut[_rows(labels, idx) - 1],
                                        _rows(scores, idx), _rows(mask_logits, idx), _rows(valid, idx),
                                        **self._fusion_kwargs(area_scale))
            for j, i in enumerate(idx):
                rank = out.rank[j] if counts is None else out.rank[j, :counts[i]]
                fused[i] = _Fused(out.class_map[j], out.instance_map[j], rank)
        return fused

    def _collect(self, fused: list[_Fused], dets: list, sizes: list[tuple[int, int]]) -> list[PanopticResult]:
        """Upsample, box and count on the device, then copy everything to the host with one synchronisation."""
        return self._to_host(self._device_outputs(fused, dets, sizes))

    def _device_outputs(self, fused: list[_Fused], dets: list, sizes: list[tuple[int, int]]) -> list[tuple]:
        """Per image: class map, instance map, boxes, areas (at the frame's size), rank, classes, scores, embeddings."""
        device_side = []
        for f, det, out_hw in zip(fused, dets, sizes):
            n = len(f.rank)  # output ids are 1..k with k <= n; what k is, the host learns after the copy
            grid = self._resize_grid(tuple(f.class_map.shape), tuple(out_hw))
            class_map, instance_map = grid.resize(f.class_map), grid.resize(f.instance_map)
            boxes, areas = grid.boxes_and_areas(f.instance_map, instance_map, n)
            device_side.append((class_map, instance_map, boxes, areas, f.rank, self._thing_lut[det.labels - 1],
                                det.scores.float(), det.embeddings.float()))
        return device_side

    def _to_host(self, device_side: list[tuple]) -> list[PanopticResult]:
        host = [[t.to("cpu", non_blocking=True) for t in group] for group in device_side]
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the batch's one host synchronisation
        results = []
        for class_map, instance_map, boxes, areas, rank, classes, scores, embeddings in host:
            rank = rank.numpy()
            order = np.argsort(rank, kind="stable")
            order = order[rank[order] > 0]  # input index of output id 1, 2, ...
            k = len(order)
            results.append(PanopticResult(
                class_map=class_map.numpy(), instance_map=instance_map.numpy(),
                classes=classes.numpy()[order].astype(np.int64), scores=scores.numpy()[order],
                boxes_xyxy=boxes.numpy()[:k], embeddings=embeddings.numpy()[order],
                areas_px=areas.numpy()[:k].astype(np.int64)))
        return results


def grid_min_stuff_area(min_stuff_area: int, area_scale: float) -> int:
    """``min_stuff_area`` (network-input pixels) in pixels of a fusion grid with ``area_scale`` of them per
    network-input pixel."""
    return int(round(min_stuff_area * area_scale))


def _rows(t: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """``t[idx]`` along the batch dimension, as views and a concatenation (no index tensor is uploaded, so
    this is safe inside a CUDA graph capture); ``t`` itself when ``idx`` is the whole batch."""
    if idx == list(range(t.shape[0])):
        return t
    return torch.cat([t[i:i + 1] for i in idx])


def flip_average_stuff(semantic_logits: torch.Tensor, batch: int, stuff_ids: torch.Tensor) -> torch.Tensor:
    """(2B, C, H, W) logits of B images followed by their mirrors -> (B, C, H, W): the stuff channels averaged
    with the mirrored view's (mirrored back), the thing channels those of the unmirrored view.

    Thing channels are left alone because fusion pairs them with the instance head's masks, which come from
    the unmirrored view only; averaging them too cost thing PQ on the validation frames (docs/PERFORMANCE.md).
    """
    plain, mirrored = semantic_logits[:batch], semantic_logits[batch:].flip(-1)
    stuff = torch.zeros(semantic_logits.shape[1], dtype=torch.bool, device=semantic_logits.device)
    stuff[stuff_ids.to(semantic_logits.device)] = True
    return torch.where(stuff[None, :, None, None], (plain + mirrored) * 0.5, plain)


class NearestGrid:
    """Nearest-neighbour resizing of id maps from the network's size to a frame's, as index look-ups.

    The indices are PyTorch's ``nearest-exact`` rule (source = floor((destination + 0.5) x in / out), in
    float32: pixel centres aligned), so the maps equal ``F.interpolate(..., mode="nearest-exact")``'s without
    the round trip through float. (The legacy ``nearest`` rule, floor(destination x in / out), shifts
    boundaries towards the top left by up to one source pixel at non-integer ratios, e.g. a 320x640 network
    output resized to a 256x512 frame; at integer enlargements the two rules agree.)
    When the frame is at least as large as the network input (every source row and column is used),
    the boxes and areas of the resized instance map follow from the small map: each source pixel
    stands for a known block of frame pixels. Built once per pair of sizes, on the device.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> None:
        self.in_hw, self.out_hw = in_hw, out_hw
        self.identity = in_hw == out_hw
        rows, cols = (_nearest_index(i, o) for i, o in zip(in_hw, out_hw))  # built on the CPU, then moved
        self.rows, self.cols = rows.to(device), cols.to(device)
        self.upsampling = out_hw[0] >= in_hw[0] and out_hw[1] >= in_hw[1]
        if self.upsampling:
            rm = torch.bincount(rows, minlength=in_hw[0])  # frame rows per source row (>= 1)
            cm = torch.bincount(cols, minlength=in_hw[1])
            self.weights = (rm[:, None] * cm[None, :]).flatten().to(device)
            self.row_start, self.row_count = (torch.cumsum(rm, 0) - rm).to(device), rm.to(device)
            self.col_start, self.col_count = (torch.cumsum(cm, 0) - cm).to(device), cm.to(device)

    def resize(self, id_map: torch.Tensor) -> torch.Tensor:
        return id_map if self.identity else id_map.index_select(0, self.rows).index_select(1, self.cols)

    def boxes_and_areas(self, small: torch.Tensor, resized: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 4) float xyxy boxes and (n,) int64 pixel counts of ids 1..n of ``resized`` (= resize(small))."""
        if not self.upsampling:
            ids = resized.long().flatten()
            areas = torch.zeros(n + 1, dtype=torch.long, device=ids.device).scatter_add_(0, ids, torch.ones_like(ids))
            return masks_to_boxes(resized, n), areas[1:]
        ids = small.long().flatten()
        areas = torch.zeros(n + 1, dtype=torch.long, device=ids.device).scatter_add_(0, ids, self.weights)[1:]
        if n == 0:
            return torch.zeros((0, 4), dtype=torch.float32, device=ids.device), areas
        x1, y1, x2, y2 = masks_to_boxes(small, n).long().unbind(1)  # ids without pixels: garbage, sliced off later
        h, w = self.in_hw
        x1, x2 = x1.clamp(0, w - 1), (x2 - 1).clamp(0, w - 1)
        y1, y2 = y1.clamp(0, h - 1), (y2 - 1).clamp(0, h - 1)
        boxes = torch.stack([self.col_start[x1], self.row_start[y1], self.col_start[x2] + self.col_count[x2],
                             self.row_start[y2] + self.row_count[y2]], dim=1)
        return boxes.float(), areas


def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    if n_in == n_out:
        return torch.arange(n_out)
    return ((torch.arange(n_out, dtype=torch.float32) + 0.5) * (n_in / n_out)).floor().long().clamp(max=n_in - 1)


def masks_to_boxes(instance_map: torch.Tensor, k: int) -> torch.Tensor:
    """(H, W) ids 1..k -> (k, 4) float xyxy boxes of each id's pixels (x2/y2 exclusive)."""
    if k == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=instance_map.device)
    h, w = instance_map.shape
    ids = instance_map.long().flatten()
    ys = torch.arange(h, device=ids.device).repeat_interleave(w)
    xs = torch.arange(w, device=ids.device).repeat(h)
    big = torch.full((k + 1,), h + w, device=ids.device, dtype=torch.long)
    small = torch.full((k + 1,), -1, device=ids.device, dtype=torch.long)
    x1 = big.scatter_reduce(0, ids, xs, "amin")
    y1 = big.clone().scatter_reduce(0, ids, ys, "amin")
    x2 = small.scatter_reduce(0, ids, xs, "amax")
    y2 = small.clone().scatter_reduce(0, ids, ys, "amax")
    return torch.stack([x1, y1, x2 + 1, y2 + 1], dim=1)[1:].float()

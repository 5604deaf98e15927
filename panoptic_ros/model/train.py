"""``panoptic-ros train``: train the panoptic model, resumably, with a progress bar and loss curves.

Data: the synthetic generator (``--data synth``, frames rendered on the fly
from training seeds, so the model never sees a held-out seed) or a dataset
directory in any layout ``panoptic_ros.datasets.loader`` reads (Cityscapes
panoptic, COCO panoptic, video panoptic). Each step takes pairs of frames
from one sequence (or one image twice for still datasets) because the
appearance-embedding loss contrasts the same objects across frames.

Everything that must survive an interruption lives in ``OUT/train_state``
(safetensors + JSON); re-running the same command resumes from there.

On a machine with many cores and a GPU, rendering frames in the training
process starves the GPU: ``--data-workers N`` renders them in N processes.
The data of step i then depends only on the seed and i (not on the number of
workers, nor on where a run was resumed). Building a synthetic world costs
several times more than rendering a frame of it, so under these workers the
steps come in chunks of ``CHUNK_STEPS`` that draw their pairs from a pool of
worlds (one per ``PAIRS_PER_WORLD`` pairs of the chunk), each world built
once per chunk. ``--time-budget-s T`` makes the
learning-rate schedule run over T seconds of training instead of ``--steps``
and stops there (at ``--steps`` at the latest), so a run fits a fixed slot
on a lent machine and still ends its schedule.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shlex
import sys
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from panoptic_ros.argtypes import MAX_SIZE_PX, MIN_SIZE_PX, parse_size
from panoptic_ros.datasets.types import PanopticFrame
from panoptic_ros.model.checkpoint import (CheckpointError, ModelCard, check_safetensors_file, load_training_state,
                                           save_model, save_training_state)
from panoptic_ros.model.config import PRESETS, ModelConfig
from panoptic_ros.model.efficientps import EfficientPS, build_model
from panoptic_ros.model.targets import frame_to_sample


@dataclass
class TrainSettings:
    out: str
    preset: str = "demo"
    data: str = "synth"
    steps: int = 4000
    pairs_per_step: int = 1  # each pair is two images
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 5.0
    ema_decay: float = 0.999  # exported weights are this exponential moving average of the trained ones; 0 = off
    seed: int = 0
    train_seed_start: int = 0
    train_sequences: int = 5000
    frames_per_sequence: int = 80
    max_frame_gap: int = 8
    eval_seed_start: int = 100_000
    eval_sequences: int = 20  # the card's held-out PQ: frames 0, s, 2s, ... (s = eval_frame_stride) of each sequence;
    eval_frames: int = 10  # the defaults are docs/PERFORMANCE.md's 200 held-out frames
    eval_frame_stride: int = 1
    eval_every: int = 0  # steps; 0 = only at the end
    checkpoint_every: int = 50
    device: str = "auto"
    amp: bool = True  # autocast on CUDA
    threads: int = 0  # torch CPU threads; 0 = torch's default
    channels_last: bool = True  # NHWC activations: measured 15% faster steps on the development CPU
    min_instance_area: int = 16
    init: str = ""  # start from these weights (a model .safetensors with its card), e.g. to continue a shipped model
    data_workers: int = 0  # processes rendering synthetic frames; > 0: step-keyed sampling (see the module doc)
    time_budget_s: float = 0.0  # > 0: the schedule runs over this much training time, which ends the run
    semantic_class_weights: dict = field(default_factory=dict)  # class name -> semantic loss weight (others 1)
    render_size: list = field(default_factory=list)  # [H, W] synthetic frames are rendered at; [] = the input size
    overrides: dict = field(default_factory=dict)  # ModelConfig overrides


def render_hw(s: TrainSettings, cfg: ModelConfig) -> tuple[int, int]:
    """(H, W) of the synthetic frames: ``--render-size``, else the network input (the predictor resizes
    frames of any other size to the input, and training does the same: ``frame_to_sample``)."""
    if s.render_size:
        return int(s.render_size[0]), int(s.render_size[1])
    return cfg.input_height, cfg.input_width


class PairSource(Protocol):
    def sample(self, rng: random.Random) -> tuple[PanopticFrame, PanopticFrame]: ...

    def describe(self) -> dict: ...


class SyntheticPairs:
    """Two frames of one synthetic training sequence, up to ``max_gap`` frames apart."""

    def __init__(self, cfg: ModelConfig, settings: TrainSettings, cache_size: int = 8) -> None:
        from panoptic_ros.synth import SynthConfig, SyntheticSequence

        self._sequence_cls = SyntheticSequence
        h, w = render_hw(settings, cfg)
        self.synth_config = SynthConfig(height=h, width=w)
        self.s = settings
        self.cache_size = cache_size
        self._cache: OrderedDict[int, object] = OrderedDict()

    def _sequence(self, seed: int):
        if seed not in self._cache:
            self._cache[seed] = self._sequence_cls(seed=seed, num_frames=self.s.frames_per_sequence,
                                                   config=self.synth_config)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(seed)
        return self._cache[seed]

    def sample(self, rng: random.Random) -> tuple[PanopticFrame, PanopticFrame]:
        return self.pair(self.s.train_seed_start + rng.randrange(self.s.train_sequences), rng)

    def pair(self, seed: int, rng: random.Random) -> tuple[PanopticFrame, PanopticFrame]:
        """Two frames of training sequence ``seed``, up to ``max_frame_gap`` apart."""
        seq = self._sequence(seed)
        n = self.s.frames_per_sequence
        a = rng.randrange(n)
        b = min(n - 1, max(0, a + rng.randint(-self.s.max_frame_gap, self.s.max_frame_gap)))
        return seq.render(a), seq.render(b)

    def describe(self) -> dict:
        return {"source": "synthetic", "train_seeds": [self.s.train_seed_start,
                                                       self.s.train_seed_start + self.s.train_sequences - 1],
                "frames_per_sequence": self.s.frames_per_sequence, "max_frame_gap": self.s.max_frame_gap,
                "synth_config": {k: v for k, v in asdict(self.synth_config).items()
                                 if isinstance(v, (int, float, str, bool))}}


class DatasetPairs:
    """Pairs streamed from a dataset directory, through a shuffle buffer (no random access needed).

    Video layouts and bags (track ids consistent over time) give neighbouring
    frames of a sequence; still-image layouts (COCO, Cityscapes) give one
    image twice.
    """

    def __init__(self, path: str, settings: TrainSettings, buffer_size: int = 64) -> None:
        from panoptic_ros.datasets.loader import open_dataset

        self.path = path
        self.dataset = open_dataset(path)
        if not self.dataset.sequences:
            raise ValueError(f"no sequences found in {path}")
        self.temporal = self.dataset.format in ("video", "rosbag")
        self.buffer_size = buffer_size
        self._buffer: list[tuple[PanopticFrame, PanopticFrame]] = []
        self._stream: Iterator | None = None

    @property
    def classes(self):
        return self.dataset.classes

    def _pairs(self, rng: random.Random) -> Iterator[tuple[PanopticFrame, PanopticFrame]]:
        produced = False
        while True:
            sequences = list(self.dataset.sequences)
            rng.shuffle(sequences)
            for name in sequences:
                prev = None
                for frame in self.dataset.frames(name):
                    if not self.temporal:
                        yield frame, frame
                    elif prev is not None:
                        yield prev, frame
                    prev = frame
                    produced = True
            if not produced:
                raise ValueError(f"{self.path} holds no frame pairs to train on")

    def sample(self, rng: random.Random) -> tuple[PanopticFrame, PanopticFrame]:
        if self._stream is None:
            self._stream = self._pairs(rng)
        while len(self._buffer) < self.buffer_size:
            self._buffer.append(next(self._stream))
        return self._buffer.pop(rng.randrange(len(self._buffer)))

    def describe(self) -> dict:
        return {"source": "dataset", "path": self.path, "format": self.dataset.format,
                "sequences": len(self.dataset.sequences), "temporal_pairs": self.temporal}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, s: TrainSettings, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak: over the steps, or over ``time_budget_s``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.time_budget_s > 0:
        t = elapsed_s / s.time_budget_s
    else:
        t = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _pair_samples(frames: tuple[PanopticFrame, PanopticFrame], flip: bool, s: TrainSettings,
                  cfg: ModelConfig) -> list:
    return [frame_to_sample(f, cfg.classes, s.min_instance_area, flip, (cfg.input_height, cfg.input_width))
            for f in frames]


def batches(source: PairSource, s: TrainSettings, cfg: ModelConfig, rng: random.Random) -> Iterator:
    while True:
        samples = []
        for _ in range(s.pairs_per_step):
            flip = rng.random() < 0.5
            samples += _pair_samples(source.sample(rng), flip, s, cfg)
        yield samples


CHUNK_STEPS = 16  # step-keyed sampling: steps that share a pool of synthetic worlds
PAIRS_PER_WORLD = 4  # ... and how many of the chunk's pairs each world of the pool serves on average


def step_rng(seed: int, step: int, pair: int) -> random.Random:
    """The random stream of one pair of one step under step-keyed sampling (``data_workers`` > 0)."""
    return random.Random(int(np.random.SeedSequence([seed, step, pair]).generate_state(1, np.uint64)[0]))


def world_pool(s: TrainSettings, chunk: int) -> list[int]:
    """The training sequences (seeds) the steps of ``chunk`` draw their pairs from."""
    size = max(1, CHUNK_STEPS * s.pairs_per_step // PAIRS_PER_WORLD)
    rng = random.Random(int(np.random.SeedSequence([s.seed, chunk, 1 << 20]).generate_state(1, np.uint64)[0]))
    return [s.train_seed_start + rng.randrange(s.train_sequences) for _ in range(size)]


def step_samples(source: SyntheticPairs, s: TrainSettings, cfg: ModelConfig, step: int) -> list:
    """The training samples of ``step`` under step-keyed sampling: a function of (seed, step) alone."""
    pool = world_pool(s, step // CHUNK_STEPS)
    samples = []
    for pair in range(s.pairs_per_step):
        rng = step_rng(s.seed, step, pair)
        flip = rng.random() < 0.5
        samples += _pair_samples(source.pair(pool[rng.randrange(len(pool))], rng), flip, s, cfg)
    return samples


_WORKER: tuple | None = None  # (source, settings, config) in a data-worker process


def _init_worker(cfg: ModelConfig, s: TrainSettings) -> None:
    global _WORKER
    import cv2
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER = (SyntheticPairs(cfg, s, cache_size=len(world_pool(s, 0))), s, cfg)


def _worker_steps(first: int, stop: int) -> list[list[tuple]]:
    """Steps first..stop-1 (within one chunk: its worlds are built once, here)."""
    source, s, cfg = _WORKER
    # Plain arrays through the pipe: torch's own tensor pickling would pass shared-memory handles.
    return [[(x.image.numpy(), x.semantic.numpy(), x.instances.boxes.numpy(), x.instances.labels.numpy(),
              x.instances.masks.numpy(), x.instances.track_ids.numpy()) for x in step_samples(source, s, cfg, k)]
            for k in range(first, stop)]


def _from_arrays(arrays: tuple):
    from panoptic_ros.model.instance_head import InstanceTargets
    from panoptic_ros.model.targets import TrainingSample
    image, semantic, boxes, labels, masks, track_ids = (torch.from_numpy(a) for a in arrays)
    return TrainingSample(image, semantic, InstanceTargets(boxes, labels, masks, track_ids))


class ParallelSteps:
    """Step-keyed samples rendered ahead by ``workers`` processes (a chunk each), delivered in step order."""

    def __init__(self, cfg: ModelConfig, s: TrainSettings, first_step: int, workers: int) -> None:
        import multiprocessing
        self._pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                               initargs=(cfg, s))
        self._pending: deque = deque()  # chunk results, in order
        self._ready: deque = deque()  # steps of the chunk being consumed
        self._next = first_step
        self._depth = workers + 1

    def __iter__(self) -> "ParallelSteps":
        return self

    def __next__(self) -> list:
        while len(self._pending) < self._depth:
            stop = (self._next // CHUNK_STEPS + 1) * CHUNK_STEPS
            self._pending.append(self._pool.apply_async(_worker_steps, (self._next, stop)))
            self._next = stop
        if not self._ready:
            self._ready.extend(self._pending.popleft().get())
        return [_from_arrays(a) for a in self._ready.popleft()]

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def train(s: TrainSettings, source: PairSource | None = None, progress: bool = True,
          evaluate_fn=None) -> Path:
    """Train (or resume) and write OUT/model.safetensors + model.json; returns the weights path."""
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    if s.threads:
        torch.set_num_threads(s.threads)
    device = pick_device(s.device)
    if s.data_workers < 0 or s.time_budget_s < 0:
        raise ValueError(f"--data-workers and --time-budget-s must be >= 0, got {s.data_workers} and "
                         f"{s.time_budget_s}")
    if s.data_workers and (s.data != "synth" or source is not None):
        raise ValueError("--data-workers renders synthetic frames; a dataset directory is read in the training "
                         "process (leave --data-workers at 0)")
    if s.render_size and (s.data != "synth" or source is not None):
        raise ValueError("--render-size sets the size synthetic frames are rendered at; a dataset directory "
                         "has its own (leave --render-size out)")
    if s.render_size and (len(s.render_size) != 2
                          or not all(MIN_SIZE_PX <= int(v) <= MAX_SIZE_PX for v in s.render_size)):
        raise ValueError(f"--render-size must be HxW with both sides in {MIN_SIZE_PX}..{MAX_SIZE_PX}, "
                         f"got {s.render_size}")
    if source is None and s.data != "synth":
        source = DatasetPairs(s.data, s)
    overrides = dict(s.overrides)
    if getattr(source, "classes", None) is not None:
        overrides["classes"] = source.classes  # train for the dataset's own class table
    cfg = PRESETS[s.preset](**overrides)
    class_weights = semantic_class_weight_tensor(s.semantic_class_weights, cfg, device)  # checked before any work
    torch.manual_seed(s.seed)
    if s.init:
        from panoptic_ros.model.checkpoint import load_model

        model, parent = load_model(s.init)
        if parent.config.classes != cfg.classes:
            raise CheckpointError(f"--init {s.init} was trained for other classes than this run's data")
        # the parent's architecture; a new input size (--input-size) still applies: the network is convolutional
        cfg = replace(parent.config, **{k: v for k, v in s.overrides.items() if k in ("input_height", "input_width")})
        model.cfg = cfg
        model = model.float().to(device)
    else:
        model, parent = build_model(cfg).to(device), None
    if s.channels_last:
        model.to(memory_format=torch.channels_last)  # same Parameter objects: before the optimizer holds them
    model.train()
    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (no_decay if prm.ndim <= 1 else decay).append(prm)
    # The fused kernel: one pass over all parameters (a third to a half of the per-tensor loop's time on the CPU).
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=s.lr,
                                  fused=device.type in ("cpu", "cuda"))
    state_dir = out / "train_state"
    history: list[dict] = []
    step = 0
    rng = random.Random(s.seed)
    if (state_dir / "state.json").exists():
        st = load_training_state(state_dir, model, optimizer)
        step, history = st["step"], st["history"]
        rng.setstate(_tuple_state(st["rng"]))
        torch.set_rng_state(torch.tensor(st["torch_rng"], dtype=torch.uint8))
        print(f"resuming {out} at step {step}/{s.steps}")
    ema = WeightAverage(model, s.ema_decay, state_dir / "ema.safetensors") if s.ema_decay > 0 else None
    (out / "settings.json").write_text(json.dumps(asdict(s), indent=2))
    source = source or SyntheticPairs(cfg, s)
    use_amp = s.amp and device.type == "cuda"
    data = ParallelSteps(cfg, s, step, s.data_workers) if s.data_workers else batches(source, s, cfg, rng)
    elapsed = sum(h["time_s"] for h in history)  # training time so far (the time budget's clock)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=s.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    # bf16 where the GPU has it (no loss scaling needed); else fp16 with a gradient scaler, without which
    # small fp16 gradients underflow to zero.
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    out_of_time = s.time_budget_s > 0 and elapsed >= s.time_budget_s
    t_last = time.time()
    try:
        while step < s.steps and not out_of_time:
            samples = next(data)
            images = torch.stack([x.image for x in samples]).to(device, non_blocking=True)
            if s.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            semantic = torch.stack([x.semantic for x in samples]).to(device, non_blocking=True)
            targets = [_to_device(x.instances, device) for x in samples]
            lr = lr_at(step, s, elapsed)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                losses = model.loss(images, semantic, targets, semantic_class_weights=class_weights)
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise FloatingPointError(f"loss became {float(total)} at step {step}: {_fmt(losses)}; "
                                         "lower --lr or resume from the last checkpoint")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            scaler.step(optimizer)  # skipped (and the scale lowered) when a scaled fp16 gradient overflowed
            scaler.update()
            step += 1
            if ema is not None:
                ema.update(model, step)
            rec = {"step": step, "lr": lr, "total": total.item(), "grad_norm": float(grad_norm),
                   "time_s": time.time() - t_last, **{k: v.item() for k, v in losses.items()}}
            t_last = time.time()
            elapsed += rec["time_s"]
            out_of_time = s.time_budget_s > 0 and elapsed >= s.time_budget_s
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['total']:.3f}", sem=f"{rec['loss_semantic']:.3f}",
                                mask=f"{rec['loss_mask']:.3f}", s_per_step=f"{rec['time_s']:.2f}")
            if step % s.checkpoint_every == 0 or step == s.steps or out_of_time:
                _checkpoint(state_dir, model, optimizer, step, history, rng)
                if ema is not None:
                    ema.save(state_dir / "ema.safetensors")
                plot_losses(history, out / "loss_curves.png")
            if evaluate_fn is not None and s.eval_every and step % s.eval_every == 0 and step < s.steps:
                _export(ema.model if ema else model, cfg, s, source, history, out, evaluate_fn, parent, interim=True)
    finally:
        if isinstance(data, ParallelSteps):
            data.close()
    if bar is not None:
        bar.close()
    return _export(ema.model if ema else model, cfg, s, source, history, out, evaluate_fn, parent, interim=False)


def semantic_class_weight_tensor(weights: dict[str, float], cfg: ModelConfig,
                                  device: torch.device) -> torch.Tensor | None:
    """The semantic loss's per-class weights (classes not named weigh 1), or None when none is set."""
    if not weights:
        return None
    names = cfg.classes.names
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"--semantic-class-weight names unknown classes {unknown}; known: {', '.join(names)}")
    bad = {k: v for k, v in weights.items() if not (float(v) > 0 and math.isfinite(float(v)))}
    if bad:
        raise ValueError(f"--semantic-class-weight weights must be finite and > 0, got {bad}")
    return torch.tensor([float(weights.get(n, 1.0)) for n in names], device=device)


def parse_class_weight(text: str) -> tuple[str, float]:
    """'traffic light=2.5' -> ('traffic light', 2.5)."""
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CLASS=WEIGHT (e.g. 'traffic light=2.5'), got {text!r}")


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (what gets exported).

    With batches of two correlated frames the raw weights are noisy; their
    average generalises better. The decay ramps up from 0 so early averages
    are not dominated by the random initialisation.
    """

    def __init__(self, model: EfficientPS, decay: float, saved: Path) -> None:
        self.decay = decay
        self._pairs: tuple | None = None  # (model, (averages, currents) floating, the same for the rest)
        self.model = copy.deepcopy(model).eval()
        for prm in self.model.parameters():
            prm.requires_grad_(False)
        if saved.exists():
            check_safetensors_file(saved)
            missing, unexpected = self.model.load_state_dict(load_file(str(saved)), strict=False)
            if unexpected:
                raise CheckpointError(f"{saved} holds tensors this architecture lacks, e.g. {unexpected[:3]}")

    @torch.no_grad()
    def update(self, model: EfficientPS, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        if self._pairs is None or self._pairs[0] is not model:
            floats, others = ([], []), ([], [])
            for avg, cur in zip(self.model.state_dict().values(), model.state_dict().values()):
                group = floats if avg.is_floating_point() else others
                group[0].append(avg)
                group[1].append(cur.detach())
            self._pairs = (model, floats, others)
        _, floats, others = self._pairs
        torch._foreach_lerp_(floats[0], floats[1], 1 - d)  # avg = d * avg + (1 - d) * cur, all tensors at once
        torch._foreach_copy_(others[0], others[1])

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(path)


def _export(model: EfficientPS, cfg: ModelConfig, s: TrainSettings, source: PairSource, history: list[dict],
            out: Path, evaluate_fn, parent: ModelCard | None, interim: bool) -> Path:
    was_training = model.training
    model.eval()
    card = ModelCard(name=f"efficientps_{cfg.backbone}_{cfg.input_height}x{cfg.input_width}", config=cfg,
                     training=with_parent({"command": "panoptic-ros train " + " ".join(_settings_argv(s)),
                                           "settings": asdict(s), "data": source.describe(),
                                           "steps_done": len(history),
                                           "final_loss": history[-1]["total"] if history else None,
                                           "train_time_s": sum(h["time_s"] for h in history),
                                           "torch": torch.__version__}, parent))
    path = save_model(model, out / "model.safetensors", card)
    if evaluate_fn is not None:
        card.metrics = evaluate_fn(path, s)
        save_model(model, path, card)
    model.train(was_training)
    print(f"{'interim ' if interim else ''}model written to {path}")
    return path


def with_parent(training: dict[str, Any], parent: ModelCard | None) -> dict[str, Any]:
    """A card's training record with the model it continued from (``--init``) nested as ``parent`` (its own
    record, weights hash included, and so on down the chain) and ``total_steps`` / ``total_train_time_s``
    summed over the chain: a continued model's card still tells every run that made it."""
    if parent is None:
        return training
    before = dict(parent.training, weights_sha256=parent.weights_sha256)
    return dict(training, parent=before,
                total_steps=training["steps_done"] + before.get("total_steps", before.get("steps_done", 0)),
                total_train_time_s=training["train_time_s"] + before.get("total_train_time_s",
                                                                         before.get("train_time_s", 0.0)))


def _settings_argv(s: TrainSettings) -> list[str]:
    argv = []
    defaults = TrainSettings(out=s.out)
    for k, v in asdict(s).items():
        if k == "out":
            argv.append(f"--out {v}")
        elif k == "overrides":
            if "input_height" in v and "input_width" in v:
                argv.append(f"--input-size {v['input_height']}x{v['input_width']}")
        elif k == "render_size":
            if v:
                argv.append(f"--render-size {v[0]}x{v[1]}")
        elif k == "semantic_class_weights":
            argv += [f"--semantic-class-weight {shlex.quote(f'{name}={w:g}')}" for name, w in v.items()]
        elif isinstance(v, bool):
            if v != getattr(defaults, k):
                argv.append(f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}")
        elif v != getattr(defaults, k):
            argv.append(f"--{k.replace('_', '-')} {v}")
    return argv


def _checkpoint(state_dir: Path, model, optimizer, step: int, history: list[dict], rng: random.Random) -> None:
    save_training_state(state_dir, model, optimizer,
                        {"step": step, "history": history, "rng": _list_state(rng.getstate()),
                         "torch_rng": torch.get_rng_state().tolist()})


def _list_state(x):
    return [_list_state(v) for v in x] if isinstance(x, tuple) else x


def _tuple_state(x):
    return tuple(_tuple_state(v) for v in x) if isinstance(x, list) else x


def _to_device(t, device):
    from panoptic_ros.model.instance_head import InstanceTargets
    return InstanceTargets(t.boxes.to(device), t.labels.to(device), t.masks.to(device), t.track_ids.to(device))


def _fmt(losses: dict) -> str:
    return ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())


def plot_losses(history: list[dict], path: Path) -> None:
    """Loss curves (each loss, smoothed over 25 steps) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    keys = [k for k in history[0] if k.startswith("loss_")] + ["total"]
    steps = np.array([h["step"] for h in history])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in keys:
        v = np.array([h[k] for h in history])
        win = min(25, len(v))
        smooth = np.convolve(v, np.ones(win) / win, mode="valid")
        axes[0].plot(steps[win - 1:], smooth, label=k.replace("loss_", ""), lw=2 if k == "total" else 1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (25-step mean)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].plot(steps, [h["lr"] for h in history], color="tab:gray")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("learning rate")
    axes[1].grid(alpha=0.3)
    fig.suptitle("panoptic_ros training")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ CLI


# The numeric options of ``train``: (TrainSettings field, type, help).
_NUMBER_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("steps", int, "training steps; the learning-rate schedule runs over them unless --time-budget-s is set, "
                   "and the run stops at them in any case"),
    ("pairs_per_step", int, "frame pairs per step (two frames of one sequence each: a batch of twice as many)"),
    ("warmup_steps", int, "steps of linear learning-rate warm-up before the cosine decay"),
    ("seed", int, "seed of the frame sampling, the flips and the initialisation of new layers"),
    ("train_seed_start", int, "first synthetic training sequence (generator seed)"),
    ("train_sequences", int, "number of synthetic training sequences: seeds --train-seed-start onwards"),
    ("frames_per_sequence", int, "frames in each synthetic training sequence"),
    ("max_frame_gap", int, "most frames between the two frames of a pair"),
    ("eval_seed_start", int, "first held-out sequence the card's PQ is measured on (keep it outside the training seeds)"),
    ("eval_sequences", int, "held-out sequences the card's PQ is measured on"),
    ("eval_frames", int, "frames of each held-out sequence scored"),
    ("eval_frame_stride", int, "frames 0, s, 2s, ... of each held-out sequence are scored"),
    ("eval_every", int, "steps between interim model files scored on the held-out frames (0 = only at the end)"),
    ("checkpoint_every", int, "steps between saves of train_state/ (the resume point) and of loss_curves.png"),
    ("threads", int, "torch CPU threads (0 = torch's default)"),
    ("min_instance_area", int, "thing instances with fewer visible pixels are no box/mask targets (their pixels "
                               "still teach the semantic head)"),
    ("data_workers", int, "processes rendering synthetic frames (0 = in the training process; > 0 = step-keyed "
                          "sampling, see above)"),
    ("lr", float, "peak learning rate of AdamW (linear warm-up, then cosine decay to 5 %% of it)"),
    ("weight_decay", float, "AdamW weight decay (not applied to biases and normalisation parameters)"),
    ("grad_clip", float, "largest gradient norm; larger gradients are scaled down to it"),
    ("ema_decay", float, "the exported weights are an exponential moving average of the trained ones with this "
                         "decay (0 = export the trained weights)"),
    ("time_budget_s", float, "> 0: the schedule runs over this many seconds of training time, and the run stops "
                             "there (or at --steps, if sooner)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the panoptic model (resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainSettings(out="")
    p.add_argument("--out", required=True, help="run directory (weights, card, loss curves, train_state/)")
    p.add_argument("--preset", default=d.preset, choices=sorted(PRESETS), help="architecture preset")
    p.add_argument("--data", default=d.data, help="'synth' or a dataset directory (Cityscapes/COCO/video panoptic)")
    for name, kind, text in _NUMBER_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name),
                       help=f"{text} (default: %(default)s)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="disable mixed precision on CUDA (bf16 autocast, or fp16 with gradient scaling)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="NCHW activations instead of channels-last (NHWC, the faster default)")
    p.add_argument("--init", default="", help="initialise from a model .safetensors (continue training a model)")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                   help="HxW network input, overriding the preset's or the --init model's (multiples of 32)")
    p.add_argument("--render-size", type=parse_size, default=None, metavar="HxW",
                   help="HxW the synthetic frames are rendered at, if not the network input: e.g. a 320x640 "
                        "network trained on 256x512 frames upsampled to it, as the predictor feeds it such frames")
    p.add_argument("--semantic-class-weight", dest="semantic_class_weights", type=parse_class_weight,
                   action="append", default=[], metavar="CLASS=WEIGHT",
                   help="weight of one class's pixels in the semantic loss (repeatable; others weigh 1), "
                        "e.g. 'traffic light=2.7'")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out PQ evaluation at the end")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    overrides = {}
    if args.input_size:
        h, w = args.input_size
        overrides.update(input_height=h, input_width=w)
    fields = set(TrainSettings.__dataclass_fields__)
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    kwargs["semantic_class_weights"] = dict(kwargs.get("semantic_class_weights") or [])
    kwargs["render_size"] = list(args.render_size) if args.render_size else []
    return TrainSettings(**kwargs, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    evaluate_fn = None
    if not args.no_eval:
        from panoptic_ros.model.evaluation import evaluate_synthetic_for_card
        evaluate_fn = evaluate_synthetic_for_card
    try:
        train(s, evaluate_fn=evaluate_fn)
    except ValueError as exc:  # bad settings, or a refused --init file (CheckpointError): the reason, no traceback
        print(f"panoptic-ros train: error: {exc}", file=sys.stderr)
        return 2
    return 0

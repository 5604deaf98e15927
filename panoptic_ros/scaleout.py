"""Run one function over many independent items (bags) serially, in local worker processes, or on Ray.

Replay and evaluation work bag by bag, and a bag's result does not depend
on any other bag, so the items are farmed out as they are and the results
come back **in the order of the items**, whatever order the workers finish
in. Callers then merge the per-item results in that order, which makes a
parallel run give exactly the numbers a serial one gives.

Backends:

- serial: ``workers == 1`` and no Ray address; runs in this process.
- local processes: ``workers > 1``; a ``spawn`` process pool (no fork of a
  process that may hold torch threads or a DDS participant), each worker
  limited to ``cpu_count // workers`` math threads so that N workers do not
  fight over the cores.
- Ray: ``ray_address`` is ``"local"`` (start a small private Ray instance
  on this machine: ``num_cpus=2``, no dashboard, an 80 MB object store) or
  the address of a running cluster (``"ray://head:10001"``, ``"auto"``).
  The items and the function must be importable there (the paths a bag
  item names must be reachable from the cluster's workers, e.g. on a shared
  file system; the ``panoptic_ros`` package is shipped with the job).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

RAY_LOCAL = "local"
RAY_LOCAL_CPUS = 2
RAY_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray refuses less than 75 MiB
_THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ScaleOutError(RuntimeError):
    """The requested backend cannot run (Ray missing or unreachable, a bad worker count)."""


@dataclass(frozen=True)
class ScaleOut:
    """How to spread items: ``workers`` local processes, or a Ray cluster at ``ray_address``."""

    workers: int = 1
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ScaleOutError(f"workers must be at least 1, got {self.workers}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ScaleOutError("the Ray address is empty; use 'local' or an address such as ray://host:10001")

    @property
    def backend(self) -> str:
        if self.ray_address is not None:
            return "ray"
        return "processes" if self.workers > 1 else "serial"

    def describe(self) -> str:
        if self.ray_address is not None:
            return f"ray ({self.ray_address})"
        return f"{self.workers} worker processes" if self.workers > 1 else "serial"


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(num_items: int) -> int:
    """min(CPU cores available to us, items), at least 1."""
    return max(1, min(available_cores(), num_items))


def map_ordered(fn: Callable[[T], R], items: Sequence[T], plan: ScaleOut,
                on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]`` on the chosen backend; results in item order.

    ``fn`` must be a module-level function (it is pickled by reference) and
    should report expected failures in its result rather than raise; an
    exception it raises is re-raised here. ``on_result(index, result)`` is
    called in this process as each item finishes (in finishing order), e.g.
    to print progress.
    """
    items = list(items)
    if not items:
        return []
    if plan.ray_address is not None:
        return _map_ray(fn, items, plan.ray_address, on_result)
    if plan.workers == 1 or len(items) == 1:
        results = []
        for i, item in enumerate(items):
            results.append(fn(item))
            if on_result is not None:
                on_result(i, results[-1])
        return results
    return _map_processes(fn, items, min(plan.workers, len(items)), on_result)


# --------------------------------------------------------------------------- local processes


def _limit_threads(threads: int) -> None:
    """Worker initializer: cap the math libraries' threads. A spawned worker has not imported them yet, and
    they read these variables when they start (torch included), so nothing is imported here."""
    for name in _THREADS_ENV:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _map_processes(fn: Callable[[T], R], items: list[T], workers: int,
                   on_result: Callable[[int, R], None] | None) -> list[R]:
    threads = max(1, available_cores() // workers)
    results: list[Any] = [None] * len(items)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_limit_threads,
                             initargs=(threads,)) as pool:
        pending = {pool.submit(fn, item): i for i, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
    return results


# --------------------------------------------------------------------------- Ray


def _package_root() -> Path:
    """The directory holding the ``panoptic_ros`` package (the checkout or site-packages)."""
    return Path(__file__).resolve().parent.parent


def _map_ray(fn: Callable[[T], R], items: list[T], address: str,
             on_result: Callable[[int, R], None] | None) -> list[R]:
    try:
        import ray
    except ImportError:
        raise ScaleOutError("--ray needs the 'ray' package (pip install ray), which is not installed here") from None
    started_here = False
    if not ray.is_initialized():
        env = {"env_vars": {name: "1" for name in _THREADS_ENV}}
        try:
            if address == RAY_LOCAL:
                env["env_vars"]["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(_package_root()), os.environ.get("PYTHONPATH", "")) if p)
                ray.init(num_cpus=RAY_LOCAL_CPUS, include_dashboard=False, object_store_memory=RAY_OBJECT_STORE_BYTES,
                         log_to_driver=False, logging_level=logging.ERROR, runtime_env=env)
            else:
                env["py_modules"] = [str(_package_root() / "panoptic_ros")]
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, runtime_env=env)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types (ConnectionError, RuntimeError, ValueError)
            raise ScaleOutError(f"cannot start or reach Ray at {address!r}: {exc}") from None
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                i = index[ref]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                if on_result is not None:
                    on_result(i, results[i])
        return results
    finally:
        if started_here:
            ray.shutdown()


__all__ = ["RAY_LOCAL", "ScaleOut", "ScaleOutError", "available_cores", "default_workers", "map_ordered"]

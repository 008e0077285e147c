"""Training batches prepared ahead of the step that uses them, so the device never waits.

Every random draw (the sampler's images, the crop offsets and flips) happens in the calling
thread, in step order, so a run's batches depend on its seed alone, not on `num_workers`.
Cutting the uint8 crops out of the (memory-mapped) pixel array, the part that costs, runs in
`num_workers` threads up to `num_workers` batches ahead (numpy releases the GIL while it
copies); on a GPU into pinned memory, so the copy to the device overlaps the step.
With `num_workers: 0` each batch is cut when it is asked for.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from hdml.data import BatchTransform, ImageTensors
from hdml.samplers import Sampler


@dataclass
class Batch:
    index: np.ndarray  # rows of the training split
    crops: torch.Tensor  # uint8 B x C x crop x crop
    rng: dict[str, torch.Tensor]  # generator states right after this batch's draws (checkpoints)


class BatchLoader:
    """Endless training batches: `next(loader)`; `wait` is the time spent blocked on crops."""

    def __init__(self, images: ImageTensors, sampler: Sampler, transform: BatchTransform,
                 sample_gen: torch.Generator, augment_gen: torch.Generator, workers: int) -> None:
        self.images, self.sampler, self.transform = images, sampler, transform
        self.sample_gen, self.augment_gen = sample_gen, augment_gen
        self.ahead = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="hdml-crops") if workers else None
        self.queue: deque[tuple[np.ndarray, Future, dict[str, torch.Tensor]]] = deque()
        self.wait = 0.0

    def _draw(self) -> tuple[np.ndarray, list[tuple[int, int, bool]], dict[str, torch.Tensor]]:
        index = self.sampler()
        plan = self.transform.draw(len(index), self.images.pixels.shape[1:], True, self.augment_gen)
        return index, plan, {"sample_gen": self.sample_gen.get_state(), "augment_gen": self.augment_gen.get_state()}

    def __iter__(self) -> "BatchLoader":
        return self

    def __next__(self) -> Batch:
        if self.pool is None:
            index, plan, rng = self._draw()
            start = time.perf_counter()
            crops = self.transform.cut(self.images.pixels, index, plan)
            self.wait += time.perf_counter() - start
            return Batch(index, crops, rng)
        while len(self.queue) < self.ahead + 1:  # the batch asked for, and `ahead` more in flight
            index, plan, rng = self._draw()
            self.queue.append((index, self.pool.submit(self.transform.cut, self.images.pixels, index, plan), rng))
        index, job, rng = self.queue.popleft()
        start = time.perf_counter()
        crops = job.result()
        self.wait += time.perf_counter() - start
        return Batch(index, crops, rng)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.queue.clear()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

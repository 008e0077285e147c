"""Training batches prepared ahead of the step that uses them, so the device never waits.

With `num_workers: N >= 1`, one thread makes every random draw (the sampler's images, the
crop offsets and flips) in step order, so a run's batches depend on its seed alone, not on N,
and hands the cutting of the uint8 crops out of the (memory-mapped) pixel array, the part that
costs, to N threads (numpy releases the GIL while it copies), staying N batches ahead; on a
GPU the crops land in pinned memory, so the copy to the device overlaps the step. The training
loop only picks finished batches up. With `num_workers: 0` each batch is made when asked for.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from hdml.data.samplers import Sampler
from hdml.data.tensors import BatchTransform, ImageTensors


@dataclass
class Batch:
    index: np.ndarray  # rows of the training split
    crops: torch.Tensor  # uint8 B x C x crop x crop
    rng: dict[str, torch.Tensor]  # generator states right after this batch's draws (checkpoints)


class BatchLoader:
    """Endless training batches: `next(loader)`; `wait` is the time spent blocked on them."""

    def __init__(self, images: ImageTensors, sampler: Sampler, transform: BatchTransform,
                 sample_gen: torch.Generator, augment_gen: torch.Generator, workers: int) -> None:
        self.images, self.sampler, self.transform = images, sampler, transform
        self.sample_gen, self.augment_gen = sample_gen, augment_gen
        self.wait = 0.0
        self.pool: ThreadPoolExecutor | None = None
        if workers:
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="hdml-crops")
            self.ready: queue.Queue[tuple[np.ndarray, Future, dict] | BaseException] = queue.Queue(workers)
            self.stopping = threading.Event()
            self.drawer = threading.Thread(target=self._draw_ahead, name="hdml-draws", daemon=True)
            self.drawer.start()

    def _draw(self) -> tuple[np.ndarray, list[tuple[int, int, bool]], dict[str, torch.Tensor]]:
        index = self.sampler()
        plan = self.transform.draw(len(index), self.images.pixels.shape[1:], True, self.augment_gen)
        return index, plan, {"sample_gen": self.sample_gen.get_state(), "augment_gen": self.augment_gen.get_state()}

    def _draw_ahead(self) -> None:
        """The drawing thread: batches in order into `ready`, blocking while it is full."""
        try:
            while not self.stopping.is_set():
                index, plan, rng = self._draw()
                self._put((index, self.pool.submit(self.transform.cut, self.images.pixels, index, plan), rng))
        except BaseException as exc:  # handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item: tuple[np.ndarray, Future, dict] | BaseException) -> None:
        """Queue `item` unless the loader is closing (then the loop reads no more)."""
        while not self.stopping.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> Batch:
        start = time.perf_counter()
        if self.pool is None:
            index, plan, rng = self._draw()
            crops = self.transform.cut(self.images.pixels, index, plan)
        else:
            item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            index, job, rng = item
            crops = job.result()
        self.wait += time.perf_counter() - start
        return Batch(index, crops, rng)

    def close(self) -> None:
        if self.pool is not None:
            self.stopping.set()
            self.drawer.join()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Batch samplers: which images form a training batch, laid out as each loss expects.

- `npair`: N classes x 2 images, rows [anchors a_1..a_N; positives p_1..p_N] (Sohn 2016).
- `triplet`: T triplets, rows [anchors; positives; negatives] (the authors' B = 120 = 3 x 40),
  of 2T distinct classes as the authors' sampler (`triplet_sampler: distinct`) or with classes
  drawn independently per triplet (`independent`).
- `m_per_class`: batch_size / m classes with m images each, grouped by class.
Classes are drawn at random each step (no epochs), with replacement across steps.

Each kind is a class registered under its name (`register_sampler`), which a method names in
its `sampler` attribute; `reads` declares the flat run-config keys it reads (the keys stay
flat: a section would change every run's fingerprint and break resuming old checkpoints).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import numpy as np
import torch

from hdml.core.suggest import did_you_mean

SAMPLERS: dict[str, type[Sampler]] = {}
S = TypeVar("S", bound="type[Sampler]")


def register_sampler(kind: str) -> Callable[[S], S]:
    """Class decorator: the sampler of batch layout `kind` (what `build_sampler` looks up)."""

    def add(cls: S) -> S:
        if kind in SAMPLERS:
            raise ValueError(f"sampler {kind!r} is registered twice ({SAMPLERS[kind].__name__}, {cls.__name__})")
        SAMPLERS[kind] = cls
        return cls

    return add


class Sampler:
    reads: ClassVar[tuple[str, ...]] = ("batch_size",)  # the run-config keys `from_config` reads

    def __init__(self, labels: np.ndarray, batch_size: int, gen: torch.Generator) -> None:
        self.gen = gen
        self.batch_size = batch_size
        self.classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        # Members of each class in ascending index order, grouped in O(n log n): a scan per
        # class would be O(n x classes), minutes for Stanford Online Products' 11,318 classes.
        order = np.argsort(inverse, kind="stable")
        self.members = np.split(order, np.cumsum(counts)[:-1])
        self._eligible: dict[int, np.ndarray] = {}

    def _classes(self, k: int, min_size: int = 1) -> np.ndarray:
        if min_size not in self._eligible:  # fixed for the run; drawn from on every step
            self._eligible[min_size] = np.array([i for i, m in enumerate(self.members) if len(m) >= min_size])
        eligible = self._eligible[min_size]
        if len(eligible) < k:
            raise ValueError(f"batch needs {k} classes with >= {min_size} images, dataset has {len(eligible)}")
        return eligible[torch.randperm(len(eligible), generator=self.gen)[:k].numpy()]

    def _pick(self, cls: int, k: int) -> np.ndarray:
        members = self.members[cls]
        return members[torch.randperm(len(members), generator=self.gen)[:k].numpy()]

    @classmethod
    def from_config(cls, labels: np.ndarray, cfg: dict, gen: torch.Generator) -> Sampler:
        return cls(labels, cfg["batch_size"], gen)

    def __call__(self) -> np.ndarray:
        raise NotImplementedError


@register_sampler("npair")
class NPairSampler(Sampler):
    def __call__(self) -> np.ndarray:
        n = self.batch_size // 2
        pairs = np.stack([self._pick(c, 2) for c in self._classes(n, 2)])
        return np.concatenate([pairs[:, 0], pairs[:, 1]])


class TripletSampler(Sampler):
    """Classes drawn independently for each triplet (repeats allowed): for datasets with fewer
    than 2T classes, such as the digits demo."""

    def __call__(self) -> np.ndarray:
        t = self.batch_size // 3
        a, p, neg = [], [], []
        n_cls = len(self.members)
        for _ in range(t):
            c = self._classes(1, 2)[0]
            i, j = self._pick(c, 2)
            other = int(torch.randint(0, n_cls - 1, (1,), generator=self.gen))
            other += other >= c
            a.append(i), p.append(j), neg.append(self._pick(other, 1)[0])
        return np.array(a + p + neg)


@register_sampler("triplet")
class DistinctTripletSampler(Sampler):
    """The authors' TripletLossScheme (data_provider.py:158-179): 2T distinct classes per batch,
    the first T give anchor + positive, the other T one negative each, so no two triplets share
    an anchor class and no negative class is any triplet's anchor class. Registered as `triplet`:
    `triplet_sampler` picks it (`distinct`) or `TripletSampler` (`independent`)."""

    reads = ("batch_size", "triplet_sampler")

    @classmethod
    def from_config(cls, labels: np.ndarray, cfg: dict, gen: torch.Generator) -> Sampler:
        if cfg["triplet_sampler"] == "distinct":
            return cls(labels, cfg["batch_size"], gen)
        return TripletSampler(labels, cfg["batch_size"], gen)

    def __init__(self, labels: np.ndarray, batch_size: int, gen: torch.Generator) -> None:
        super().__init__(labels, batch_size, gen)
        t = batch_size // 3
        if len(self.members) < 2 * t or sum(len(m) >= 2 for m in self.members) < t:
            raise ValueError(f"triplet_sampler distinct: a batch of {t} triplets needs {2 * t} classes "
                             f"({t} with >= 2 images), dataset has {len(self.members)}; "
                             "set triplet_sampler: independent")

    def __call__(self) -> np.ndarray:
        t = self.batch_size // 3
        anchors = self._classes(t, 2)
        taken = np.zeros(len(self.members), dtype=bool)
        taken[anchors] = True
        others = np.flatnonzero(~taken)
        negatives = others[torch.randperm(len(others), generator=self.gen)[:t].numpy()]
        pairs = np.stack([self._pick(c, 2) for c in anchors])
        neg = np.array([self._pick(c, 1)[0] for c in negatives])
        return np.concatenate([pairs[:, 0], pairs[:, 1], neg])


@register_sampler("m_per_class")
class MPerClassSampler(Sampler):
    reads = ("batch_size", "images_per_class")

    def __init__(self, labels: np.ndarray, batch_size: int, gen: torch.Generator, m: int) -> None:
        super().__init__(labels, batch_size, gen)
        if batch_size % m:
            raise ValueError(f"batch_size {batch_size} is not a multiple of images_per_class {m}")
        self.m = m

    @classmethod
    def from_config(cls, labels: np.ndarray, cfg: dict, gen: torch.Generator) -> Sampler:
        return cls(labels, cfg["batch_size"], gen, cfg["images_per_class"])

    def __call__(self) -> np.ndarray:
        return np.concatenate([self._pick(c, self.m) for c in self._classes(self.batch_size // self.m, self.m)])


def build_sampler(kind: str, labels: np.ndarray, cfg: dict, gen: torch.Generator) -> Sampler:
    """The registered sampler of batch layout `kind`, configured from the run config."""
    if kind not in SAMPLERS:
        known = ", ".join(sorted(SAMPLERS))
        raise ValueError(f"unknown sampler {kind!r}{did_you_mean(kind, SAMPLERS)}; known: {known}")
    return SAMPLERS[kind].from_config(labels, cfg, gen)

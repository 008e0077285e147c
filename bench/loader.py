"""Images/s of the decoded-image cache path vs the per-image PIL path, on generated JPEGs of
CUB's typical size (500x375), both producing normalised 227 crops of 256x256 images; then a
training loop whose step (a matrix product, releasing the GIL as a GPU step does) lasts as
long as cutting one batch, with the crops cut in the loop (`num_workers: 0`) or ahead in a
worker thread (`hdml.data.loader`), to show the wait that prefetching hides.

    python bench/loader.py [--images 400] [--batch 120]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hdml.data.cache import build_cache, load_cached
from hdml.data.files import decode
from hdml.data.loader import BatchLoader
from hdml.data.samplers import build_sampler
from hdml.data.streaming import SplitImages
from hdml.data.tensors import BatchTransform, ImageTensors
from photos import write_photos

IMAGE = {"resize": 256, "crop": 227, "flip": True, "normalize": "imagenet"}


def make_dataset(root: Path, n: int) -> None:
    """n photo-like JPEGs and a split.csv."""
    rows = [{"path": f"images/{name}", "label": i % 20, "split": "train" if i % 2 == 0 else "test"}
            for i, name in enumerate(write_photos(root / "bench" / "images", n))]
    pd.DataFrame(rows).to_csv(root / "bench" / "split.csv", index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, args.images)
        split = pd.read_csv(root / "bench/split.csv")
        train = split[split.split == "train"].assign(path=lambda d: [str(root / "bench" / x) for x in d.path])
        n = len(train)

        # PIL path, per image: decode + resize + random crop + flip (uint8, what a worker hands
        # over), and the same plus CPU normalisation (what SplitImages returns).
        pil = SplitImages(train, IMAGE, 3, train=True)
        gen = torch.Generator().manual_seed(0)

        def pil_uint8(i: int) -> torch.Tensor:
            pixels = torch.tensor(decode(pil.paths[i], 256, 3))
            top, left, flip = pil.transform.draw(256, 256, gen)
            out = pixels[:, top : top + 227, left : left + 227]
            return out.flip(2).contiguous() if flip else out.contiguous()

        pil_rate = rate(lambda: [pil_uint8(i) for i in range(n)], n)
        pil_norm_rate = rate(lambda: [pil[i] for i in range(n)], n)

        start = time.perf_counter()
        build_cache(root, "bench", 256, 3, workers=args.threads)
        cache_build_rate = len(split) / (time.perf_counter() - start)
        images = ImageTensors(load_cached(root, "bench", 256, 3, "train"), train.label.to_numpy())
        transform = BatchTransform(227, True, "imagenet", torch.device("cpu"))
        batches = [np.sort(np.random.default_rng(b).choice(n, size=min(args.batch, n), replace=False))
                   for b in range(8)]
        seen = sum(len(b) for b in batches)
        cache_rate = rate(lambda: [transform.crops(images.pixels, b, True, gen) for b in batches], seen)
        cache_norm_rate = rate(lambda: [transform.load(images, b, True, gen) for b in batches], seen)
        cut_seconds = 1 / rate(lambda: [transform.crops(images.pixels, b, True, gen) for b in batches], len(batches))
        loops = {(cpu, w): prefetch_loop(images, transform, args.batch, w, cut_seconds, cpu)
                 for cpu in (False, True) for w in (0, 1, 2)}

    print(f"{n} training images of 500x375 -> 256x256 -> random 227 crop + flip; threads={args.threads}")
    print("uint8 crops ready for the device (normalisation then runs there, in batches):")
    print(f"  PIL decode+resize+crop path: {pil_rate:8.0f} images/s")
    print(f"  cache path (memmap + crop/flip): {cache_rate:8.0f} images/s")
    ratio = cache_rate / pil_rate
    print(f"  ratio cache / PIL: {ratio:.1f}x (target >= 10x) {'MET' if ratio >= 10 else 'NOT MET'}")
    print("including normalisation on this CPU (a CPU-only training run):")
    print(f"  PIL path: {pil_norm_rate:8.0f} images/s, cache path: {cache_norm_rate:8.0f} images/s, "
          f"ratio {cache_norm_rate / pil_norm_rate:.1f}x")
    print(f"cache build (one-off decode of both splits): {cache_build_rate:8.0f} images/s")
    print(f"training loop, step of {cut_seconds * 1000:.1f} ms (= making one batch in the loop), 30 steps:")
    for cpu in (False, True):
        print("  GPU-like step (the CPU thread sleeps):" if not cpu else "  CPU step (matrix products, 1 thread):")
        for w in (0, 1, 2):
            per_step, wait = loops[cpu, w]
            print(f"    num_workers={w}: {per_step * 1000:6.1f} ms/step, waiting for batches {100 * wait:4.1f}% of it")
        print(f"    loop speed-up with num_workers=1: {loops[cpu, 0][0] / loops[cpu, 1][0]:.2f}x (ideal 2x)")


def prefetch_loop(images: ImageTensors, transform: BatchTransform, batch: int, workers: int,
                  step_seconds: float, cpu_step: bool, steps: int = 30) -> tuple[float, float]:
    """(seconds per step, fraction of it spent waiting for the batch) of a loop whose step lasts
    about `step_seconds`: a sleep, as a GPU step looks from the CPU (its thread mostly waits for
    the device), or matrix products on this CPU (a CPU training run, competing for the cores)."""
    a = torch.randn(256, 256)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a
    reps = max(1, round(step_seconds / ((time.perf_counter() - t0) / 20)))

    def step() -> None:
        if cpu_step:
            for _ in range(reps):
                a @ a
        else:
            time.sleep(step_seconds)

    pairs = np.arange(len(images)) // 2  # classes of two images, enough for any batch up to the split
    sampler = build_sampler("m_per_class", pairs, {"batch_size": min(batch, len(pairs)) // 2 * 2,
                                                   "images_per_class": 2}, torch.Generator().manual_seed(0))
    with BatchLoader(images, sampler, transform, sampler.gen, torch.Generator().manual_seed(1), workers) as loader:
        next(loader)
        loader.wait = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            next(loader)
            step()
        total = time.perf_counter() - start
    return total / steps, loader.wait / total


def rate(work, count: int) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    main()

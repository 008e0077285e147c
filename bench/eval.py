"""Evaluation at Stanford Online Products scale: hdml.eval.metrics vs pytorch-metric-learning.

Builds SOP-sized synthetic embeddings (60,502 x 512, 11,316 classes of 2-12 points; --small:
an eighth of that), then times each side in its own subprocess, so that each peak RSS is its
own:

- hdml: `hdml.eval.metrics.evaluate` with K = 1, 10, 100, 1000: Recall@K, MAP@R, R-precision, NMI, F1,
  its searches on --device (default auto: faiss, on its GPU if it has one; `cpu`, `cuda`,
  `torch:cpu`, `torch:cuda`: see `hdml.eval.metrics.resolve_device`), timed after one tiny search
  there, so that CUDA's and cuBLAS's start-up, which a training process has already paid, is
  left out.
- hdml-kmeans++: the same with the clustering the authors' code used and the suite's default
  (`kmeans_algorithm="kmeans++"`: k-means++ seeding, 10 restarts, best inertia), to measure
  what that costs at this size against one Lloyd run (skip it with --no-kmeans-pp).
- PML: `AccuracyCalculator(include=(NMI, precision_at_1, mean_average_precision_at_r,
  r_precision), k="max_bin_count")` with its defaults (faiss k-means, niter=20, seed 1234).

--clustering times the clustering alone at this size instead, in one process: the authors'
k-means++ (`kmeans_algorithm="kmeans++"`) in numpy and in torch (`hdml.eval.kmeans`, on
--device's torch device: torch:cpu unless it names CUDA), each as a measured prefix (--steps
seeding steps, --lloyd-iters Lloyd iterations at full size) extrapolated explicitly, beside faiss's
Lloyd (`kmeans_algorithm="faiss"`, 20 iterations) timed whole.

hdml (one Lloyd run, `kmeans_algorithm="faiss"`) and PML get the same L2-normalised float32 embeddings
and the same k-means seed (1234), so every shared metric should be identical. Prints both times,
their ratio, both peak RSS, and whether each target is met: time <= 0.6 x PML's, identical shared
metrics, peak memory <= 1/3 of PML's, and on a GPU the whole evaluation in <= 3 s (the H100 target).

    python bench/eval.py            # full size (minutes on 2 cores)
    python bench/eval.py --small
    python bench/eval.py --device cuda    # on a CUDA machine: faiss's GPU, else torch's
    python bench/eval.py --device cuda --reference cpu   # vs hdml on faiss's CPU, no PML needed
    python bench/eval.py --clustering [--steps 20 --lloyd-iters 1] [--device torch:cuda --torch-steps 11315]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SEED = 1234  # faiss.Kmeans's default seed, which PML's FaissKMeans keeps
KS = [1, 10, 100, 1000]
SHARED = {"recall@1": "precision_at_1", "map@r": "mean_average_precision_at_r",
          "r_precision": "r_precision", "nmi": "NMI"}


def sop_like(n_classes: int, n: int, d: int, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points in classes of 2-12 (uniformly spread extra members), Gaussian around random
    class centres; sigma sets the difficulty."""
    rng = np.random.default_rng(seed)
    slots = np.repeat(np.arange(n_classes), 10)  # up to 10 members beyond the first two
    sizes = 2 + np.bincount(rng.choice(slots, size=n - 2 * n_classes, replace=False), minlength=n_classes)
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes))
    centres = rng.standard_normal((n_classes, d), dtype=np.float32)
    x = centres[labels] + np.float32(sigma) * rng.standard_normal((n, d), dtype=np.float32)
    return x, labels


def worker(side: str, data: Path, device: str) -> None:
    """Compute one side's metrics; print {metrics, seconds, peak_rss_mb, backend} as JSON."""
    from hdml.eval.metrics import evaluate, l2_normalise, resolve_device
    from hdml.eval.search import l2_index

    x, labels = np.load(data / "x.npy"), np.load(data / "labels.npy")
    backend = None
    if side in ("hdml", "hdml-kmeans++"):
        backend = resolve_device(device)
        l2_index(x[:64], 1, backend).search(x[:64], 1)  # device start-up, outside the timing
        algorithm = "faiss" if side == "hdml" else "kmeans++"

        def run() -> dict:
            return evaluate(x, labels, KS, seed=SEED, device=backend, kmeans_algorithm=algorithm)
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        x = l2_normalise(x)  # the exact array hdml.eval.metrics searches
        calc = AccuracyCalculator(include=tuple(SHARED.values()), k="max_bin_count")

        def run() -> dict:
            return calc.get_accuracy(x, labels)
    cpu0, start = cpu_seconds(), time.perf_counter()
    metrics = run()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"metrics": metrics, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak,
                      "backend": backend}))


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: less sensitive than wall time to
    other jobs on a shared machine."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def run_side(side: str, data: Path, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", side, "--data", str(data), "--device", device],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{side} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(f: Callable[[], object], device: str = "cpu") -> tuple[float, float]:
    """(wall, CPU) seconds of f(), waiting for a CUDA device's queue before stopping the clock."""
    cpu0, start = cpu_seconds(), time.perf_counter()
    f()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu0


def clustering(x: np.ndarray, k: int, steps: int, iters: int, device: str, torch_steps: int | None = None) -> None:
    """Time a prefix of the authors' clustering at full size and extrapolate it to one whole
    evaluation (seeding: k - 1 steps, all restarts together; Lloyd: restarts x (iterations + 1)
    assignment-and-means passes, an upper bound: late iterations search only the centres that
    moved), numpy and torch side by side (torch over `torch_steps` seeding steps if given: on a GPU
    the whole seeding takes seconds), with faiss's Lloyd timed whole."""
    import torch

    from hdml.eval.kmeans import KMEANS_PP_RESTARTS, _kmeanspp_seeds, _lloyd, kmeans, kmeanspp_seeds_torch, lloyd_torch
    from hdml.eval.metrics import l2_normalise

    x = l2_normalise(x)
    n, restarts = len(x), KMEANS_PP_RESTARTS
    torch_device = device.removeprefix("torch:") if "cuda" in device else "cpu"

    def rngs() -> list[np.random.Generator]:
        return [np.random.default_rng([SEED, r]) for r in range(restarts)]

    start = x[np.random.default_rng(SEED).permutation(n)[:k]]  # Lloyd's cost hardly depends on its start
    xt = torch.as_tensor(x, device=torch_device)
    x_sq = (xt * xt).sum(1)
    rows = []
    t_steps = min(torch_steps or steps, k - 1)
    for name, measured, seed_prefix, lloyd_prefix, dev in [
            ("numpy", steps, lambda: _kmeanspp_seeds(x, k, rngs(), stop=steps + 1),
             lambda: _lloyd(x, start.copy(), iters, -1.0, "cpu"), "cpu"),
            (f"torch:{torch_device}", t_steps, lambda: kmeanspp_seeds_torch(xt, k, rngs(), stop=t_steps + 1),
             lambda: lloyd_torch(xt, x_sq, torch.as_tensor(start, device=torch_device), iters, -1.0),
             torch_device)]:
        if dev != "cpu":  # CUDA's and cuBLAS's start-up, outside the timing
            timed(lambda: kmeanspp_seeds_torch(xt, k, rngs(), stop=2), dev)
        seeding, lloyd = timed(seed_prefix, dev), timed(lloyd_prefix, dev)
        rows.append((f"{name} seeding", seeding, f"{measured} of {k - 1} steps", (k - 1) / measured, ""))
        passes = iters + 1  # the first assignment, then one assignment and means step per iteration
        rows.append((f"{name} Lloyd", lloyd, f"{iters} iteration(s), {passes} passes", restarts * 21 / passes,
                     f" ({restarts} restarts x 20 iterations; x{301 / 21:.1f} at sklearn's cap of 300)"))
    rows.append(("faiss Lloyd (eval_kmeans: faiss)", timed(lambda: kmeans(x, k, SEED, device="cpu")),
                 "whole: 20 iterations", 1.0, ""))
    print(f"\nclustering, {n} x {x.shape[1]}, k = {k}, {restarts} restarts; load average {os.getloadavg()[0]:.2f}")
    print(f"{'':34} {'measured: wall (CPU)':22} {'part':28} projection for one evaluation: wall (CPU)")
    for name, (wall, cpu), part, scale, note in rows:
        print(f"{name:34} {duration(wall) + ' (' + duration(cpu) + ')':22} {part:28} "
              f"{duration(wall * scale)} ({duration(cpu * scale)}){note}")


def duration(seconds: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="an eighth of SOP: 7,563 x 512, 1,414 classes")
    p.add_argument("--sigma", type=float, default=2.2, help="within-class noise (2.2: Recall@1 about 0.7)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--device", default="auto",
                   help="where hdml.eval.metrics searches: auto, cpu, cuda, torch:cpu, torch:cuda (default auto: "
                        "faiss, on the GPU if this faiss has one)")
    p.add_argument("--reference", choices=["pml", "cpu"], default="pml",
                   help="what the hdml side is compared with: PML (default) or hdml.eval.metrics on faiss's CPU")
    p.add_argument("--no-kmeans-pp", action="store_true",
                   help="skip timing the authors' clustering (k-means++, 10 restarts), slow at full size on a CPU")
    p.add_argument("--clustering", action="store_true",
                   help="time the clustering alone: a prefix of k-means++ (numpy, torch) extrapolated, faiss's Lloyd")
    p.add_argument("--steps", type=int, default=20, help="--clustering: seeding steps measured (default 20)")
    p.add_argument("--lloyd-iters", type=int, default=1, help="--clustering: Lloyd iterations measured (default 1)")
    p.add_argument("--torch-steps", type=int, help="--clustering: seeding steps measured in torch (default --steps)")
    p.add_argument("--worker", choices=["hdml", "hdml-kmeans++", "pml"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.device)
        return

    n_classes, n = (1414, 7563) if args.small else (11316, 60502)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{n} x 512 embeddings, {n_classes} classes of 2-12")
    if args.clustering:
        clustering(sop_like(n_classes, n, 512, args.sigma, args.seed)[0], n_classes, args.steps, args.lloyd_iters,
                   args.device, args.torch_steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        x, labels = sop_like(n_classes, n, 512, args.sigma, args.seed)
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "labels.npy", labels)
        del x, labels
        ours = run_side("hdml", Path(tmp), args.device)
        pml = run_side("pml", Path(tmp), "cpu") if args.reference == "pml" else run_side("hdml", Path(tmp), "cpu")
        pp = None if args.no_kmeans_pp else run_side("hdml-kmeans++", Path(tmp), args.device)
    shared = SHARED if args.reference == "pml" else {k: k for k in ours["metrics"]}
    ref = "PML" if args.reference == "pml" else "hdml/cpu"
    print(f"load average {os.getloadavg()[0]:.2f} after both runs; hdml searched on {ours['backend']}")

    print(f"\nmetric         hdml.eval.metrics   {ref:<14} |diff|")
    for key, value in ours["metrics"].items():
        theirs = pml["metrics"].get(shared.get(key, ""))
        cells = f"{theirs:<14.10f} {abs(value - theirs):.1e}" if theirs is not None else "-"
        print(f"{key:<14} {value:<14.10f} {cells}")
    diff = max(abs(ours["metrics"][k] - pml["metrics"][v]) for k, v in shared.items())
    ratio = ours["seconds"] / pml["seconds"]
    cpu_ratio = ours["cpu_seconds"] / pml["cpu_seconds"]
    mem = ours["peak_rss_mb"] / pml["peak_rss_mb"]
    print(f"\nwall time hdml {ours['seconds']:.1f} s   {ref} {pml['seconds']:.1f} s   ratio {ratio:.2f}")
    print(f"CPU time  hdml {ours['cpu_seconds']:.1f} s   {ref} {pml['cpu_seconds']:.1f} s   ratio {cpu_ratio:.2f}")
    print(f"peak RSS  hdml {ours['peak_rss_mb']:.0f} MB   {ref} {pml['peak_rss_mb']:.0f} MB   ratio {mem:.2f}")
    print(f"\ntarget identical shared metrics:    {'met' if diff <= 1e-9 else 'NOT met'} (max |diff| {diff:.1e})")
    if args.reference == "pml":
        print(f"target time <= 0.6 x PML:           {'met' if ratio <= 0.6 else 'NOT met'} "
              f"(wall {ratio:.2f}, CPU {cpu_ratio:.2f})")
        print(f"target peak memory <= 1/3 of PML:   {'met' if mem <= 1 / 3 else 'NOT met'} ({mem:.2f})")
    if pp is not None:
        print(f"\nclustering as the authors (k-means++, 10 restarts, best inertia): whole evaluation "
              f"{pp['seconds']:.1f} s wall, {pp['cpu_seconds']:.1f} s CPU, peak RSS {pp['peak_rss_mb']:.0f} MB "
              f"(one Lloyd run: {ours['seconds']:.1f} s, {ours['cpu_seconds']:.1f} s CPU)")
        for key in ("nmi", "f1"):
            print(f"  {key}: k-means++ {pp['metrics'][key]:.6f}   one Lloyd run {ours['metrics'][key]:.6f}")
    if "cuda" in ours["backend"]:
        print(f"target GPU time <= 3 s (on an H100): {'met' if ours['seconds'] <= 3 else 'NOT met'} "
              f"({ours['seconds']:.2f} s)")


if __name__ == "__main__":
    main()

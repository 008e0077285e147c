"""The authors' clustering (`hdml.eval.metrics.kmeans_restarts`: k-means++ seeding, restarts, Lloyd,
least inertia) on a torch device, so that a GPU does the work that takes numpy CPU-hours at
Stanford Online Products' size (docs/benchmarks.md, "Clustering at SOP size"; the GPU time is
not measured yet).

Same algorithm, same random numbers: the seeding takes its draws from the numpy generators
`hdml.eval.metrics._kmeanspp_draws` returns, so it chooses the numpy path's centres wherever float32
rounding (another BLAS, another summation order) does not decide a near-tie, and Lloyd runs the
same steps (float64 means, scikit-learn's shift tolerance, empty clusters to the farthest points,
exact nearest centres with ties to the smaller index). No step waits on the host during the
seeding: the draws are on the device before it starts.

Memory on the device: the points (n d float32); per seeding step the candidates' distances
(restarts x trials x n float32) and the running sums (restarts x n float64); per Lloyd step one
block of point-to-centre distances (`TORCH_BLOCK_ELEMENTS` float32, 256 MiB on CUDA), the
float64 cluster sums (k d) and two sets of centres. At SOP's 60,502 x 512 with k = 11,316: the
points 124 MB; seeding 27 + 5 MB a step; Lloyd 256 MiB + 46 + 2 x 23 MB + 34 MB of float64
rows being summed: about 0.5 GB at the peak (the CUDA test bounds it).
"""
from __future__ import annotations

import numpy as np
import torch

from hdml.eval.metrics import TORCH_BLOCK_ELEMENTS, _full_precision_matmul, _kmeanspp_draws


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Squared distances of the points `idx` (rows) to every point (columns), in the numpy
    seeding's order of operations: -2 c.x + |x|^2 + |c|^2, clamped at 0."""
    return (torch.mm(x[idx], x.T).mul_(-2).add_(x_sq).add_(x_sq[idx, None])).clamp_(min=0)


def kmeanspp_seeds(x: torch.Tensor, k: int, rngs: list[np.random.Generator], stop: int | None = None) -> torch.Tensor:
    """`hdml.eval.metrics._kmeanspp_seeds` on x's device: (restarts, k) row indices of the centres
    (`stop`: only the first that many)."""
    n, r, dev = len(x), len(rngs), x.device
    first, uniforms = _kmeanspp_draws(rngs, n, k)
    trials = uniforms.shape[2]
    uniforms = torch.as_tensor(uniforms, device=dev)
    with _full_precision_matmul(), torch.autocast(dev.type, enabled=False):
        x_sq = (x * x).sum(1)
        chosen = torch.empty((r, k), dtype=torch.int64, device=dev)
        chosen[:, 0] = torch.as_tensor(first, device=dev)
        closest = _sq_dist(x, x_sq, chosen[:, 0])
        pot = closest.sum(1, dtype=torch.float64)
        rows = torch.arange(r, device=dev)
        for c in range(1, stop or k):
            cumulative = torch.cumsum(closest, 1, dtype=torch.float64)
            cand = torch.searchsorted(cumulative, uniforms[:, c - 1] * pot[:, None]).clamp_(max=n - 1)
            d = _sq_dist(x, x_sq, cand.ravel()).view(r, trials, n)
            torch.minimum(d, closest[:, None], out=d)
            pots = d.sum(2, dtype=torch.float64)
            best = pots.argmin(1)
            chosen[:, c] = cand[rows, best]
            closest, pot = d[rows, best], pots[rows, best]
    return chosen[:, :stop]


def nearest(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, squared distance) of each point's nearest centre, ties to the smaller index;
    points in blocks of TORCH_BLOCK_ELEMENTS / k rows, each block's distances computed in place
    in the product's memory (one block at a time on the device)."""
    k = len(centres)
    c_sq = (centres * centres).sum(1)
    step = max(1, TORCH_BLOCK_ELEMENTS.get(x.device.type, TORCH_BLOCK_ELEMENTS["cpu"]) // k)
    idx = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float32, device=x.device)
    for lo in range(0, len(x), step):
        d = torch.mm(x[lo:lo + step], centres.T).mul_(-2).add_(x_sq[lo:lo + step, None]).add_(c_sq).clamp_(min=0)
        dist[lo:lo + step], idx[lo:lo + step] = d.min(1)  # the first of equal minima
    return idx, dist


def lloyd(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, max_iter: int,
          tol: float) -> tuple[torch.Tensor, float]:
    """`hdml.eval.metrics._lloyd` on x's device: (clusters, inertia). Cluster sums in float64, whose
    sums of float32 values are exact in practice, so the order of CUDA's atomic adds does not
    change the float32 means."""
    k = len(centres)
    with _full_precision_matmul(), torch.autocast(x.device.type, enabled=False):
        assign, dist = nearest(x, x_sq, centres)
        for _ in range(max_iter):
            count = torch.bincount(assign, minlength=k)
            sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device)
            step = max(1, TORCH_BLOCK_ELEMENTS["cpu"] // x.shape[1])
            for lo in range(0, len(x), step):
                sums.index_add_(0, assign[lo:lo + step], x[lo:lo + step].double())
            new = (sums / count.clamp(min=1)[:, None]).float()
            empty = torch.nonzero(count == 0).ravel()
            if len(empty):
                farthest = torch.sort(dist, descending=True, stable=True).indices[:len(empty)]
                new[empty] = x[farthest]
            shift = float(((new.double() - centres.double()) ** 2).sum())
            centres = new
            assign, dist = nearest(x, x_sq, centres)
            if shift <= tol:
                break
    return assign, float(dist.sum(dtype=torch.float64))


def kmeans_restarts(x: np.ndarray, k: int, rngs: list[np.random.Generator], max_iter: int, tol: float,
                    device: str) -> np.ndarray:
    """`hdml.eval.metrics.kmeans_restarts`'s clustering of the float32 `x` on the torch `device`,
    after its argument checks: the least-inertia run, the first winning ties."""
    xt = torch.as_tensor(x, device=device)
    x_sq = (xt * xt).sum(1)
    best: tuple[torch.Tensor, float] | None = None
    for seeds in kmeanspp_seeds(xt, k, rngs):
        assign, inertia = lloyd(xt, x_sq, xt[seeds], max_iter, tol)  # indexing copies
        if best is None or inertia < best[1]:
            best = (assign, inertia)
    return best[0].cpu().numpy()

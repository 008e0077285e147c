"""hdml.eval.metrics against brute-force numpy references, pytorch-metric-learning and faiss.Kmeans."""
from __future__ import annotations

import functools
import json
import logging
import subprocess

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKMeans
from sklearn.metrics import normalized_mutual_info_score

from hdml.eval import kmeans as kmeans_module
from hdml.eval import metrics, retrieval, search
from hdml.eval.metrics import clustering_metrics, evaluate, kmeans, retrieval_metrics


def clustered(seed: int, n_classes: int = 40, sizes: tuple[int, int] = (2, 8), d: int = 16,
              sigma: float = 0.8, singletons: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random clustered float32 embeddings (not normalised), with sparse non-contiguous labels."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([rng.integers(sizes[0], sizes[1] + 1, n_classes), np.ones(singletons, int)])
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    centres = rng.standard_normal((len(counts), d))
    x = centres[labels] + sigma * rng.standard_normal((len(labels), d))
    return x.astype(np.float32), labels * 7 + 3


# --- brute-force references (float64, whole n x n matrix) -------------------------------------

def brute_order(x: np.ndarray) -> np.ndarray:
    """Row i: all j != i by increasing distance of the normalised rows, ties by smaller j."""
    z = x.astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sq = (z * z).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * z @ z.T
    n = len(z)
    order = [np.lexsort((np.arange(n), dist[i])) for i in range(n)]
    return np.array([o[o != i] for i, o in enumerate(order)])


def brute_retrieval(x: np.ndarray, labels: np.ndarray, ks: list[int],
                    order: np.ndarray | None = None) -> dict[str, float]:
    rel = labels[brute_order(x) if order is None else order] == labels[:, None]
    r = rel.sum(axis=1)
    out: dict[str, list[float]] = {f"recall@{k}": [] for k in ks} | {"map@r": [], "r_precision": []}
    for i in np.flatnonzero(r > 0):
        for k in ks:
            out[f"recall@{k}"].append(float(rel[i, :k].any()))
        top = rel[i, : r[i]]
        precision = np.cumsum(top) / np.arange(1, r[i] + 1)
        out["map@r"].append(float((precision * top).sum() / r[i]))
        out["r_precision"].append(float(top.sum() / r[i]))
    return {key: float(np.mean(v)) for key, v in out.items()}


def brute_clustering(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    n = len(labels)
    classes, cl = np.unique(labels), np.unique(clusters)
    table = np.array([[np.sum((labels == a) & (clusters == b)) for b in cl] for a in classes], float)
    p, pa, pb = table / n, table.sum(1) / n, table.sum(0) / n
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum()
    nmi = 2 * mi / (-(pa * np.log(pa)).sum() - (pb * np.log(pb)).sum())
    upper = np.triu(np.ones((n, n), bool), 1)
    same_class = (labels[:, None] == labels[None, :]) & upper
    same_cluster = (clusters[:, None] == clusters[None, :]) & upper
    tp = (same_class & same_cluster).sum()
    precision, recall = tp / same_cluster.sum(), tp / same_class.sum()
    return {"nmi": float(nmi), "f1": float(2 * precision * recall / (precision + recall))}


def codes_of(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


# --- retrieval --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_brute_force(seed: int) -> None:
    x, labels = clustered(seed)
    ks = [1, 2, 4, 8, 16]
    got = retrieval_metrics(metrics.l2_normalise(x), codes_of(labels), ks)
    assert got == pytest.approx(brute_retrieval(x, labels, ks), abs=1e-12)


def test_large_k_second_pass_matches_brute_force() -> None:
    """Noisy classes: many queries have no positive in their 64 nearest, so Recall@100 and
    @300 come from the second search (over those queries only, in chunks of 50)."""
    x, labels = clustered(2, n_classes=60, sizes=(2, 10), sigma=3.0)
    ks = [1, 10, 100, 300]
    rel = labels[brute_order(x)] == labels[:, None]
    assert (rel.any(1) & ~rel[:, :64].any(1)).sum() > 10
    got = retrieval_metrics(metrics.l2_normalise(x), codes_of(labels), ks, chunk=50)
    assert got == pytest.approx(brute_retrieval(x, labels, ks), abs=1e-12)
    assert got == retrieval_metrics(metrics.l2_normalise(x), codes_of(labels), ks)


def test_ties_break_by_smaller_index_by_hand() -> None:
    # 0, 1, 2 coincide (classes A, B, A); 3 is at distance^2 2 from all of them (class B).
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    labels = np.array(["A", "B", "A", "B"])
    # Neighbours: 0 -> 1,2,3; 1 -> 0,2,3; 2 -> 0,1,3; 3 -> 0,1,2. First positive at 2, 3, 1, 2.
    got = retrieval_metrics(x, codes_of(labels), [1, 2, 3, 4])
    assert got == {"recall@1": 0.25, "recall@2": 0.75, "recall@3": 1.0, "recall@4": 1.0,
                   "map@r": 0.25, "r_precision": 0.25}
    # k = 1: query 2's two nearest (0 and 1) tie with itself and leave it out.
    assert retrieval_metrics(x, codes_of(labels), [1])["recall@1"] == 0.25


@pytest.fixture(scope="module")
def exact_ties() -> tuple[np.ndarray, np.ndarray]:
    """Entries +-1/8 make every distance exact in float32, so ties are real; 2048 x 64 is above
    faiss's BLAS threshold. Rows 100-199 duplicate rows 0-99."""
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 2, (2048, 64)) * 2 - 1).astype(np.float32) / 8
    x[100:200] = x[:100]
    return x, brute_order(x)


@pytest.mark.parametrize("k", [10, 150])  # 150: faiss's reservoir selection instead of heaps
def test_ties_on_the_blas_path_match_lexicographic_ranking(exact_ties, k: int) -> None:
    x, order = exact_ties
    index = search.l2_index(x, k + 1)
    assert np.array_equal(retrieval._neighbours(index, x, np.arange(len(x)), k)[0], order[:, :k])
    labels = np.random.default_rng(k).integers(0, 300, len(x))
    got = retrieval_metrics(x, codes_of(labels), [1, 5, k])
    assert got == pytest.approx(brute_retrieval(x, labels, [1, 5, k], order), abs=1e-12)


def test_singletons_are_left_out_as_queries_but_stay_retrievable(caplog: pytest.LogCaptureFixture) -> None:
    # The singleton S (row 2) is the nearest neighbour of both A queries.
    x = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6]], np.float32)
    labels = np.array(["A", "A", "S"])
    with caplog.at_level(logging.WARNING, logger="hdml.eval.retrieval"):
        got = retrieval_metrics(x, codes_of(labels), [1, 2])
    assert got == {"recall@1": 0.0, "recall@2": 1.0, "map@r": 0.0, "r_precision": 0.0}
    assert "1 of 3 queries have no positive" in caplog.text


def test_singletons_match_brute_force_and_clustering_keeps_them() -> None:
    x, labels = clustered(4, singletons=15)
    got = evaluate(x, labels, [1, 2, 4, 8], seed=2, kmeans_algorithm="faiss")
    want = brute_retrieval(x, labels, [1, 2, 4, 8])
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-12)
    clusters = kmeans(metrics.l2_normalise(x), len(np.unique(labels)), seed=2)
    assert len(clusters) == len(labels)
    assert got["nmi"] == pytest.approx(brute_clustering(labels, clusters)["nmi"], abs=1e-12)


# --- clustering -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustering_metrics_match_brute_force_and_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, 300) * 5
    clusters = np.where(rng.random(300) < 0.6, labels // 5, rng.integers(0, 15, 300)) + 100
    got = clustering_metrics(labels, clusters)
    assert got == pytest.approx(brute_clustering(labels, clusters), abs=1e-12)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)


def test_perfect_clustering_gives_one() -> None:
    labels = np.repeat(["a", "b", "c", "d"], [3, 5, 2, 7])
    clusters = np.repeat([9, 4, 0, 2], [3, 5, 2, 7])  # same partition, other names
    got = clustering_metrics(labels, clusters)
    assert got["f1"] == 1.0
    assert got["nmi"] == pytest.approx(1.0, abs=1e-12)


def test_f1_by_hand() -> None:
    # Classes {0,1,2},{3,4}; clusters {0,1},{2,3,4}: 4 same-class pairs, 4 same-cluster pairs,
    # 2 in both (0-1, 3-4): precision = recall = F1 = 1/2.
    got = clustering_metrics(np.array([0, 0, 0, 1, 1]), np.array([5, 5, 6, 6, 6]))
    assert got["f1"] == 0.5


# --- k-means ----------------------------------------------------------------------------------

def faiss_kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0], km.iteration_stats


@pytest.mark.parametrize("seed", [0, 5])
def test_kmeans_equals_faiss_kmeans(seed: int) -> None:
    x, labels = clustered(seed, n_classes=150, sizes=(2, 12), d=32, sigma=1.5)
    x = metrics.l2_normalise(x)
    want, _ = faiss_kmeans(x, 150, seed)
    assert np.array_equal(kmeans(x, 150, seed), want)


@pytest.mark.parametrize("m", [1, 30])
def test_kmeans_first_step_from_neighbours_equals_faiss(m: int) -> None:
    """The first assignment read off each point's m nearest others; with m = 1 most points
    have no sampled neighbour and search all centroids."""
    x, _ = clustered(9, n_classes=150, sizes=(2, 12), d=32, sigma=1.5)
    x = metrics.l2_normalise(x)
    nbr, dist = retrieval._neighbours(search.l2_index(x, m + 1), x, np.arange(len(x)), m)
    want, _ = faiss_kmeans(x, 150, 4)
    assert np.array_equal(kmeans(x, 150, 4, neighbours=(nbr, dist)), want)


def duplicated(seed: int, n_distinct: int, copies: int) -> np.ndarray:
    """Each point about `copies` times: duplicated initial centroids leave clusters empty."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_distinct, 8)).astype(np.float32)
    return metrics.l2_normalise(base[rng.integers(0, n_distinct, copies * n_distinct)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_equals_faiss_with_empty_cluster_splits(seed: int) -> None:
    """Many empty clusters, which faiss splits (long draws, largest-cluster fallback)."""
    x = duplicated(seed, 300 + 50 * seed, 3)
    want, stats = faiss_kmeans(x, 300 + 50 * seed, seed)
    assert sum(s["nsplit"] for s in stats) > 500
    assert np.array_equal(kmeans(x, 300 + 50 * seed, seed), want)


@pytest.mark.parametrize("seed", [1, 3])
def test_kmeans_equals_faiss_with_early_stop(seed: int) -> None:
    """faiss stops once the objective repeats, here while splits still move centroids."""
    x = duplicated(seed, 250, 2)
    want, stats = faiss_kmeans(x, 250, seed)
    assert len(stats) < 20
    assert np.array_equal(kmeans(x, 250, seed), want)


def test_kmeans_is_deterministic_and_seeded() -> None:
    x = metrics.l2_normalise(clustered(6, n_classes=80, sigma=2.0)[0])
    a = kmeans(x, 80, seed=3)
    assert np.array_equal(a, kmeans(x, 80, seed=3))
    assert not np.array_equal(a, kmeans(x, 80, seed=4))


def test_kmeans_rejects_bad_arguments() -> None:
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="k = 4 clusters for 3 points"):
        kmeans(x, 4)
    with pytest.raises(ValueError, match="seed"):
        kmeans(x, 2, seed=-1)



def plain_kmeanspp(x: np.ndarray, k: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """scikit-learn's greedy k-means++ written plainly, as hdml.eval.metrics had it before its
    speed-ups: draws step by step, whole-array passes, a fresh array each step."""
    n, trials = len(x), 2 + int(np.log(k))
    x_sq = (x * x).sum(1)

    def sq_dist(centres: np.ndarray) -> np.ndarray:
        d = centres @ x.T
        d *= np.float32(-2)
        d += x_sq
        d += (centres * centres).sum(1, keepdims=True)
        return np.maximum(d, 0, out=d)

    chosen = np.empty((len(rngs), k), dtype=np.int64)
    chosen[:, 0] = [g.integers(n) for g in rngs]
    closest = sq_dist(x[chosen[:, 0]])
    pot = closest.sum(1, dtype=np.float64)
    rows = np.arange(len(rngs))
    for c in range(1, k):
        cumulative = np.cumsum(closest, axis=1, dtype=np.float64)
        cand = np.stack([np.searchsorted(cumulative[i], g.random(trials) * pot[i]) for i, g in enumerate(rngs)])
        cand = np.minimum(cand, n - 1)
        d = sq_dist(x[cand.ravel()]).reshape(len(rngs), trials, n)
        np.minimum(d, closest[:, None, :], out=d)
        pots = d.sum(2, dtype=np.float64)
        best = pots.argmin(1)
        chosen[:, c] = cand[rows, best]
        closest, pot = d[rows, best], pots[rows, best]
    return chosen


# the demo's test split (digits 5-9: 898 points, 64-d embeddings, 5 clusters), then more of both
@pytest.mark.parametrize(("n", "k", "d", "seed"), [(898, 5, 64, 0), (898, 5, 64, 1), (5000, 40, 16, 2)])
def test_kmeanspp_seeding_is_the_plain_seeding_bit_for_bit(n: int, k: int, d: int, seed: int) -> None:
    """The pre-drawn seeding with its reused buffer chooses exactly the plain one's centres, so
    clusters and the demo's metrics.csv do not change."""
    x, _ = clustered(seed, n_classes=k, sizes=(n // k, n // k + 1), d=d, sigma=1.0)
    x = metrics.l2_normalise(x[:n])
    rngs = [np.random.default_rng([seed, r]) for r in range(10)]
    want = plain_kmeanspp(x, k, rngs)
    rngs = [np.random.default_rng([seed, r]) for r in range(10)]
    assert np.array_equal(kmeans_module._kmeanspp_seeds(x, k, rngs), want)
    assert np.array_equal(kmeans_module._kmeanspp_seeds(x, k, [np.random.default_rng([seed, r]) for r in range(10)],
                                                  stop=3), want[:, :3])


@pytest.mark.parametrize(("n", "k"), [(200, 7), (200, 300), (3000, 40)])  # 300 > 200 points: empty clusters
def test_cluster_sums_are_reduceats_sums_bit_for_bit(n: int, k: int) -> None:
    """Lloyd's float64 cluster sums equal np.add.reduceat down the columns of the points sorted
    by cluster, as hdml.eval.metrics computed them before (the same additions in the same order),
    on values whose float64 sums round (an order of addition that differs would show)."""
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((n, 40)) * 10.0 ** rng.integers(-30, 30, (n, 40))).astype(np.float32)
    assign = rng.integers(k, size=n)
    order = np.argsort(assign, kind="stable")
    count = np.bincount(assign, minlength=k)
    full = np.flatnonzero(count)
    starts = np.concatenate([[0], np.cumsum(count[full])[:-1]])
    want = np.zeros((k, 40))
    want[full] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    got_count, got = kmeans_module._cluster_sums(np.ascontiguousarray(x.T, dtype=np.float64), assign, k)
    assert np.array_equal(got_count, count) and np.array_equal(got, want)
    sequential = np.stack([functools.reduce(np.add, x[assign == j].astype(np.float64)) for j in full])
    assert not np.array_equal(want[full], sequential)

# --- against pytorch-metric-learning ----------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 3])
def test_matches_pytorch_metric_learning(seed: int) -> None:
    x, labels = clustered(seed, n_classes=60, sigma=1.2, singletons=4)
    ours = evaluate(x, labels, [1, 2, 4, 8], seed=seed, kmeans_algorithm="faiss")
    clusters = kmeans(metrics.l2_normalise(x), len(np.unique(labels)), seed)
    calc = AccuracyCalculator(include=("NMI", "precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", device=torch.device("cpu"),
                              kmeans_func=lambda *_: torch.from_numpy(clusters))
    pml = calc.get_accuracy(metrics.l2_normalise(x), labels)
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert ours["nmi"] == pytest.approx(pml["NMI"], abs=1e-6)
    # PML's own faiss k-means with the same settings gives the same clusters, hence NMI.
    calc = AccuracyCalculator(include=("NMI",), device=torch.device("cpu"),
                              kmeans_func=FaissKMeans(niter=20, seed=seed))
    assert ours["nmi"] == pytest.approx(calc.get_accuracy(metrics.l2_normalise(x), labels)["NMI"], abs=1e-6)


# --- evaluate and bad input -------------------------------------------------------------------

def test_evaluate_keys_and_determinism() -> None:
    x, labels = clustered(7)
    got = evaluate(x, labels, [1, 10], seed=1)
    assert list(got) == ["recall@1", "recall@10", "map@r", "r_precision", "nmi", "f1"]
    assert all(type(v) is float and 0 <= v <= 1 for v in got.values())
    assert got == evaluate(x, labels, [1, 10], seed=1)


@pytest.mark.parametrize(("embeddings", "labels", "ks", "message"), [
    (np.ones((4, 3)), np.array([0, 0, 1]), [1], "3 labels for 4 embeddings"),
    (np.array([[1.0, 0], [np.nan, 1], [0, 1], [1, 1]]), np.array([0, 0, 1, 1]), [1], "NaN"),
    (np.ones((4, 3)), np.array([5, 5, 5, 5]), [1], "single class"),
    (np.ones((4, 3)), np.array([0, 1, 2, 3]), [1], "every class has one member"),
    (np.ones(4), np.array([0, 0, 1, 1]), [1], "2-d"),
    (np.ones((4, 3)), np.array([[0, 0], [1, 1]]), [1], "labels: expected a 1-d array"),
    (np.ones((4, 3)), np.array([0, 0, 1, 1]), [0, 2], "ks"),
])
def test_bad_input_raises(embeddings: np.ndarray, labels: np.ndarray, ks: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(embeddings, labels, ks)


# --- CLI --------------------------------------------------------------------------------------

def test_cli_metrics(tmp_path, venv_env: dict[str, str]) -> None:
    x, labels = clustered(8)
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "l.npy", labels)
    cmd = ["hdml", "metrics", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    out = subprocess.run([*cmd, "--ks", "1", "3", "--seed", "2"], env=venv_env, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == pytest.approx(evaluate(x, labels, [1, 3], seed=2), abs=1e-15)

    np.save(tmp_path / "l.npy", labels[:-1])
    bad = subprocess.run(cmd, env=venv_env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "l.npy" in bad.stderr and "labels for" in bad.stderr


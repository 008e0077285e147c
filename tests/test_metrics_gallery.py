"""evaluate() with a separate gallery (datasets with query/gallery splits), and without one, against
pytorch-metric-learning's AccuracyCalculator.get_accuracy(query, query_labels, reference,
reference_labels, ref_includes_query) and a float64 brute force."""
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from hdml.eval import metrics
from hdml.eval.metrics import evaluate, kmeans

PML_METRICS = ("NMI", "precision_at_1", "mean_average_precision_at_r", "r_precision")


def split_sets(seed: int, n_classes: int = 50, d: int = 16) -> tuple[np.ndarray, ...]:
    """Query and gallery embeddings of overlapping classes: some query classes are missing from
    the gallery (no positive), some gallery classes have no query."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))

    def draw(classes: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(classes, rng.integers(lo, hi + 1, len(classes))))
        return (centres[labels] + 0.9 * rng.standard_normal((len(labels), d))).astype(np.float32), labels * 5 + 1

    query, query_labels = draw(np.arange(0, 44), 1, 6)
    gallery, gallery_labels = draw(np.arange(4, n_classes), 1, 9)
    return query, query_labels, gallery, gallery_labels


def pml(query, query_labels, reference, reference_labels, ref_includes_query, clusters) -> dict[str, float]:
    calc = AccuracyCalculator(include=PML_METRICS, k="max_bin_count", device=torch.device("cpu"),
                              kmeans_func=lambda *_: torch.from_numpy(clusters))
    return calc.get_accuracy(metrics.l2_normalise(query), query_labels, metrics.l2_normalise(reference),
                             reference_labels, ref_includes_query=ref_includes_query)


def assert_same(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["nmi"] == pytest.approx(theirs["NMI"], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separate_gallery_matches_pytorch_metric_learning(seed: int) -> None:
    q, ql, g, gl = split_sets(seed)
    ours = evaluate(q, ql, [1, 2, 4], seed=seed, gallery=g, gallery_labels=gl, kmeans_algorithm="faiss")
    clusters = kmeans(metrics.l2_normalise(q), len(np.unique(ql)), seed)
    assert_same(ours, pml(q, ql, g, gl, False, clusters))


@pytest.mark.parametrize("seed", [0, 4])
def test_own_gallery_matches_pytorch_metric_learning_with_reference_equal_to_query(seed: int) -> None:
    _, _, x, labels = split_sets(seed)
    ours = evaluate(x, labels, [1, 2, 4], seed=seed, kmeans_algorithm="faiss")
    clusters = kmeans(metrics.l2_normalise(x), len(np.unique(labels)), seed)
    assert_same(ours, pml(x, labels, x, labels, True, clusters))


def brute_gallery(q, ql, g, gl, ks) -> dict[str, float]:
    """Float64 distances over the whole query x gallery matrix, ties by smaller gallery index."""
    qn = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g.astype(np.float64) / np.linalg.norm(g, axis=1, keepdims=True)
    dist = ((qn[:, None, :] - gn[None, :, :]) ** 2).sum(-1)
    hits = {K: [] for K in ks}
    ap, rp = [], []
    for i in range(len(q)):
        rel = gl[np.lexsort((np.arange(len(g)), dist[i]))] == ql[i]
        r = int(rel.sum())
        if r == 0:
            continue
        for K in ks:
            hits[K].append(rel[:K].any())
        top = rel[:r]
        ap.append(sum(top[:j + 1].sum() / (j + 1) for j in range(r) if top[j]) / r)
        rp.append(top.sum() / r)
    out = {f"recall@{K}": float(np.mean(hits[K])) for K in ks}
    return {**out, "map@r": float(np.mean(ap)), "r_precision": float(np.mean(rp))}


def test_separate_gallery_recall_at_large_k_matches_brute_force() -> None:
    """K beyond the first search (64) takes the second pass; K beyond the gallery is capped."""
    q, ql, g, gl = split_sets(5)
    ks = [1, 5, 70, 150, len(g) + 10]
    ours = evaluate(q, ql, ks, gallery=g, gallery_labels=gl)
    want = brute_gallery(q, ql, g, gl, ks)
    for key, value in want.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert ours[f"recall@{len(g) + 10}"] == 1.0


def test_a_gallery_is_not_its_own_query_set() -> None:
    """The query set searched as a separate gallery finds each query itself first (recall@1 = 1);
    as its own gallery it does not."""
    _, _, x, labels = split_sets(6)
    assert evaluate(x, labels, [1], gallery=x, gallery_labels=labels)["recall@1"] == 1.0
    assert evaluate(x, labels, [1])["recall@1"] < 1.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gallery": np.ones((3, 4), np.float32)}, "give both or neither"),
    ({"gallery": np.ones((3, 5), np.float32), "gallery_labels": np.array([1, 1, 6])}, "gallery: 5-d embeddings"),
    ({"gallery": np.ones((3, 4), np.float32), "gallery_labels": np.array([1, 6])}, "gallery_labels: 2 labels"),
    ({"gallery": np.full((2, 4), np.nan, np.float32), "gallery_labels": np.array([1, 6])}, "gallery: 2 rows"),
    ({"gallery": np.ones((2, 4), np.float32), "gallery_labels": np.array([99, 98])}, "no query's class"),
])
def test_bad_gallery_names_the_input(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    q, ql = rng.standard_normal((6, 4)).astype(np.float32), np.array([1, 1, 6, 6, 11, 11])
    with pytest.raises(ValueError, match=message):
        evaluate(q, ql, [1], **kwargs)


def test_query_set_of_singletons_is_fine_with_a_gallery() -> None:
    """Every query class once (as in a query split) is an error only without a gallery."""
    rng = np.random.default_rng(1)
    q, ql = rng.standard_normal((4, 4)).astype(np.float32), np.array([0, 1, 2, 3])
    g, gl = rng.standard_normal((8, 4)).astype(np.float32), np.repeat([0, 1, 2, 3], 2)
    assert set(evaluate(q, ql, [1], gallery=g, gallery_labels=gl)) >= {"recall@1", "map@r", "nmi"}
    with pytest.raises(ValueError, match="every class has one member"):
        evaluate(q, ql, [1])


def test_cli_metrics_with_a_gallery(tmp_path, capsys) -> None:
    import json

    from hdml.cli import main

    q, ql, g, gl = split_sets(7)
    for name, array in {"q": q, "ql": ql, "g": g, "gl": gl}.items():
        np.save(tmp_path / f"{name}.npy", array)
    args = ["metrics", "--embeddings", str(tmp_path / "q.npy"), "--labels", str(tmp_path / "ql.npy"), "--ks", "1", "4"]
    assert main([*args, "--gallery-embeddings", str(tmp_path / "g.npy"),
                 "--gallery-labels", str(tmp_path / "gl.npy")]) == 0
    assert json.loads(capsys.readouterr().out) == evaluate(q, ql, [1, 4], gallery=g, gallery_labels=gl)
    assert main([*args, "--gallery-embeddings", str(tmp_path / "g.npy")]) == 2
    assert "--gallery-labels go together" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cuda", "torch:cuda"])
def test_separate_gallery_on_the_gpu_equals_the_cpu(device: str) -> None:
    """The gallery search on a GPU backend (faiss's when it has CUDA, else torch's) gives the CPU's
    retrieval metrics: random continuous data, so that float-rounding near-ties, which may order
    differently, are too rare at this size to move a metric."""
    q, ql, g, gl = split_sets(8)
    cpu = evaluate(q, ql, [1, 2, 4, 70], device="cpu", gallery=g, gallery_labels=gl)
    gpu = evaluate(q, ql, [1, 2, 4, 70], device=device, gallery=g, gallery_labels=gl)
    for key in ("recall@1", "recall@2", "recall@4", "recall@70", "map@r", "r_precision"):
        assert gpu[key] == pytest.approx(cpu[key], abs=1e-9), key

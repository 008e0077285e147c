"""`eval_kmeans: sklearn`, scikit-learn's KMeans called as the authors' lib/evaluation.py calls it,
checked against scikit-learn directly on the CPU; and bench/authors_eval.py, which runs their
evaluation itself beside the suite's (needs their checkout and a Python with TensorFlow)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier

from hdml import cli
from hdml.core.config import build_run_config
from hdml.eval.metrics import evaluate, kmeans_sklearn, l2_normalise

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import authors_eval  # noqa: E402 (bench/ is not a package)


def pairwise_f1(classes: np.ndarray, clusters: np.ndarray) -> float:
    """F1 over all pairs of points, by enumeration (spec section 7)."""
    i, j = np.triu_indices(len(classes), 1)
    same_class, same_cluster = classes[i] == classes[j], clusters[i] == clusters[j]
    tp = float((same_class & same_cluster).sum())
    precision, recall = tp / same_cluster.sum(), tp / same_class.sum()
    return 2 * precision * recall / (precision + recall)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return authors_eval.synthetic(n_classes=12, per_class=15, d=16, seed=3)


def test_sklearn_choice_is_scikit_learns_kmeans_called_as_the_authors_call_it(data):
    z, labels = data
    x = l2_normalise(z)
    reference = KMeans(n_clusters=12, random_state=1, n_init=10).fit(x)
    got = evaluate(z, labels, [1, 2], seed=5, device="cpu", kmeans_algorithm="sklearn")
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, reference.labels_), abs=1e-12)
    assert got["f1"] == pytest.approx(pairwise_f1(labels, reference.labels_), abs=1e-12)
    assert 0.3 < got["nmi"] < 1  # a partition with errors, not a trivially perfect one
    # random_state=1 whatever the run's seed, as their code
    assert evaluate(z, labels, [1], seed=0, device="cpu", kmeans_algorithm="sklearn")["nmi"] == got["nmi"]
    # one restart (today's n_init default) is another clustering on these data: the pinned 10 matters
    single = KMeans(n_clusters=12, random_state=1, n_init=1).fit(x).labels_
    assert normalized_mutual_info_score(reference.labels_, single) < 1


def test_their_nearest_centre_assignment_is_kmeans_own_partition(data):
    """lib/evaluation.py assigns each point by a 1-NN over the centres and names each cluster by one
    of its points: the same partition as KMeans's labels, so the suite keeps those."""
    x = l2_normalise(data[0])
    fitted = KMeans(n_clusters=12, random_state=1, n_init=10).fit(x)
    nearest = KNeighborsClassifier(n_neighbors=1).fit(fitted.cluster_centers_, range(12)).predict(x)
    assert normalized_mutual_info_score(nearest, kmeans_sklearn(x, 12)) == pytest.approx(1.0, abs=1e-12)
    assert (nearest == kmeans_sklearn(x, 12)).all()


def test_config_and_cli_take_the_sklearn_choice(data, tmp_path, capsys):
    assert build_run_config({}, {"eval_kmeans": "sklearn"})["eval_kmeans"] == "sklearn"
    z, labels = data
    np.save(tmp_path / "e.npy", z)
    np.save(tmp_path / "l.npy", labels)
    cli.main(["metrics", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy"),
              "--kmeans", "sklearn", "--ks", "1"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["nmi"] == evaluate(z, labels, [1], device="cpu", kmeans_algorithm="sklearn")["nmi"]


AUTHORS = os.environ.get("HDML_AUTHORS_PATH")
PYTHON = os.environ.get("HDML_AUTHORS_PYTHON", authors_eval.AUTHORS_PYTHON)


@pytest.mark.skipif(not AUTHORS or not Path(PYTHON).exists(), reason=(
    "needs a checkout of wzzheng/HDML at fa03ef0 and a Python with TensorFlow: HDML_AUTHORS_PATH=/path/to/HDML "
    "HDML_AUTHORS_PYTHON=/path/to/python (pip install -e '.[authors]') python -m pytest tests/test_authors_eval.py"))
def test_their_evaluation_and_the_suites_agree_on_the_same_embeddings():
    table = authors_eval.rows(Path(AUTHORS), python=PYTHON)
    assert [r["term"] for r in table if not r["passed"]] == []
    assert {r["term"] for r in table} >= {"NMI", "F1", "Recall@1", "Recall@8"}

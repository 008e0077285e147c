"""The authors' evaluation, executed: their lib/evaluation.py (`evaluate_cluster`, `evaluate_recall`,
hence `compute_clutering_metric`, `distance_matrix`, `compute_recall_at_K`) on the same saved
embeddings as the suite's `hdml metrics --kmeans sklearn`, NMI, F1 and Recall@K compared.

    HDML_AUTHORS_PATH=/path/to/HDML python bench/authors_eval.py [--embeddings RUN/embeddings.npz]

PATH is a checkout of github.com/wzzheng/HDML at fa03ef0 outside this project (no licence). Their
side runs in a Python with TensorFlow (`--authors-python`, default $HDML_AUTHORS_PYTHON or
this Python; `pip install -e '.[authors]'` gives it TensorFlow), through
bench/authors_shims.py (their `import tensorflow as tf`, Python 2 prints) and `np.in1d` restored as
`np.isin` where numpy (2.4) dropped it; the suite's side in
this Python. Their `Evaluation` L2-normalises in the graph (`tf.nn.l2_normalize`), then clusters
with k = `num_class` (hard-coded 98 in main_npair.py; here the number of test classes, the
suite's k, so that the algorithm is what is compared) and takes Recall@K for their K = 1..32.
Their `KMeans(n_clusters, random_state=1)` ran with the scikit-learn of 2019, whose `n_init`
default was 10; today's default ("auto") is one run, so their call is made with that default
pinned to 10 (`eval_kmeans: sklearn` pins it too); the note says what today's default gives.
Without --embeddings: 2,000 x 64 float32 embeddings of 100 classes (seeded, clustered).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from authors_rows import print_table, row  # noqa: E402 (after the path set-up above)
from hdml.eval.evaluate import load_embeddings  # noqa: E402 (after the path set-up above)
from hdml.eval.metrics import evaluate, kmeans_sklearn, l2_normalise  # noqa: E402 (after the path set-up above)

KS = [1, 2, 4, 8, 16, 32]  # FLAGS.py:53 `neighbours`
AUTHORS_PYTHON = os.environ.get("HDML_AUTHORS_PYTHON", sys.executable)  # an interpreter with the [authors] extra
# Run by the authors' Python: argv = shims folder, checkout, embeddings .npy, labels .npy, k, out .json, Ks
THEIR_SIDE = """
import functools, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import authors_shims
from sklearn import cluster

if not hasattr(np, "in1d"):  # compute_recall_at_K calls np.in1d, which numpy 2.4 removed: np.isin is its successor
    np.in1d = np.isin
mods = authors_shims.load(sys.argv[2], [], evaluation=True)
ev, tf = mods["lib.evaluation"], authors_shims.tensorflow_v1()
z, labels, k = np.load(sys.argv[3]), np.load(sys.argv[4]), int(sys.argv[5])
with tf.Session() as sess:  # their Evaluation: y = tf.nn.l2_normalize(embedding, dim=1) in the graph
    y = sess.run(tf.nn.l2_normalize(tf.constant(z), 1))
out = {"normalised": y.tolist()}
out["nmi_default_n_init"], out["f1_default_n_init"] = ev.evaluate_cluster(y, labels, k)
ev.cluster = type("cluster", (), {"KMeans": functools.partial(cluster.KMeans, n_init=10)})
out["nmi"], out["f1"] = ev.evaluate_cluster(y, labels, k)
out["recalls"] = ev.evaluate_recall(y, labels, neighbours=json.loads(sys.argv[7]))
json.dump(out, open(sys.argv[6], "w"))
"""


def synthetic(n_classes: int = 100, per_class: int = 20, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered embeddings with overlapping classes, so that clustering and retrieval make errors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d))
    labels = np.repeat(np.arange(n_classes), per_class)
    z = centres[labels] + 1.6 * rng.normal(size=(len(labels), d))
    return z.astype(np.float32), labels


def theirs(authors: Path, z: np.ndarray, labels: np.ndarray, k: int, python: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "z.npy", z)
        np.save(tmp / "labels.npy", labels)
        cmd = [python, "-c", THEIR_SIDE, str(REPO / "bench"), str(authors), str(tmp / "z.npy"),
               str(tmp / "labels.npy"), str(k), str(tmp / "out.json"), json.dumps(KS)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"their evaluation failed ({python}):\n{done.stderr[-3000:]}")
        return json.loads((tmp / "out.json").read_text())


def rows(authors: Path, embeddings: Path | None = None, python: str = AUTHORS_PYTHON) -> list[dict[str, Any]]:
    """NMI, F1, Recall@K of their lib/evaluation.py and of the suite (`eval_kmeans: sklearn`) on
    the same embeddings; also the L2-normalised embeddings and the partitions themselves."""
    if embeddings is None:
        z, labels = synthetic()
    else:
        saved = load_embeddings(embeddings)
        z, labels = saved.query.astype(np.float32), saved.labels
    k = len(np.unique(labels))
    them = theirs(authors, z, labels, k, python)
    ours = evaluate(z, labels, KS, device="cpu", kmeans_algorithm="sklearn")
    y_them, y_ours = np.asarray(them["normalised"], dtype=np.float32), l2_normalise(z)
    partition_them = kmeans_sklearn(y_them, k)  # the partition their NMI was computed from
    out = [row("L2-normalised embeddings (tf.nn.l2_normalize vs hdml.eval.metrics.l2_normalise)",
               float(np.abs(y_them - y_ours).max()), 1e-6, "float32 rounding; the clusterings below start from each"),
           row("k-means partition (points assigned differently)",
               float((partition_them != kmeans_sklearn(y_ours, k)).sum()), 0.0,
               f"{len(z)} points, k = {k}, KMeans(random_state=1, n_init=10) on either normalisation"),
           row("NMI", abs(them["nmi"] - ours["nmi"]), 1e-12,
               f"authors {them['nmi']:.6f}, suite {ours['nmi']:.6f}; their call under today's n_init default "
               f"('auto', one run): {them['nmi_default_n_init']:.6f}"),
           row("F1", abs(them["f1"] - ours["f1"]), 1e-12,
               f"authors {them['f1']:.6f}, suite {ours['f1']:.6f}; today's n_init default: "
               f"{them['f1_default_n_init']:.6f}")]
    for kk, recall in zip(KS, them["recalls"], strict=True):
        out.append(row(f"Recall@{kk}", abs(recall - ours[f"recall@{kk}"]), 0.0,
                       f"authors {recall:.6f}, suite {ours[f'recall@{kk}']:.6f}"))
    return out



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, default=os.environ.get("HDML_AUTHORS_PATH"),
                        help="checkout of wzzheng/HDML at fa03ef0 (default: $HDML_AUTHORS_PATH)")
    parser.add_argument("--embeddings", type=Path, help="a run's embeddings.npz (default: synthetic)")
    parser.add_argument("--authors-python", default=AUTHORS_PYTHON, help="a Python with TensorFlow")
    args = parser.parse_args()
    if args.authors is None:
        parser.error("no checkout: pass --authors PATH or set HDML_AUTHORS_PATH")
    table = rows(args.authors, args.embeddings, args.authors_python)
    sys.exit(print_table(table))


if __name__ == "__main__":
    main()

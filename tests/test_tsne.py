"""`hdml tsne`: Figure 8's t-SNE as its own job. The coordinates are scikit-learn's Barnes-Hut
t-SNE of the L2-normalised test embeddings with the settings the report used to run itself, the
file reads back exactly, and the report's figure is drawn from the file alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from hdml.cli import main
from hdml.eval.aggregate import run_key
from hdml.eval.tsne import COLUMNS, read_map, tsne_map, write_map
from hdml.report.figures import tsne_figure
from test_aggregate import write_embeddings


def write_maps(root: Path) -> list[Path]:
    """`hdml tsne`'s map of every run under root/runs, where the workflow puts it (root/tsne/...)."""
    paths = []
    for npz in sorted(root.glob("runs/*/*/*/*/embeddings.npz")):
        k = run_key(npz.parent)
        out = root / "tsne" / k["dataset"] / k["method"] / k["variant"] / f"seed{k['seed']}.csv"
        with threadpool_limits(1):  # t-SNE's OpenMP threads on a shared machine
            write_map(out, tsne_map(npz))
        paths.append(out)
    return paths


def run(tmp_path: Path, classes: int, per_class: int) -> Path:
    folder = tmp_path / "runs/cub200/hdml-npair/default/seed0"
    folder.mkdir(parents=True)
    write_embeddings(folder, classes=classes, per_class=per_class, seed=3)
    return folder / "embeddings.npz"


def oracle(z: np.ndarray) -> np.ndarray:
    """scikit-learn's Barnes-Hut t-SNE as the report ran it: unit-length rows, PCA init, seed 0,
    perplexity 30 or (n - 1) / 3 for fewer than 91 points."""
    z = z.astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    with threadpool_limits(1):
        return TSNE(n_components=2, method="barnes_hut", init="pca", random_state=0,
                    perplexity=min(30.0, (len(z) - 1) / 3)).fit_transform(z)


def test_coordinates_are_sklearns_tsne_and_read_back_exactly(tmp_path):
    npz = run(tmp_path, classes=5, per_class=8)
    with threadpool_limits(1):
        m = tsne_map(npz)
    with np.load(npz) as data:
        z, labels = data["embeddings"], data["labels"]
    assert np.array_equal(m.xy, oracle(z)) and np.array_equal(m.labels, labels)
    assert m.key == {"dataset": "cub200", "method": "hdml-npair", "variant": "default", "seed": 0}
    assert m.n_test == 40 and not m.subsampled
    write_map(tmp_path / "map.csv", m)
    back = read_map(tmp_path / "map.csv")
    assert np.array_equal(back.xy, m.xy) and np.array_equal(back.labels, labels)  # to the last bit
    assert (back.key, back.n_test) == (m.key, 40)
    assert list(pd.read_csv(tmp_path / "map.csv").columns) == COLUMNS


def test_a_large_set_is_a_seeded_random_subsample(tmp_path):
    npz = run(tmp_path, classes=12, per_class=8)
    with threadpool_limits(1):
        m = tsne_map(npz, max_points=40)
    keep = np.sort(np.random.default_rng(0).choice(96, 40, replace=False))
    with np.load(npz) as data:
        z, labels = data["embeddings"], data["labels"]
    assert np.array_equal(m.labels, labels[keep]) and np.array_equal(m.xy, oracle(z[keep]))
    assert m.n_test == 96 and m.subsampled


def test_the_figure_is_drawn_from_the_file_with_the_reports_colours(tmp_path):
    """The points where the file puts them (embeddings gone); >10 classes take nipy_spectral
    colours in the order the report's one generator gave them: after the subsample's draw."""
    npz = run(tmp_path, classes=12, per_class=8)
    with threadpool_limits(1):
        write_map(tmp_path / "map.csv", tsne_map(npz, max_points=40))
    npz.unlink()
    table = pd.read_csv(tmp_path / "map.csv")
    table["x"] += 1000.0  # a map only this file has
    table.to_csv(tmp_path / "map.csv", index=False)
    fig, caption = tsne_figure(read_map(tmp_path / "map.csv"))
    points = fig.axes[0].collections[0]
    assert np.allclose(points.get_offsets(), table[["x", "y"]].to_numpy(), rtol=0, atol=1e-9)
    rng = np.random.default_rng(0)
    rng.choice(96, 40, replace=False)
    palette = plt.get_cmap("nipy_spectral")(np.linspace(0, 1, 12))[rng.permutation(12)]
    classes = np.unique(table.label)
    expected = palette[np.searchsorted(classes, table.label)]
    assert np.allclose(points.get_facecolors(), expected)
    assert caption.startswith("Barnes-Hut t-SNE of 40 test embeddings (12 classes, random subsample) of "
                              "CUB-200-2011: HDML (N-pair), default, seed 0")
    plt.close(fig)


def test_cli_writes_the_map_and_names_bad_input(tmp_path, capsys):
    npz = run(tmp_path, classes=5, per_class=8)
    out = tmp_path / "tsne/cub200/hdml-npair/default/seed0.csv"
    with threadpool_limits(1):
        assert main(["tsne", "--embeddings", str(npz), "--out", str(out)]) == 0
    assert np.array_equal(read_map(out).xy, oracle(np.load(npz)["embeddings"]))
    assert [p.name for p in out.parent.iterdir()] == ["seed0.csv"]  # written atomically: no temporary left
    capsys.readouterr()
    np.savez(npz, embeddings=np.zeros((8, 3)))
    assert main(["tsne", "--embeddings", str(npz), "--out", str(tmp_path / "x.csv")]) == 2
    assert f"{npz}: no array 'labels'" in capsys.readouterr().err
    loose = tmp_path / "embeddings.npz"
    np.savez(loose, embeddings=np.zeros((8, 3)), labels=np.arange(8))
    assert main(["tsne", "--embeddings", str(loose), "--out", str(tmp_path / "x.csv")]) == 2
    assert "a run directory must be .../DATASET/METHOD/VARIANT/seedN" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.drop(columns="n_test"), "header must be dataset,method,variant,seed,n_test,x,y,label"),
    (lambda t: t.assign(seed=[0] * 20 + [1] * 20), "more than one run"),
    (lambda t: t.assign(x=t.x.where(t.index != 3, np.inf)), "x and y must be finite"),
    (lambda t: t.assign(n_test=30), "n_test = 30, fewer than its 40 points"),
    (lambda t: t.head(4), "4 points"),
    (lambda t: t.assign(y="far"), "could not convert string to float: 'far'"),
])
def test_a_bad_map_is_named(tmp_path, capsys, edit, message):
    with threadpool_limits(1):
        m = tsne_map(run(tmp_path, classes=5, per_class=8))
    path = tmp_path / "map.csv"
    write_map(path, m)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        read_map(path)
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame([{"dataset": "cub200", "method": "npair", "variant": "default", "seed": 0, "metric": "nmi",
                   "value": 0.5}]).to_csv(metrics, index=False)
    assert main(["report", "--metrics", str(metrics), "--tsne", str(path), "--out", str(tmp_path / "r")]) == 2
    assert f"{path}: " in capsys.readouterr().err

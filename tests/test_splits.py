"""Named splits: a split.csv with train/val/query/gallery (instead of train/test) is read, cached
and loaded split by split, and evaluation picks query against gallery."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hdml.data.cache import build_cache, load_cached
from hdml.data.files import read_split
from hdml.data.splits import check_split_names, evaluation_splits
from hdml.data.tensors import ImageTensors, batch_transform, load_images, load_splits

CFG = {"image": {"resize": 8, "crop": 8, "flip": False, "normalize": "unit"}, "channels_last": True}


def resplit(digits_root, tmp_path, assign) -> pd.DataFrame:
    """A copy of the digits dataset whose split column is `assign(frame)`."""
    shutil.copytree(digits_root / "digits", tmp_path / "digits")
    path = tmp_path / "digits" / "split.csv"
    frame = pd.read_csv(path)
    frame["split"] = assign(frame)
    frame.to_csv(path, index=False)
    return frame


def query_gallery(frame: pd.DataFrame) -> np.ndarray:
    """Digits 0-4 train, 5 val, 6-9 alternately query and gallery."""
    order = frame.groupby("label").cumcount()
    return np.select([frame.label < 5, frame.label == 5, order % 2 == 0], ["train", "val", "query"], "gallery")


def test_train_val_query_gallery_are_read_cached_and_loaded(digits_root, tmp_path):
    frame = resplit(digits_root, tmp_path, query_gallery)
    split = read_split(tmp_path, "digits")
    assert check_split_names(split["split"], "x") == ["train", "val", "query", "gallery"]
    assert evaluation_splits(split["split"]) == ("query", "gallery")
    build_cache(tmp_path, "digits", 8, 1)
    assert sorted(p.name for p in (tmp_path / "digits" / "cache-8").glob("*.npy")) == [
        "gallery.npy", "query.npy", "train.npy", "val.npy"]
    images = load_images(tmp_path, "digits", CFG, 1, ("train", "val", "query", "gallery"))
    for name, got in images.items():
        rows = split[split["split"] == name]
        assert isinstance(got.pixels, np.memmap)
        assert np.array_equal(got.pixels, ImageTensors.from_frame(rows, 8, 1).pixels), name
        assert np.array_equal(got.labels, frame.loc[frame["split"] == name, "label"].to_numpy()), name
    with pytest.raises(ValueError, match=r"digits/cache-8/meta.json: no 'test' split in this cache"):
        load_cached(tmp_path, "digits", 8, 1, "test")
    with pytest.raises(ValueError, match=r"split.csv: no test images"):
        load_splits(tmp_path, "digits", {**CFG, "image": {**CFG["image"], "resize": 12}}, 1, torch.device("cpu"),
                    "unit")


def test_train_and_test_stay_the_default_layout(digits_root, tmp_path):
    resplit(digits_root, tmp_path, lambda f: np.where(f.label < 5, "train", "test"))
    split = read_split(tmp_path, "digits")
    assert evaluation_splits(split["split"]) == ("test", None)
    train, test, _ = load_splits(tmp_path, "digits", CFG, 1, torch.device("cpu"), "unit")
    assert len(train) + len(test) == len(split)


@pytest.mark.parametrize(("assign", "message"), [
    (lambda f: np.where(f.label < 5, "train", "dev"), r"split has values \['dev'\]; expected some of train, val"),
    (lambda f: np.where(f.label < 5, "train", "query"), "a query split needs a gallery split"),
    (lambda f: np.where(f.label < 5, "train", "val"), r"no test images \(nor a query and a gallery split\)"),
    (lambda f: np.full(len(f), "test"), "no train images"),
    (lambda f: np.select([(f.label == 0) & (f.groupby("label").cumcount() % 2 == 1), f.label < 5], ["val", "train"],
                         "test"), r"classes in both train and val: \[0\]"),
])
def test_bad_split_names_are_errors_naming_the_file(digits_root, tmp_path, assign, message):
    resplit(digits_root, tmp_path, assign)
    with pytest.raises(ValueError, match=rf"digits/split.csv: .*{message}"):
        read_split(tmp_path, "digits")


def test_query_gallery_dataset_trains_and_evaluates_queries_against_the_gallery(digits_root, tmp_path):
    """A dataset with query/gallery splits (digits 5-9 dealt alternately into each): the trainer's
    metrics, at the evaluation cadence and at the end, and `hdml evaluate`'s are the queries
    searched against the gallery, as metrics.evaluate(..., gallery=) computes them from the saved
    embeddings, which are the final model's embeddings of the two splits."""
    from hdml.eval.evaluate import evaluate_run
    from hdml.eval.metrics import evaluate
    from hdml.model.backbones import input_normalisation
    from hdml.model.embedding import build_model
    from hdml.train.trainer import embed, train_run

    frame = resplit(digits_root, tmp_path, lambda f: np.where(
        f.label < 5, "train", np.where(f.groupby("label").cumcount() % 2 == 0, "query", "gallery")))
    out = tmp_path / "run"
    tiny = {"steps": 20, "batch_size": 10, "eval_every": 10, "device": "cpu", "embedding_dim": 8,
            "eval_ks": [1, 2, 4]}
    result = train_run(root=tmp_path, dataset="digits", method="triplet", seed=0, out=out, overrides=tiny)

    with np.load(out / "embeddings.npz") as saved:
        assert sorted(saved) == ["embeddings", "gallery_embeddings", "gallery_labels", "labels"]
        q, ql, g, gl = (saved[k] for k in ("embeddings", "labels", "gallery_embeddings", "gallery_labels"))
    assert np.array_equal(ql, frame.loc[frame["split"] == "query", "label"])
    assert np.array_equal(gl, frame.loc[frame["split"] == "gallery", "label"])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    model = build_model(cfg, 1)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    images = load_images(tmp_path, "digits", cfg, 1, ("gallery",))["gallery"]
    transform = batch_transform(cfg, input_normalisation(cfg), torch.device("cpu"))
    assert np.array_equal(g, embed(model, images, transform, 64))

    by_hand = evaluate(q, ql, [1, 2, 4], seed=0, gallery=g, gallery_labels=gl)
    own = evaluate(q, ql, [1, 2, 4], seed=0)  # what the test-split path would report: differs
    assert by_hand != own
    assert result["metrics"] == by_hand
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.step) == [10, 20]
    assert curve.iloc[-1][list(by_hand)].to_dict() == by_hand
    assert evaluate_run(out)["metrics"] == by_hand


def test_test_split_runs_keep_the_two_array_embeddings_file(digits_root, tmp_path):
    from hdml.train.trainer import train_run

    train_run(root=digits_root, dataset="digits", method="triplet", seed=0, out=tmp_path,
              overrides={"steps": 2, "batch_size": 10, "device": "cpu", "embedding_dim": 8})
    with np.load(tmp_path / "embeddings.npz") as saved:
        assert sorted(saved) == ["embeddings", "labels"]
        assert np.array_equal(saved["labels"], read_split(digits_root, "digits").query("split == 'test'")["label"])


def test_a_gallery_that_does_not_fit_its_labels_is_an_error_naming_the_file(tmp_path):
    from hdml.eval.evaluate import load_embeddings, save_npz

    path = tmp_path / "embeddings.npz"
    save_npz(path, embeddings=np.zeros((4, 2)), labels=np.arange(4), gallery_embeddings=np.zeros((3, 2)),
             gallery_labels=np.arange(4))
    with pytest.raises(ValueError, match=r"embeddings.npz: gallery_embeddings of shape \(3, 2\) with gallery_labels"):
        load_embeddings(path)
    save_npz(path, embeddings=np.zeros((4, 2)), labels=np.arange(4), gallery_embeddings=np.ones((3, 2)),
             gallery_labels=np.arange(3))
    loaded = load_embeddings(path)
    assert np.array_equal(loaded.gallery, np.ones((3, 2))) and np.array_equal(loaded.gallery_labels, np.arange(3))

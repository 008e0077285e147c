"""Named splits: a split.csv with train/val/query/gallery (instead of train/test) is read, cached
and loaded split by split, and evaluation picks query against gallery."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hdml.cache import build_cache, load_cached
from hdml.data import ImageTensors, load_images, load_splits, read_split
from hdml.splits import check_split_names, evaluation_splits

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
        load_splits(tmp_path, "digits", {**CFG, "image": {**CFG["image"], "resize": 12}}, 1, torch.device("cpu"))


def test_train_and_test_stay_the_default_layout(digits_root, tmp_path):
    resplit(digits_root, tmp_path, lambda f: np.where(f.label < 5, "train", "test"))
    split = read_split(tmp_path, "digits")
    assert evaluation_splits(split["split"]) == ("test", None)
    train, test, _ = load_splits(tmp_path, "digits", CFG, 1, torch.device("cpu"))
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

"""The validation split carved from the training classes (hdml.data.valsplit): which classes, how
many, disjoint from test and from the classes left to train on, the same on every call, and
the paper's protocol unchanged by its presence."""
import numpy as np
import pandas as pd
import pytest
import torch

from hdml.cli import main
from hdml.data.datasets.digits import prepare
from hdml.data.files import read_split
from hdml.data.tensors import load_images
from hdml.data.valsplit import carve, training_images, val_classes

CFG = {"image": {"resize": 8, "crop": 8, "flip": False, "normalize": "unit"}, "channels_last": False,
       "selection": "last"}


def fake_split(train_classes: int, test_classes: int, per_class: int = 3, seed: int = 0) -> pd.DataFrame:
    """Rows in a shuffled order; labels 1.. for train, then test."""
    labels = np.repeat(np.arange(1, train_classes + test_classes + 1), per_class)
    rows = pd.DataFrame({"path": [f"{i}.jpg" for i in range(len(labels))], "label": labels.astype(str),
                         "split": np.where(labels <= train_classes, "train", "test")})
    return rows.sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize(("train_classes", "expected"), [(100, 25), (98, 25), (11318, 2830), (5, 2)])
def test_a_quarter_of_the_training_classes_every_fourth_by_label(train_classes, expected):
    """CUB-200-2011, Cars196, SOP, digits: sizes by hand (ceil(n / 4)), classes 1, 5, 9, ..."""
    chosen = val_classes(np.arange(1, train_classes + 1))
    assert len(chosen) == expected
    assert chosen[:3] == [1, 5, 9][: len(chosen[:3])] and chosen == list(range(1, train_classes + 1, 4))


def test_labels_sort_as_numbers_not_text():
    """As text "10" < "2": the carving would then pick other classes."""
    assert val_classes(np.array([1, 2, 10, 11, 20, 3])) == [1, 11]


def test_carved_val_disjoint_from_test_and_remaining_train_and_deterministic():
    split = fake_split(100, 100)
    out = carve(split)
    labels = out["label"].astype(int)
    val, train, test = (set(labels[out["split"] == s]) for s in ("val", "train", "test"))
    assert len(val) == 25 and len(train) == 75 and len(test) == 100
    assert not val & train and not val & test and val | train == set(range(1, 101))
    assert (out["path"] == split["path"]).all() and (out["label"] == split["label"]).all()  # rows keep their order
    again = carve(fake_split(100, 100, seed=7))  # another row order, the same classes
    assert set(again.loc[again["split"] == "val", "label"].astype(int)) == val
    assert (split["split"] == "train").sum() == (out["split"] != "test").sum()  # test rows untouched


def test_bad_carvings_are_errors():
    with pytest.raises(ValueError, match="already has val rows"):
        carve(carve(fake_split(10, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        carve(fake_split(10, 5), folds=1)
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        carve(fake_split(4, 5), folds=4)


def test_prepare_writes_val_and_paper_protocol_trains_on_the_same_images(tmp_path):
    plain, carved = tmp_path / "plain", tmp_path / "carved"
    prepare(plain)
    assert main(["prepare", "digits", "--root", str(carved), "--val-folds", "4"]) in (0, None)
    split = read_split(carved, "digits")  # passes the split checks: val classes disjoint from train
    assert sorted(set(split.loc[split["split"] == "val", "label"])) == [0, 4]
    assert sorted(set(split.loc[split["split"] == "train", "label"])) == [1, 2, 3]
    before = read_split(plain, "digits")
    assert (split["split"] == "test").equals(before["split"] == "test")

    reference = load_images(plain, "digits", CFG, 1, ("train",))["train"]
    cpu = torch.device("cpu")
    for selection in ("last", "test"):
        images = training_images(carved, "digits", {**CFG, "selection": selection}, 1, cpu, "unit")
        train = images.train
        assert images.val is None and images.gallery is None
        assert np.array_equal(train.pixels, reference.pixels) and np.array_equal(train.labels, reference.labels)
    images = training_images(carved, "digits", {**CFG, "selection": "val"}, 1, cpu, "unit")
    train, val = images.train, images.val
    assert set(train.labels) == {1, 2, 3} and set(val.labels) == {0, 4} and set(images.query.labels) == {5, 6, 7, 8, 9}
    assert len(train) + len(val) == len(reference)


def test_selection_val_without_a_val_split_names_the_fix(tmp_path):
    prepare(tmp_path)
    with pytest.raises(ValueError, match=r"split.csv: selection: val needs a val split; run `hdml prepare digits"):
        training_images(tmp_path, "digits", {**CFG, "selection": "val"}, 1, torch.device("cpu"), "unit")


@pytest.mark.parametrize(("train_classes", "folds"), [(100, 4), (98, 4), (5, 4), (11318, 4), (9, 3)])
def test_folds_disjoint_cover_the_training_classes_and_avoid_test(train_classes, folds):
    """The reality check's class-disjoint folds: each training class in exactly one fold, every
    fold non-empty and sized within one class of the others, no test row in any fold."""
    out = carve(fake_split(train_classes, 7, per_class=2), folds)
    labels = out["label"].astype(int)
    training = out["split"].isin(["train", "val"])
    assert (out.loc[~training, "fold"] == "").all()
    fold = out.loc[training, "fold"].astype(int)
    classes = [set(labels[training][fold == k]) for k in range(folds)]
    assert set(fold) == set(range(folds))
    assert all(not classes[i] & classes[j] for i in range(folds) for j in range(i + 1, folds))
    assert set().union(*classes) == set(range(1, train_classes + 1))
    assert not set().union(*classes) & set(labels[~training])
    assert max(map(len, classes)) - min(map(len, classes)) <= 1
    assert classes[0] == set(labels[out["split"] == "val"])  # fold 0 is the val split


def test_val_fold_picks_the_validating_fold(tmp_path):
    """digits 0-4 in 4 folds: {0, 4}, {1}, {2}, {3}; val_fold 2 validates on digit 2 and trains
    on the rest, the same images as fold 0's run in another partition."""
    assert main(["prepare", "digits", "--root", str(tmp_path), "--val-folds", "4"]) in (0, None)
    cpu = torch.device("cpu")
    run = {**CFG, "selection": "val"}
    fold0 = training_images(tmp_path, "digits", {**run, "val_fold": 0}, 1, cpu, "unit")
    fold2 = training_images(tmp_path, "digits", {**run, "val_fold": 2}, 1, cpu, "unit")
    (train0, test0, val0), (train2, test2, val2) = ((f.train, f.query, f.val) for f in (fold0, fold2))
    assert set(val2.labels) == {2} and set(train2.labels) == {0, 1, 3, 4}
    assert np.array_equal(test0.pixels, test2.pixels)
    assert len(train2) + len(val2) == len(train0) + len(val0)
    both = lambda *s: np.sort(np.concatenate([x.pixels.reshape(len(x), -1).sum(1) for x in s]))  # noqa: E731
    assert np.array_equal(both(train0, val0), both(train2, val2))
    with pytest.raises(ValueError, match=r"split.csv: val_fold 4, but the training classes are dealt into folds 0..3"):
        training_images(tmp_path, "digits", {**run, "val_fold": 4}, 1, cpu, "unit")


def test_val_fold_needs_a_fold_column(tmp_path):
    prepare(tmp_path)
    path = tmp_path / "digits" / "split.csv"
    old = carve(pd.read_csv(path, dtype=str, keep_default_na=False)).drop(columns="fold")  # an older prepare's file
    old.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"split.csv: no fold column \(val_fold needs one\)"):
        training_images(tmp_path, "digits", {**CFG, "selection": "val", "val_fold": 1}, 1, torch.device("cpu"), "unit")

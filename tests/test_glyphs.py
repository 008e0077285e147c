"""The glyphs demo dataset: characters drawn from matplotlib's fonts, split zero-shot by character."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fontTools.ttLib import TTFont

from hdml.data.datasets import get_dataset
from hdml.data.datasets.glyphs import (
    CHARACTERS,
    FACES,
    PER_CLASS,
    SIDE,
    TEST_CLASSES,
    faces_for,
    font_dir,
    images,
    prepare,
)
from hdml.data.labels import check_labels
from hdml.data.valsplit import write_val
from hdml.train.trainer import train_run


@pytest.fixture(scope="module")
def glyphs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("glyphs")
    prepare(root)
    return root


def test_images_have_the_stated_shape_and_every_class_its_count():
    pixels, labels = images()
    assert pixels.shape == (len(CHARACTERS) * PER_CLASS, SIDE, SIDE) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [PER_CLASS] * len(CHARACTERS)
    ink = pixels.reshape(len(pixels), -1).max(1)
    assert (ink > 100).all()  # every image shows a character, none is blank noise


def test_characters_are_distinct_and_every_face_has_them():
    assert len(set(CHARACTERS)) == len(CHARACTERS)
    for face in FACES:
        cmap = TTFont(font_dir() / face).getBestCmap()
        drawn = [c for c in CHARACTERS if face in faces_for(c)]
        assert drawn and all(ord(c) in cmap for c in drawn), face  # never the font's missing-glyph box
    assert min(len(faces_for(c)) for c in CHARACTERS) >= PER_CLASS // 2  # each typeface at most twice a class


def test_prepare_is_deterministic(glyphs_root, tmp_path):
    again = prepare(tmp_path)
    first = pd.read_csv(glyphs_root / "glyphs" / "split.csv")
    assert first.equals(pd.read_csv(again))

    def digest(root: Path) -> str:
        return hashlib.sha256(b"".join((root / "glyphs" / p).read_bytes() for p in first.path)).hexdigest()

    assert digest(glyphs_root) == digest(tmp_path)


def test_split_is_zero_shot_by_character(glyphs_root):
    split = pd.read_csv(glyphs_root / "glyphs" / "split.csv")
    check_labels(split, "split.csv")  # the suite's own check: raises on a class in train and test
    train = set(split.label[split.split == "train"])
    test = set(split.label[split.split == "test"])
    assert not train & test and train | test == set(range(len(CHARACTERS)))
    assert len(test) == TEST_CLASSES and len(train) == len(CHARACTERS) - TEST_CLASSES
    scripts = [{"latin" if c.isascii() else "other" for c in (CHARACTERS[i] for i in s)} for s in (train, test)]
    assert scripts == [{"latin", "other"}] * 2  # both splits mix the scripts


def test_validation_classes_are_carved_from_the_training_characters(tmp_path):
    prepare(tmp_path)
    write_val(tmp_path, "glyphs")
    split = pd.read_csv(tmp_path / "glyphs" / "split.csv")
    by = {s: set(split.label[split.split == s]) for s in ("train", "val", "test")}
    assert by["val"] and not by["val"] & by["train"] and not by["val"] & by["test"]
    assert len(by["train"]) >= 20  # the demo's N-pair batch of 10 pairs still finds distinct classes


def test_prepare_refuses_download_options(tmp_path):
    with pytest.raises(ValueError, match="glyphs is drawn from matplotlib's fonts"):
        prepare(tmp_path, urls=["https://example.org/x.tgz"])


def test_a_short_training_beats_the_network_at_initialisation(glyphs_root, tmp_path):
    """What the demo is for: on digits a network at init already retrieves as well as a trained one;
    here 100 steps of N-pair lift Recall@1 well above the network after a single step."""
    assert get_dataset("glyphs").defaults_for("npair")["image"]["resize"] == SIDE
    base = {"batch_size": 20, "lr": 1e-3, "device": "cpu", "weight_decay": 1e-4, "eval_every": 0}
    init = train_run(root=glyphs_root, dataset="glyphs", method="npair", seed=0, out=tmp_path / "init",
                     overrides={**base, "steps": 1})
    trained = train_run(root=glyphs_root, dataset="glyphs", method="npair", seed=0, out=tmp_path / "trained",
                        overrides={**base, "steps": 100})
    assert trained["metrics"]["recall@1"] > init["metrics"]["recall@1"] + 0.1
    assert trained["metrics"]["nmi"] > init["metrics"]["nmi"] + 0.05

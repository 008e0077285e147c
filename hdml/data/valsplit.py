"""The validation split: classes carved from the training classes, for choosing checkpoints (and,
later, hyper-parameters) without looking at the test classes (Musgrave et al., "A Metric
Learning Reality Check", ECCV 2020).

Which classes: the training classes sorted by label are dealt into `folds` class-disjoint folds,
class i going to fold i mod `folds`; fold 0 is `val`. With the reality check's 4 folds that is a
quarter of the training classes (CUB-200-2011: 25 of 100, Cars196: 25 of 98, SOP: 2,830 of
11,318, digits: 0 and 4 of 0-4). Dealing every k-th class rather than cutting a contiguous block
keeps SOP's super-categories, which are contiguous ranges of labels, all present in both parts.

`hdml prepare DATASET --val-folds K` writes the carved classes' training rows to split.csv as
`val`; without it split.csv is as before. A run then trains on `train` alone only with
`selection: val`; any other selection trains on `train` and `val` together, in split.csv's
row order, so the paper's protocol trains on exactly the images it trains on without a `val`
split (`training_images`).

Folds: split.csv's `fold` column holds each training row's fold (0..K-1, as `fold_of_classes`
deals them; empty for test rows), and the run-config key `val_fold` (default 0) picks the fold a
`selection: val` run validates on, training on the other K - 1 (fold 0 is the rows marked
`val`). Cross-validating a setting, as the reality check does, is K runs, `val_fold` 0..K-1: a
tuning trial's score with `tune.folds` (hdml.workflow.tune), the final models of a variant with `folds`
(hdml.eval.ensemble).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hdml.core.io import write_with
from hdml.data.files import read_split
from hdml.data.splits import evaluation_splits
from hdml.data.tensors import BatchTransform, ImageTensors, batch_transform, load_images

FOLDS = 4  # the reality check's class-disjoint folds of the training classes


def fold_of_classes(train_labels: np.ndarray, folds: int = FOLDS) -> dict[int, int]:
    """Each training class's fold: the classes sorted by label, class i in fold i mod `folds`."""
    classes = np.unique(np.asarray(train_labels).astype(np.int64))
    if folds < 2:
        raise ValueError(f"val folds: {folds}; need at least 2 (one fold validates, the rest train)")
    if len(classes) < folds + 1:
        raise ValueError(f"val folds: {folds} folds of {len(classes)} training classes would leave fewer "
                         f"than 2 classes in some part")
    return {int(c): i % folds for i, c in enumerate(classes)}


def val_classes(train_labels: np.ndarray, folds: int = FOLDS) -> list[int]:
    """The classes of fold 0, the validation classes."""
    return sorted(c for c, f in fold_of_classes(train_labels, folds).items() if f == 0)


def carve(split: pd.DataFrame, folds: int = FOLDS) -> pd.DataFrame:
    """`split` (path, label, split) with the training rows of the validation classes (fold 0)
    marked `val` and a `fold` column: each training row's fold, empty for the others; rows keep
    their order. A split that already has `val` rows is an error: carving twice would shrink the
    training classes again."""
    if (split["split"] == "val").any():
        raise ValueError("split.csv already has val rows; prepare the dataset afresh to carve another split")
    labels = split["label"].astype(np.int64)
    train = split["split"] == "train"
    fold = labels[train].map(fold_of_classes(labels[train].to_numpy(), folds))
    out = split.copy()
    out.loc[train & labels.isin(val_classes(labels[train].to_numpy(), folds)), "split"] = "val"
    out["fold"] = ""
    out.loc[train, "fold"] = fold.astype(str)
    return out


def write_val(root: str | Path, dataset: str, folds: int = FOLDS) -> Path:
    """Carve the validation classes into ROOT/DATASET/split.csv (atomically)."""
    read_split(root, dataset)  # the usual checks, with the file's name in their messages
    path = Path(root) / dataset / "split.csv"
    raw = pd.read_csv(path, dtype={"path": str, "split": str, "label": str}, keep_default_na=False)
    carved = carve(raw, folds)
    write_with(path, lambda p: carved.to_csv(p, index=False))
    return path


@dataclass
class RunImages:
    """The images a run reads: training images, the evaluation split(s) (`hdml.data.splits`:
    `query` searched against `gallery`, or `test` as its own gallery, `gallery` None; both None
    with `evaluate_test: false`, which never loads them), the validation images when the run
    selects on them, and the run config's batch transform."""

    train: ImageTensors
    query: ImageTensors | None
    gallery: ImageTensors | None
    val: ImageTensors | None
    transform: BatchTransform


def training_images(root: str | Path, dataset: str, cfg: dict, channels: int, device: torch.device,
                    normalize: str) -> RunImages:
    """The images of a run. With `selection: val` the training images exclude the validation
    classes (fold `val_fold`), which come back as `val`; otherwise a `val` split, if the dataset
    has one, joins the training images in split.csv's row order. With `evaluate_test: false`
    the test images (query, gallery) are never read: a tuning trial cannot see them. `normalize`:
    the resolved `image.normalize` (`hdml.data.tensors.batch_transform`)."""
    names = set(read_split(root, dataset)["split"])
    has_val = "val" in names
    if cfg["selection"] == "val" and not has_val:
        raise ValueError(f"{Path(root) / dataset / 'split.csv'}: selection: val needs a val split; run "
                         f"`hdml prepare {dataset} --root {root} --val-folds {FOLDS}` first")
    query, gallery = evaluation_splits(names) if cfg.get("evaluate_test", True) else (None, None)
    wanted = ("train", *((query,) if query else ()), *((gallery,) if gallery else ()), *(("val",) if has_val else ()))
    images = load_images(root, dataset, cfg, channels, wanted)
    evaluation = (images[query] if query else None, images[gallery] if gallery else None)
    transform = batch_transform(cfg, normalize, device)
    if not has_val:
        return RunImages(images["train"], *evaluation, None, transform)
    fold = cfg.get("val_fold", 0)
    if cfg["selection"] == "val" and fold == 0:
        return RunImages(images["train"], *evaluation, images["val"], transform)
    pool = _in_file_order(root, dataset, images["train"], images["val"])
    if cfg["selection"] != "val":
        return RunImages(pool, *evaluation, None, transform)
    folds = training_folds(root, dataset)
    if fold > folds.max():
        raise ValueError(f"{Path(root) / dataset / 'split.csv'}: val_fold {fold}, but the training classes are "
                         f"dealt into folds 0..{folds.max()}")
    chosen = folds == fold
    return RunImages(ImageTensors(pool.pixels[~chosen], pool.labels[~chosen]), *evaluation,
                     ImageTensors(pool.pixels[chosen], pool.labels[chosen]), transform)


def training_folds(root: str | Path, dataset: str) -> np.ndarray:
    """The fold of each training row (`train` or `val`), in split.csv's order."""
    path = Path(root) / dataset / "split.csv"
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "fold" not in split.columns:
        raise ValueError(f"{path}: no fold column (val_fold needs one); prepare the dataset afresh with "
                         f"`hdml prepare {dataset} --root {root} --val-folds {FOLDS}`")
    text = split.loc[split["split"].isin(["train", "val"]), "fold"]
    if not text.str.fullmatch(r"\d+").all():
        raise ValueError(f"{path}: fold must be a fold number on every train and val row")
    return text.astype(int).to_numpy()


def _in_file_order(root: str | Path, dataset: str, train: ImageTensors, val: ImageTensors) -> ImageTensors:
    """`train` and `val` as one split, rows in split.csv's order (a copy of both, in memory)."""
    kinds = read_split(root, dataset)["split"]
    rows = np.flatnonzero(kinds.isin(["train", "val"]).to_numpy())
    order = np.argsort(np.concatenate([rows[kinds.iloc[rows].to_numpy() == "train"],
                                       rows[kinds.iloc[rows].to_numpy() == "val"]]), kind="stable")
    pixels = np.concatenate([np.asarray(train.pixels), np.asarray(val.pixels)])[order]
    labels = np.concatenate([train.labels, val.labels])[order]
    return ImageTensors(pixels, labels)

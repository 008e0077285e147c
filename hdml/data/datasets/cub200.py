"""CUB-200-2011: 11,788 bird images, 200 classes. Zero-shot split: classes 1-100 train,
101-200 test. `train_test_split.txt` is the classification split and is not used.

Layout inside the archive: `CUB_200_2011/images.txt` (`<image_id> <NNN.Class/file.jpg>`),
`image_class_labels.txt` (`<image_id> <class_id>`), `images/NNN.Class/*.jpg`; ids 1-based.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hdml.data.datasets import DatasetSpec, register
from hdml.data.datasets.download import Footprint, PrepareError, manual_hint
from hdml.data.datasets.extract import GB, finish, stage_archive, staging

NAME = "cub200"
TOP = "CUB_200_2011"
FILENAME = "CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"
SIZE = Footprint(archive=1_150_000_000, extracted=1_200_000_000)
FILES = ((FILENAME, SIZE.text(), MD5),)
URLS = ["https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"]
LAST_TRAIN_CLASS = 100
EXPECTED = (100, 5864, 100, 5924)
MAX_EXTRACTED = 3 * GB  # the official archive unpacks to about 1.2 GB


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A space-separated metadata file, each line `<id> <value>`."""
    if not path.is_file():
        raise PrepareError(f"{path}: missing from the archive (not the CUB-200-2011 layout?)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise PrepareError(f"{path}:{n}: expected '<id> <value>', got {line!r}")
            rows.append((int(parts[0]), parts[1].strip()))
    return pd.DataFrame(rows, columns=columns)


def build_split(top: Path) -> pd.DataFrame:
    """path (relative to `top`'s parent), label (class id), split; checks ids and folders agree."""
    images = _read_table(top / "images.txt", ["image_id", "file"])
    labels = _read_table(top / "image_class_labels.txt", ["image_id", "label"])
    labels["label"] = pd.to_numeric(labels["label"], errors="coerce")
    if labels["label"].isna().any():
        raise PrepareError(f"{top / 'image_class_labels.txt'}: class ids must be integers")
    frame = images.merge(labels, on="image_id", how="outer", indicator=True)
    unmatched = frame[frame["_merge"] != "both"]
    if len(unmatched):
        raise PrepareError(f"{top}: image id {unmatched['image_id'].iloc[0]} is not in both images.txt "
                           f"and image_class_labels.txt")
    frame["label"] = frame["label"].astype(int)
    folder_ids = frame["file"].str.extract(r"^(\d+)\.", expand=False).astype(float)
    wrong = frame[folder_ids != frame["label"]]
    if len(wrong):
        row = wrong.iloc[0]
        raise PrepareError(f"{top / 'image_class_labels.txt'}: image {row['image_id']} ({row['file']}) "
                           f"has class {row['label']}, its folder says otherwise")
    frame["path"] = f"{top.name}/images/" + frame["file"]
    frame["split"] = frame["label"].map(lambda c: "train" if c <= LAST_TRAIN_CLASS else "test")
    return frame


def prepare(root: Path, *, urls: list[str] | None = None, md5: str | None = None,
            archive: Path | None = None) -> Path:
    target = Path(root) / NAME
    with staging(target) as tmp:
        official = stage_archive(tmp, Path(root) / "downloads" / FILENAME, top=TOP, marker="images.txt",
                                 urls=urls or URLS, md5=md5, official_md5=MD5, archive=archive,
                                 limit=MAX_EXTRACTED, hint=manual_hint(NAME, FILES), footprint=SIZE)
        return finish(tmp, target, build_split(tmp / TOP), name=NAME, listing=f"{TOP}/images.txt",
                      expected=EXPECTED, official=official)


register(DatasetSpec(name=NAME, title="CUB-200-2011", report_order=10, prepare=prepare, files=FILES,
                     run_defaults={"lr": 6e-5}))

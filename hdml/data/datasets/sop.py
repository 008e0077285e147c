"""Stanford Online Products: 120,053 images of 22,634 products. The split is given by the
files: `Ebay_train.txt` (classes 1-11,318) and `Ebay_test.txt` (11,319-22,634).

Layout inside the zip: `Stanford_Online_Products/Ebay_{train,test,info}.txt`, each with the
header `image_id class_id super_class_id path`, and 12 folders `*_final/*.JPG`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hdml.data.datasets import DatasetSpec, register
from hdml.data.datasets.download import Footprint, PrepareError, manual_hint
from hdml.data.datasets.extract import GB, finish, stage_archive, staging

NAME = "sop"
TOP = "Stanford_Online_Products"
FILENAME = "Stanford_Online_Products.zip"
MD5 = "7f73d41a2f44250d4779881525aea32e"
SIZE = Footprint(archive=2_900_000_000, extracted=2_950_000_000)  # JPEGs stored, not compressed
FILES = ((FILENAME, SIZE.text(), MD5),)
DRIVE_ID = "1TclrpQOF_ullUP99wk_gjGN8pKvtErG8"
URLS = [
    f"https://drive.usercontent.google.com/download?id={DRIVE_ID}&export=download&confirm=t",
    f"https://drive.google.com/uc?export=download&id={DRIVE_ID}&confirm=t",
]
HEADER = ["image_id", "class_id", "super_class_id", "path"]
EXPECTED = (11318, 59551, 11316, 60502)
MAX_EXTRACTED = 6 * GB  # the official zip (about 2.9 GB) holds JPEGs, stored as they are


def read_listing(path: Path) -> pd.DataFrame:
    """One of the `Ebay_*.txt` files, its header and integer columns checked."""
    if not path.is_file():
        raise PrepareError(f"{path}: missing from the archive (not the Stanford Online Products layout?)")
    frame = pd.read_csv(path, sep=r"\s+", dtype=str)
    if list(frame.columns) != HEADER:
        raise PrepareError(f"{path}: header {list(frame.columns)}, expected {HEADER}")
    for col in HEADER[:3]:
        if not frame[col].str.fullmatch(r"\d+").all():
            raise PrepareError(f"{path}: column {col} must hold positive integers")
    return frame.astype({col: int for col in HEADER[:3]})


def build_split(top: Path) -> pd.DataFrame:
    """path (relative to `top`'s parent), label (class id), split (from the file it is in)."""
    parts = []
    for split in ("train", "test"):
        frame = read_listing(top / f"Ebay_{split}.txt")
        parts.append(pd.DataFrame({"path": f"{top.name}/" + frame["path"], "label": frame["class_id"],
                                   "split": split}))
    return pd.concat(parts, ignore_index=True)


def prepare(root: Path, *, urls: list[str] | None = None, md5: str | None = None,
            archive: Path | None = None) -> Path:
    target = Path(root) / NAME
    with staging(target) as tmp:
        official = stage_archive(tmp, Path(root) / "downloads" / FILENAME, top=TOP, marker="Ebay_train.txt",
                                 urls=urls or URLS, md5=md5, official_md5=MD5, archive=archive,
                                 limit=MAX_EXTRACTED, hint=manual_hint(NAME, FILES), footprint=SIZE)
        return finish(tmp, target, build_split(tmp / TOP), name=NAME, listing=f"{TOP}/Ebay_*.txt",
                      expected=EXPECTED, official=official)


register(DatasetSpec(name=NAME, title="Stanford Online Products", report_order=30, prepare=prepare, files=FILES,
                     run_defaults={"lr": 2e-5}))

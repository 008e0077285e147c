"""Cars196 (Stanford Cars): 16,185 images, 196 classes. Zero-shot split: classes 1-98 train,
99-196 test (the original train/test flags are the classification split, not used).

Two layouts are accepted:
- original: `car_ims.tgz` (`car_ims/000001.jpg`, ...) and `cars_annos.mat` (struct array
  `annotations` with `relative_im_path` and 1-based `class`);
- the Kaggle "stanford-car-dataset-by-classes-folder" zip: `names.csv` (line i = name of class
  i), `anno_{train,test}.csv` (no header: `file,x1,y1,x2,y2,class`) and images under
  `car_data/car_data/{train,test}/<class name, '/' as '-'>/<file>`; train and test are merged.
The original hosts are gone; the built-in mirrors are web.archive.org copies of the original
files, then Kaggle, which needs the user's own API token. `--url`s ending in `.mat` replace the
annotation mirrors, `.zip` or kaggle.com ones select the Kaggle layout, any other the image
archive's; `--md5` is the checksum of that image archive (or of the zip). Annotations from
the built-in mirrors must match the published checksum; the user's own (a `.mat` URL, or a
`cars_annos.mat` beside `--archive car_ims.tgz`) are taken as they are, and the split is then
reported rather than asserted unless they match it.
"""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from hdml.data.datasets import DatasetSpec, register
from hdml.data.datasets.download import Fetched, Footprint, PrepareError, credentials_hint, download, fetch, manual_hint
from hdml.data.datasets.extract import GB, finish, link_folder, safe_extract, staging

NAME = "cars196"
IMAGES, ANNOS = "car_ims.tgz", "cars_annos.mat"
IMAGES_MD5 = "d5c8f0aa497503f355e17dc7886c3f14"
ANNOS_MD5 = "b407c6086d669747186bd1d764ff9dbc"
SIZE = Footprint(archive=1_900_000_000, extracted=2_000_000_000)  # car_ims.tgz; the Kaggle zip is alike
FILES = ((IMAGES, SIZE.text(), IMAGES_MD5), (ANNOS, "about 0.4 MB", ANNOS_MD5))
_WAYBACK = "https://web.archive.org/web/2021id_/"
IMAGES_URLS = [f"{_WAYBACK}http://ai.stanford.edu/~jkrause/car196/{IMAGES}",
               f"{_WAYBACK}http://imagenet.stanford.edu/internal/car196/{IMAGES}"]
ANNOS_URLS = [f"{_WAYBACK}http://ai.stanford.edu/~jkrause/car196/{ANNOS}",
              f"{_WAYBACK}http://imagenet.stanford.edu/internal/car196/{ANNOS}"]
KAGGLE_SLUG = "jutrera/stanford-car-dataset-by-classes-folder"
KAGGLE_URLS = [f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_SLUG}"]
KAGGLE_ZIP = "stanford-car-dataset-by-classes-folder.zip"
KAGGLE_ENTRIES = ("names.csv", "anno_train.csv", "anno_test.csv", "car_data")
LAST_TRAIN_CLASS = 98
EXPECTED = (98, 8054, 98, 8131)
MAX_EXTRACTED = 4 * GB  # car_ims.tgz (1.9 GB) and the Kaggle zip each unpack to about 2 GB


def _is_kaggle_url(url: str) -> bool:
    """A URL of the Kaggle zip layout rather than of the original files."""
    return urlparse(url).path.endswith(".zip") or credentials_hint(url) is not None


def read_annotations(path: Path) -> pd.DataFrame:
    """path (as in the .mat, e.g. `car_ims/000001.jpg`) and label of every image."""
    # here: scipy only when Cars196's annotation file is read (start-up time of every other command)
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, squeeze_me=True)
    except (MatReadError, ValueError, NotImplementedError, OSError, TypeError, IndexError, EOFError) as exc:
        raise PrepareError(f"{path}: cannot read the annotations ({exc})") from None
    ann = np.atleast_1d(mat.get("annotations", np.empty(0)))
    fields = ann.dtype.names or ()
    if not {"relative_im_path", "class"} <= set(fields):
        raise PrepareError(f"{path}: no struct array 'annotations' with fields relative_im_path and class")
    try:
        labels = [int(c) for c in ann["class"]]
    except (TypeError, ValueError):
        raise PrepareError(f"{path}: annotations.class must hold integer class ids") from None
    return pd.DataFrame({"path": [str(p) for p in ann["relative_im_path"]], "label": labels})


def _class_ids(column: pd.Series, listing: Path, n_classes: int) -> pd.Series:
    text = column.astype(str).str.strip()
    ids = pd.to_numeric(text.where(text.str.fullmatch(r"\d+")), errors="coerce")
    bad = ids.isna() | (ids < 1) | (ids > n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise PrepareError(f"{listing}: line {first + 1}: class {text.iloc[first]!r} is not in 1-{n_classes}")
    return ids.astype(int)


def read_kaggle(base: Path) -> pd.DataFrame:
    """path (relative to `base`) and label of every image of the Kaggle layout, train and test
    merged; each image must lie in the folder of the class its annotation gives."""
    names = [line.strip() for line in (base / "names.csv").read_text().splitlines() if line.strip()]
    parts = []
    for split in ("train", "test"):
        listing = base / f"anno_{split}.csv"
        folders = base / "car_data" / "car_data" / split
        if not listing.is_file() or not folders.is_dir():
            raise PrepareError(f"{base}: needs anno_{split}.csv and car_data/car_data/{split}/ "
                               f"(the Kaggle by-classes-folder layout)")
        anno = pd.read_csv(listing, header=None, names=["file", "x1", "y1", "x2", "y2", "label"], dtype=str)
        labels = _class_ids(anno["label"], listing, len(names))
        where = {f.name: d.name for d in folders.iterdir() if d.is_dir() for f in d.iterdir()}
        paths = []
        for file, label in zip(anno["file"], labels, strict=True):
            folder, expected = where.get(file), names[label - 1].replace("/", "-")
            if folder is None:
                raise PrepareError(f"{listing}: image {file} is in no class folder of {folders}")
            if folder.strip() != expected.strip():
                raise PrepareError(f"{listing}: {file} has class {label} ({names[label - 1]!r}) but lies in "
                                   f"folder {folder!r}")
            paths.append(f"car_data/car_data/{split}/{folder}/{file}")
        parts.append(pd.DataFrame({"path": paths, "label": labels.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def build_split(staged: Path) -> tuple[pd.DataFrame, str]:
    """The split of whichever layout is staged (paths relative to `staged`), and its listing."""
    if (staged / ANNOS).is_file():
        frame, listing = read_annotations(staged / ANNOS), ANNOS
    else:
        base = next((d for d in [staged, *sorted(staged.iterdir())] if (d / "names.csv").is_file()), None)
        if base is None:
            raise PrepareError(f"neither {ANNOS} nor names.csv found: not a Cars196 layout")
        frame, listing = read_kaggle(base), "anno_*.csv"
        if base != staged:
            frame["path"] = f"{base.name}/" + frame["path"]
    frame["split"] = np.where(frame["label"] <= LAST_TRAIN_CLASS, "train", "test")
    return frame, listing


def _stage_original(tmp: Path, images: Fetched, annos: Fetched) -> bool:
    safe_extract(images.path, tmp, limit=MAX_EXTRACTED)
    if not (tmp / "car_ims").is_dir():
        raise PrepareError(f"{images.path}: no car_ims/ folder inside; not the original car_ims.tgz")
    shutil.copyfile(annos.path, tmp / ANNOS)
    return images.official and annos.official


def _stage_kaggle(tmp: Path, downloads: Path, urls: list[str], md5: str | None, archive: Path | None) -> bool:
    got = fetch(downloads / KAGGLE_ZIP, urls=urls, md5=md5, official_md5=None, archive=archive, footprint=SIZE)
    safe_extract(got.path, tmp, limit=MAX_EXTRACTED)
    return False


def _link_extracted(folder: Path, tmp: Path) -> bool:
    if (folder / ANNOS).is_file() and (folder / "car_ims").is_dir():
        entries: tuple[str, ...] = (ANNOS, "car_ims")
    elif (folder / "names.csv").is_file():
        entries = tuple(e for e in KAGGLE_ENTRIES if (folder / e).exists())
    else:
        raise PrepareError(f"--archive {folder}: neither car_ims/ with {ANNOS} nor names.csv in this folder")
    for entry in entries:
        link_folder(folder / entry, tmp / entry)
    return False


def _stage(tmp: Path, downloads: Path, urls: list[str] | None, md5: str | None, archive: Path | None) -> bool:
    """Stage one of the layouts in `tmp`; returns whether all its files are the official ones."""
    if archive is not None:
        if archive.is_dir():
            return _link_extracted(archive, tmp)
        if not archive.is_file():
            raise FileNotFoundError(f"--archive {archive}: no such file or folder")
        if zipfile.is_zipfile(archive) and not tarfile.is_tarfile(archive):
            return _stage_kaggle(tmp, downloads, [], md5, archive)
        beside = archive.parent / ANNOS
        images = fetch(downloads / IMAGES, urls=[], md5=md5, official_md5=IMAGES_MD5, archive=archive)
        annos = fetch(downloads / ANNOS, urls=ANNOS_URLS, md5=None, official_md5=ANNOS_MD5,
                      archive=beside if beside.is_file() else None)
        return _stage_original(tmp, images, annos)
    given = urls or []
    kaggle = [u for u in given if _is_kaggle_url(u)]
    mats = [u for u in given if urlparse(u).path.endswith(".mat")]
    images_urls = [u for u in given if u not in kaggle and u not in mats]
    if kaggle and not mats and not images_urls:
        return _stage_kaggle(tmp, downloads, kaggle, md5, None)
    try:
        images = fetch(downloads / IMAGES, urls=images_urls or IMAGES_URLS, md5=md5, official_md5=IMAGES_MD5,
                       archive=None, footprint=SIZE)
        if mats:  # the user's own mirror: no checksum to hold it to (--md5 is the image archive's)
            annos = Fetched(downloads / ANNOS, download(mats, downloads / ANNOS, None) == ANNOS_MD5)
        else:
            annos = fetch(downloads / ANNOS, urls=ANNOS_URLS, md5=None, official_md5=ANNOS_MD5, archive=None)
    except PrepareError as original:
        fallback = kaggle if given else KAGGLE_URLS
        if not fallback:
            raise
        try:
            return _stage_kaggle(tmp, downloads, fallback, None, None)
        except PrepareError as exc:
            raise PrepareError(f"{original}\n{exc}\n{manual_hint(NAME, FILES)}, `{ANNOS}` beside the archive; "
                               f"or the Kaggle dataset {KAGGLE_SLUG} with your API token, passed with "
                               f"--archive") from None
    return _stage_original(tmp, images, annos)


def prepare(root: Path, *, urls: list[str] | None = None, md5: str | None = None,
            archive: Path | None = None) -> Path:
    target = Path(root) / NAME
    with staging(target) as tmp:
        official = _stage(tmp, Path(root) / "downloads", urls, md5, archive)
        frame, listing = build_split(tmp)
        return finish(tmp, target, frame, name=NAME, listing=listing, expected=EXPECTED, official=official)


register(DatasetSpec(name=NAME, title="Cars196", report_order=20, prepare=prepare, files=FILES,
                     run_defaults={"lr": 7e-5}))

"""Safe extraction, and the atomic placement of a prepared dataset.

Archives are unpacked into a staging folder inside the dataset folder; members that would
land outside it (absolute paths, `..`, links pointing out, device files) are refused before
they are written. Only once the whole archive is out and its split is checked are the staged
entries moved into place, and `split.csv` is written last: a dataset folder with a
`split.csv` is always complete, and an interrupted prepare leaves none.
"""
from __future__ import annotations

import gzip
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from hdml.datasets.download import PrepareError, fetch
from hdml.io import write_with

log = logging.getLogger("hdml.prepare")


def _check_name(archive: Path, name: str) -> None:
    """Refuse a member name that is absolute or climbs out with `..`."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise PrepareError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in norm.split("/"):
        raise PrepareError(f"{archive}: member {name!r} contains '..'; refusing to extract")


def _check_link(archive: Path, name: str, target: str) -> None:
    """Refuse a symbolic link whose target, read from the link's own folder, leaves the archive."""
    if target.startswith("/"):
        raise PrepareError(f"{archive}: link {name!r} points to absolute path {target!r}; refusing to extract")
    if posixpath.normpath(posixpath.join(posixpath.dirname(name), target)).split("/")[0] == "..":
        raise PrepareError(f"{archive}: link {name!r} points outside the archive ({target!r}); refusing to extract")


def _extract_tar(archive: Path, into: Path) -> None:
    def strict(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        _check_name(archive, member.name)
        if member.issym():
            _check_link(archive, member.name, member.linkname)
        elif member.islnk():
            _check_name(archive, member.linkname)
        return tarfile.data_filter(member, dest)  # the standard checks on top of ours

    try:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter=strict)
    except tarfile.FilterError as exc:
        raise PrepareError(f"{archive}: {exc}; refusing to extract") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PrepareError(f"{archive}: damaged archive ({exc})") from None
    except OSError as exc:
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None


def _extract_zip(archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"))
            zf.extractall(into)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise PrepareError(f"{archive}: damaged archive ({exc})") from None
    except OSError as exc:
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None


def safe_extract(archive: Path, into: Path) -> None:
    """Unpack a tar (any compression) or zip archive into the folder `into`."""
    if tarfile.is_tarfile(archive):
        _extract_tar(archive, into)
    elif zipfile.is_zipfile(archive):
        _extract_zip(archive, into)
    else:
        raise PrepareError(f"{archive}: neither a tar nor a zip archive")


@contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A fresh folder inside the dataset folder `target` (same file system, so moving out of
    it is a rename), removed on exit whatever happens."""
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging.", dir=target))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def link_folder(source: Path, staged: Path) -> None:
    """Stage an already-extracted folder of the user's as a symbolic link, not a copy."""
    staged.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def stage_archive(tmp: Path, downloads: Path, *, top: str, marker: str, urls: list[str], md5: str | None,
                  official_md5: str, archive: Path | None, hint: str) -> bool:
    """Put a one-archive dataset's folder `top` into the staging folder `tmp`: extracted from the
    user's archive or a download, or linked when `archive` is an already-extracted folder
    (holding `marker`, or holding `top/marker`). Returns whether the archive is the official one.
    `hint` ends the error of a failed download (what to fetch by hand)."""
    if archive is not None and archive.is_dir():
        folder = archive if (archive / marker).is_file() else archive / top
        if not (folder / marker).is_file():
            raise PrepareError(f"--archive {archive}: neither {marker} nor {top}/{marker} in this folder")
        link_folder(folder, tmp / top)
        return False
    try:
        got = fetch(downloads, urls=urls, md5=md5, official_md5=official_md5, archive=archive)
    except PrepareError as exc:
        if archive is not None:
            raise
        raise PrepareError(f"{exc}\n{hint}") from None
    safe_extract(got.path, tmp)
    if not (tmp / top / marker).is_file():
        raise PrepareError(f"{got.path}: no {top}/{marker} inside; not the expected layout")
    return got.official


def install(staged: Path, target: Path) -> None:
    """Move every entry of the staging folder into `target`, replacing older ones."""
    for entry in staged.iterdir():
        dest = target / entry.name
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        os.replace(entry, dest)


def check_files(frame: pd.DataFrame, base: Path, source: str) -> None:
    """Every listed image exists under `base` (a metadata file naming a missing image is an error)."""
    missing = [p for p in frame["path"] if not (base / p).is_file()]
    if missing:
        raise PrepareError(f"{source}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")


def split_counts(frame: pd.DataFrame) -> tuple[int, int, int, int]:
    """(train classes, train images, test classes, test images)."""
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    return train["label"].nunique(), len(train), test["label"].nunique(), len(test)


def check_split(frame: pd.DataFrame, *, name: str, expected: tuple[int, int, int, int],
                official: bool) -> pd.DataFrame:
    """The split, sorted and checked: train and test classes disjoint; counts equal to the
    published ones when the archive is the official one, reported with a warning otherwise."""
    frame = frame[["path", "label", "split"]].sort_values(["split", "label", "path"], ascending=[False, True, True])
    overlap = set(frame.loc[frame["split"] == "train", "label"]) & set(frame.loc[frame["split"] == "test", "label"])
    if overlap:
        raise PrepareError(f"{name}: classes in both train and test: {sorted(overlap)[:5]}")
    counts = split_counts(frame)
    text = "train {} classes / {} images, test {} classes / {} images"
    if official and counts != expected:
        raise PrepareError(f"{name}: official archive but split has {text.format(*counts)}; "
                           f"expected {text.format(*expected)}")
    if not official:
        log.warning("%s: not the official archive: split has %s (official: %s)", name,
                    text.format(*counts), text.format(*expected))
    return frame


def finish(staged: Path, target: Path, frame: pd.DataFrame, *, name: str, listing: str,
           expected: tuple[int, int, int, int], official: bool) -> Path:
    """Check the split (paths relative to `staged`), move the staged files into `target`, and
    write `target/split.csv` last: the step that marks the dataset complete."""
    frame = check_split(frame, name=name, expected=expected, official=official)
    check_files(frame, staged, listing)
    (target / "split.csv").unlink(missing_ok=True)  # from here until the end, not complete
    install(staged, target)
    out = target / "split.csv"
    write_with(out, lambda p: frame.to_csv(p, index=False))
    return out

"""Safe extraction, and the atomic placement of a prepared dataset.

Archives are unpacked into a staging folder inside the dataset folder by our own loop, not
`extractall`: the real datasets hold only folders and regular files, so every other member
(symbolic or hard link, device, FIFO, sparse file) is refused, as is a name that is absolute
or climbs out with `..`, all before anything is written. Since no link is ever created, no
chain of links (however long, see CVE-2025-4517) can redirect a write; each file's resolved
folder is checked against the staging folder as well. The sizes the archive declares are
checked against a limit given by the dataset and against the free disk, and the bytes
actually written are counted against the same limit (a decompression bomb stops there); a
failed extraction removes what it wrote. Only once the whole archive is out and its split is
checked are the staged entries moved into place, and `split.csv` is written last: a dataset
folder with a `split.csv` is always complete, and an interrupted prepare leaves none.
"""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pandas as pd

from hdml.core.disk import MARGIN, check_free_space
from hdml.core.io import write_with
from hdml.data.datasets.download import Footprint, PrepareError, fetch
from hdml.data.labels import check_labels

log = logging.getLogger("hdml.prepare")

GB = 1 << 30
CHUNK = 1 << 20


def _check_name(archive: Path, name: str) -> None:
    """Refuse a member name that is absolute or climbs out with `..`."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise PrepareError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in norm.split("/"):
        raise PrepareError(f"{archive}: member {name!r} contains '..'; refusing to extract")


def _refuse_kind(archive: Path, name: str, kind: str) -> PrepareError:
    return PrepareError(f"{archive}: member {name!r} is a {kind}; the datasets hold only folders and regular "
                        f"files, refusing to extract")


class Budget:
    """Bytes written so far against the dataset's limit: stops a bomb whatever its headers say."""

    def __init__(self, archive: Path, limit: int) -> None:
        self.archive, self.limit, self.written = archive, limit, 0

    def copy(self, src: IO[bytes], dest: Path) -> None:
        """Copy `src` into a new regular file `dest` (never through a link), counting each chunk."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                if self.written > self.limit:
                    raise PrepareError(f"{self.archive}: more than {self.limit} bytes written, the limit for this "
                                       f"dataset; stopped extracting (a decompression bomb?)")
                out.write(chunk)


def _check_sizes(archive: Path, into: Path, declared: int, limit: int) -> None:
    """The archive's declared size against the dataset's limit and the free disk, before writing."""
    if declared > limit:
        raise PrepareError(f"{archive}: declares {declared} bytes once extracted, over the limit of {limit} for "
                           f"this dataset; refusing to extract (a decompression bomb?)")
    check_free_space(into, declared + MARGIN, f"extracting {archive.name} (with a margin of {MARGIN:,})",
                     "refusing to extract; free some space or put --root on a larger disk")


def _destination(archive: Path, root: Path, name: str, *, folder: bool = False) -> Path:
    """Where member `name` goes, its folders created one at a time, each checked to be a real
    folder (never followed through a link), then resolved strictly (a path too long to resolve
    is an error, not a guess) to a place inside `root`."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts and not folder:  # a folder `./` is the root itself
        raise PrepareError(f"{archive}: member {name!r} has an empty name; refusing to extract")
    current = root
    for part in parts if folder else parts[:-1]:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(current).st_mode):
            raise PrepareError(f"{archive}: member {name!r}: {current} is not a folder (a link?); refusing to extract")
    try:
        resolved = os.path.realpath(current, strict=True)
    except OSError as exc:
        raise PrepareError(f"{archive}: member {name!r}: cannot resolve its folder ({exc}); "
                           "refusing to extract") from None
    if os.path.commonpath([resolved, str(root)]) != str(root):
        raise PrepareError(f"{archive}: member {name!r} resolves to {resolved}, outside {root}; refusing to extract")
    return root.joinpath(*parts)


def _extract_tar(archive: Path, into: Path, limit: int) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            _check_name(archive, m.name)
            if m.issym() or m.islnk():
                raise _refuse_kind(archive, m.name, "link")
            if m.issparse():
                raise _refuse_kind(archive, m.name, "sparse file")
            if not (m.isdir() or m.isreg()):
                raise _refuse_kind(archive, m.name, "device, FIFO or other special file")
        _check_sizes(archive, into, sum(m.size for m in members if m.isreg()), limit)
        budget = Budget(archive, limit)
        for m in members:
            if m.isdir():
                _destination(archive, into, m.name, folder=True)
                continue
            src = tf.extractfile(m)
            assert src is not None  # a regular file
            with src:
                budget.copy(src, _destination(archive, into, m.name))


def _extract_zip(archive: Path, into: Path, limit: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _refuse_kind(archive, info.filename, "link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse_kind(archive, info.filename, "device, FIFO or other special file")
        _check_sizes(archive, into, sum(i.file_size for i in infos if not i.is_dir()), limit)
        budget = Budget(archive, limit)
        for info in infos:
            if info.is_dir():
                _destination(archive, into, info.filename, folder=True)
                continue
            with zf.open(info) as src:
                budget.copy(src, _destination(archive, into, info.filename))


def safe_extract(archive: Path, into: Path, *, limit: int) -> None:
    """Unpack a tar (any compression) or zip archive into the folder `into`, writing at most
    `limit` bytes; on any failure, what it wrote is removed."""
    extract: Callable[[Path, Path, int], None]
    if tarfile.is_tarfile(archive):
        extract = _extract_tar
    elif zipfile.is_zipfile(archive):
        extract = _extract_zip
    else:
        raise PrepareError(f"{archive}: neither a tar nor a zip archive")
    root = Path(os.path.realpath(into, strict=True))
    before = set(os.listdir(root))
    try:
        extract(archive, root, limit)
    except BaseException as exc:
        for entry in set(os.listdir(root)) - before:
            path = root / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if isinstance(exc, PrepareError):
            raise
        if isinstance(exc, (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
                            lzma.LZMAError, RuntimeError)):
            raise PrepareError(f"{archive}: damaged archive ({exc})") from None
        if isinstance(exc, OSError):
            raise PrepareError(f"{archive}: cannot extract ({exc})") from None
        raise


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
                  official_md5: str, archive: Path | None, limit: int, hint: str, footprint: Footprint) -> bool:
    """Put a one-archive dataset's folder `top` into the staging folder `tmp`: extracted from the
    user's archive or a download, or linked when `archive` is an already-extracted folder
    (holding `marker`, or holding `top/marker`); at most `limit` bytes extracted. Returns
    whether the archive is the official one. `hint` ends the error of a failed download (what
    to fetch by hand); `footprint` sizes the disk a download needs."""
    if archive is not None and archive.is_dir():
        folder = archive if (archive / marker).is_file() else archive / top
        if not (folder / marker).is_file():
            raise PrepareError(f"--archive {archive}: neither {marker} nor {top}/{marker} in this folder")
        link_folder(folder, tmp / top)
        return False
    try:
        got = fetch(downloads, urls=urls, md5=md5, official_md5=official_md5, archive=archive, footprint=footprint)
    except PrepareError as exc:
        if archive is not None:
            raise
        raise PrepareError(f"{exc}\n{hint}") from None
    safe_extract(got.path, tmp, limit=limit)
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
    frame = frame[["path", "label", "split"]].copy()
    try:
        frame["label"] = check_labels(frame, name)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    frame = frame.sort_values(["split", "label", "path"], ascending=[False, True, True])
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

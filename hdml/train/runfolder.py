"""A training run's folder: one process at a time, writable, and free of stale temporaries.

Two `hdml train` on the same `--out` would each write half of the folder (one's config, the
other's model and metrics). The first takes an exclusive `flock` on `OUT/.lock` and writes
its pid, host and start time into it; the kernel releases the lock when the process ends,
however it ends (a SIGKILL leaves no stale lock). The file stays in place, except in a
folder a failed start created (a locker that finds it removed locks the new one instead). A
second process fails at once, naming the holder. `flock` is per host on some network file systems: on NFS, Linux
maps it to byte-range locks, which the server arbitrates across clients.
"""
from __future__ import annotations

import fcntl
import functools
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

LOCK = ".lock"
# Temporary files of the atomic writer (`.NAME.XXXX.tmp`), left behind by a killed process.
STALE = ".*.tmp"

F = TypeVar("F", bound=Callable[..., Any])


class RunFolderError(ValueError):
    """The run folder is held by another process or cannot be written (a ValueError: the
    command line reports it as a one-line error, exit code 2)."""


def check_writable(folder: Path) -> None:
    """Create `folder` and a file in it now, rather than fail at the first checkpoint."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise RunFolderError(f"{folder}: output folder not writable ({exc.strerror or exc}); nothing trained") from None


def remove_stale_temporaries(*folders: Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes; only safe while the lock is held."""
    stale = [p for folder in folders for p in folder.glob(STALE) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _lock(out: Path) -> int:
    """An open descriptor of `out/.lock`, exclusively locked, holding this process's record."""
    while True:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "holder not yet recorded"
            os.close(fd)
            raise RunFolderError(f"{out}: in use by another training process ({holder}); "
                                 f"wait for it to end or choose another --out") from None
        try:
            current = os.stat(out / LOCK).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # locked a file its holder removed on the way out: lock the one there now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode(), 0)
    return fd


@contextmanager
def claim(out: Path) -> Iterator[None]:
    """Hold `out` exclusively for the block, after checking it (and `out/ckpt`) can be written
    and removing stale temporary files. A folder this call created is removed again if the
    block fails before anything but the lock was written (a bad run config writes nothing)."""
    out = Path(out)
    created = not out.exists()
    check_writable(out)
    check_writable(out / "ckpt")
    fd = _lock(out)
    try:
        remove_stale_temporaries(out, out / "ckpt")
        yield
    except BaseException:
        if created and {p.name for p in out.iterdir()} == {LOCK, "ckpt"} and not any((out / "ckpt").iterdir()):
            (out / "ckpt").rmdir()
            (out / LOCK).unlink()
            out.rmdir()
        raise
    finally:
        os.close(fd)  # releases the lock


def exclusive(train: F) -> F:
    """Run a function taking keyword `out` (a run folder) while holding that folder."""

    @functools.wraps(train)
    def wrapper(*args: Any, out: str | Path, **kwargs: Any) -> Any:
        with claim(Path(out)):
            return train(*args, out=out, **kwargs)

    return wrapper  # type: ignore[return-value]

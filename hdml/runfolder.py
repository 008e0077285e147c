"""A training run's folder: one process at a time, writable, and free of stale temporaries.

Two `hdml train` on the same `--out` would each write half of the folder (one's config, the
other's model and metrics). The first takes an exclusive `flock` on `OUT/.lock` and writes
its pid, host and start time into it; the kernel releases the lock when the process ends,
however it ends (a SIGKILL leaves no stale lock), and the file itself is left in place
(removing it would let a third process lock a different file). A second process fails at
once, naming the holder. `flock` is per host on some network file systems: on NFS, Linux
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


@contextmanager
def claim(out: Path) -> Iterator[None]:
    """Hold `out` exclusively for the block, after checking it (and `out/ckpt`) can be written
    and removing stale temporary files."""
    out = Path(out)
    check_writable(out)
    check_writable(out / "ckpt")
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "holder not yet recorded"
            raise RunFolderError(f"{out}: in use by another training process ({holder}); "
                                 f"wait for it to end or choose another --out") from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode(), 0)
        remove_stale_temporaries(out, out / "ckpt")
        yield
    finally:
        os.close(fd)  # releases the lock


def exclusive(train: F) -> F:
    """Run a function taking keyword `out` (a run folder) while holding that folder."""

    @functools.wraps(train)
    def wrapper(*args: Any, out: str | Path, **kwargs: Any) -> Any:
        with claim(Path(out)):
            return train(*args, out=out, **kwargs)

    return wrapper  # type: ignore[return-value]

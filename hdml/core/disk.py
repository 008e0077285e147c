"""Free-disk checks made before a long write (a download, an extraction, the image cache), so
that a too-small disk is a one-line error naming the folder and both byte counts at the start,
not a half-written file hours later."""
from __future__ import annotations

import shutil
from pathlib import Path

MARGIN = 256 << 20  # left free beyond an estimate: file-system overhead, logs, small files


class DiskSpaceError(ValueError):
    """Too little free disk for what is about to be written; raised before anything is (a
    ValueError, so the command line reports it in one line with exit code 2)."""


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk `folder` is (or will be, once created) on: the nearest existing
    folder above it is asked."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_free_space(folder: Path, needed: int, what: str, remedy: str) -> None:
    """Raise DiskSpaceError when `folder`'s disk has fewer than `needed` bytes free; the message
    says `what` needs them and ends with `remedy`."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskSpaceError(f"{folder}: {what} needs {needed:,} bytes ({needed / 1e9:.1f} GB) but only "
                             f"{free:,} bytes ({free / 1e9:.1f} GB) are free there; {remedy}")

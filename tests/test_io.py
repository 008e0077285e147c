"""The atomic writer: outputs get the mode the umask gives, not mkstemp's 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hdml.core.io import write_json, write_text, write_with


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path: Path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"x": 1})
        write_with(tmp_path / "c.bin", lambda p: p.write_bytes(bytes(3)))
        (tmp_path / "d.txt").write_text("old")
        (tmp_path / "d.txt").chmod(0o600)
        write_text(tmp_path / "d.txt", "replaced")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.bin", "d.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert os.umask(old) == old  # the umask is left as it was

"""Extraction cannot write outside its target: `..`, absolute paths and outward links are refused."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from fakedata import write_tgz, write_zip

from hdml.datasets.download import PrepareError
from hdml.datasets.extract import safe_extract


def tar_with(path: Path, *members: tarfile.TarInfo, data: bytes = b"evil") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def everything_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(a folder that must stay untouched, the extraction target two levels inside it)."""
    target = tmp_path / "outer" / "data" / "into"
    target.mkdir(parents=True)
    return tmp_path / "outer", target


def test_tar_and_zip_extract_files(tmp_path: Path):
    members = {"top/a.txt": b"A", "top/sub/b.txt": b"B"}
    for archive in (write_tgz(tmp_path / "x.tgz", members), write_zip(tmp_path / "x.zip", members)):
        into = tmp_path / archive.suffix[1:]
        into.mkdir()
        safe_extract(archive, into)
        assert (into / "top/a.txt").read_bytes() == b"A" and (into / "top/sub/b.txt").read_bytes() == b"B"


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/abs/evil.txt"])
def test_tar_member_leaving_target_is_refused(box, name: str):
    outer, target = box
    archive = tar_with(outer.parent / "bad.tgz", member("top/ok.txt"), member(name))
    with pytest.raises(PrepareError, match=r"refusing to extract"):
        safe_extract(archive, target)
    assert everything_under(outer) <= {"data", "data/into", "data/into/top", "data/into/top/ok.txt"}
    assert not Path("/abs/evil.txt").exists()


@pytest.mark.parametrize("link", ["../../outside", "/etc", "a/../../../x"])
def test_tar_outward_symlink_is_refused(box, link: str):
    outer, target = box
    # The classic attack: a link out of the target, then a file written through it.
    archive = tar_with(outer.parent / "bad.tgz", member("top/escape", tarfile.SYMTYPE, link),
                       member("top/escape/evil.txt"))
    with pytest.raises(PrepareError, match=r"points (outside|to absolute)"):
        safe_extract(archive, target)
    assert everything_under(outer) <= {"data", "data/into", "data/into/top"}


def test_tar_outward_hardlink_is_refused(box):
    outer, target = box
    archive = tar_with(outer.parent / "bad.tgz", member("top/h", tarfile.LNKTYPE, "../../secret"))
    with pytest.raises(PrepareError, match="contains '..'"):
        safe_extract(archive, target)
    assert everything_under(outer) <= {"data", "data/into", "data/into/top"}


def test_tar_device_file_is_refused(box):
    outer, target = box
    archive = tar_with(outer.parent / "bad.tgz", member("top/dev", tarfile.CHRTYPE))
    with pytest.raises(PrepareError, match="refusing to extract"):
        safe_extract(archive, target)


def test_tar_symlink_inside_the_archive_is_kept(tmp_path: Path):
    archive = tar_with(tmp_path / "ok.tgz", member("top/a/file.txt"),
                       member("top/b/link", tarfile.SYMTYPE, "../a/file.txt"))
    into = tmp_path / "into"
    into.mkdir()
    safe_extract(archive, into)
    assert (into / "top/b/link").is_symlink() and (into / "top/b/link").read_bytes() == b"evil"


def test_tar_symlink_chain_escaping_only_when_resolved_is_refused(box):
    outer, target = box
    # Read as text, top/b -> top/a/a/a/../.. = top/a stays inside; resolved, a -> . makes it
    # top/../.., outside. The standard `data` filter resolves links already on disk.
    archive = tar_with(outer.parent / "bad.tgz", member("top/a", tarfile.SYMTYPE, "."),
                       member("top/b", tarfile.SYMTYPE, "a/a/a/../.."), member("top/b/evil.txt"))
    with pytest.raises(PrepareError, match="refusing to extract"):
        safe_extract(archive, target)
    assert everything_under(outer) <= {"data", "data/into", "data/into/top", "data/into/top/a"}


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/abs/evil.txt", "..\\evil.txt"])
def test_zip_member_leaving_target_is_refused_before_writing(box, name: str):
    outer, target = box
    archive = write_zip(outer.parent / "bad.zip", {"top/ok.txt": b"ok", name: b"evil"})
    with pytest.raises(PrepareError, match="refusing to extract"):
        safe_extract(archive, target)
    assert everything_under(outer) == {"data", "data/into"}  # checked before anything is written


def test_zip_outward_symlink_is_refused(box):
    outer, target = box
    archive = outer.parent / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("top/escape")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../outside")
    with pytest.raises(PrepareError, match="points outside"):
        safe_extract(archive, target)
    assert everything_under(outer) == {"data", "data/into"}


def test_damaged_and_foreign_files_are_errors(tmp_path: Path):
    good = write_tgz(tmp_path / "x.tgz", {f"top/{i}.bin": bytes(range(256)) * 40 for i in range(5)})
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "into").mkdir()
    with pytest.raises(PrepareError, match=r"cut.tgz: (damaged archive|neither a tar)"):
        safe_extract(cut, tmp_path / "into")
    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    with pytest.raises(PrepareError, match="neither a tar nor a zip"):
        safe_extract(text, tmp_path / "into")

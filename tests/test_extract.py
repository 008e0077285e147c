"""Extraction cannot write outside its target: `..`, absolute paths, links of any kind, devices
and FIFOs are refused before anything is written; a decompression bomb is stopped and cleaned up."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest

from fakedata import write_tgz, write_zip
from hdml.data.datasets import extract as extract_module
from hdml.data.datasets.download import PrepareError
from hdml.data.datasets.extract import GB, Budget, safe_extract

shutil_usage = namedtuple("shutil_usage", "total used free")


def extract(archive: Path, into: Path, limit: int = GB) -> None:
    safe_extract(archive, into, limit=limit)


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
        extract(archive, into)
        assert (into / "top/a.txt").read_bytes() == b"A" and (into / "top/sub/b.txt").read_bytes() == b"B"


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/abs/evil.txt"])
def test_tar_member_leaving_target_is_refused(box, name: str):
    outer, target = box
    archive = tar_with(outer.parent / "bad.tgz", member("top/ok.txt"), member(name))
    with pytest.raises(PrepareError, match=r"refusing to extract"):
        extract(archive, target)
    assert everything_under(outer) <= {"data", "data/into", "data/into/top", "data/into/top/ok.txt"}
    assert not Path("/abs/evil.txt").exists()


@pytest.mark.parametrize("bad", [
    member("top/escape", tarfile.SYMTYPE, "../../outside"),
    member("top/abs", tarfile.SYMTYPE, "/etc"),
    member("top/inward", tarfile.SYMTYPE, "ok.txt"),  # harmless, but the datasets have no links
    member("top/hard", tarfile.LNKTYPE, "top/ok.txt"),
    member("top/hard-out", tarfile.LNKTYPE, "../../secret"),
    member("top/chr", tarfile.CHRTYPE),
    member("top/blk", tarfile.BLKTYPE),
    member("top/fifo", tarfile.FIFOTYPE),
], ids=lambda m: m.name)
def test_tar_link_device_and_fifo_members_are_refused_before_writing(box, bad: tarfile.TarInfo):
    outer, target = box
    archive = tar_with(outer.parent / "bad.tgz", member("top/ok.txt"), bad, member("top/later.txt"))
    with pytest.raises(PrepareError, match="refusing to extract"):
        extract(archive, target)
    assert everything_under(outer) == {"data", "data/into"}  # not even the regular file before it


def test_tar_symlink_chain_escaping_only_when_resolved_is_refused(box):
    outer, target = box
    # Read as text, top/b -> top/a/a/a/../.. = top/a stays inside; resolved, a -> . makes it
    # top/../.., outside.
    archive = tar_with(outer.parent / "bad.tgz", member("top/a", tarfile.SYMTYPE, "."),
                       member("top/b", tarfile.SYMTYPE, "a/a/a/../.."), member("top/b/evil.txt"))
    with pytest.raises(PrepareError, match="refusing to extract"):
        extract(archive, target)
    assert everything_under(outer) == {"data", "data/into"}


def long_chain_tar(path: Path, victim_depth: int, depth: int = 17, width: int = 250) -> Path:
    """The pattern of CVE-2025-4517: folders with 250-character names reached through short
    links (top/s0/s1/... resolves to a path longer than PATH_MAX, where os.path.realpath stops
    resolving and reads the rest as text), a `.` link at the bottom, then a link whose text
    stays inside the archive while its resolution climbs `victim_depth` folders above `top`,
    and a file written through it."""
    members, short = [member("top", tarfile.DIRTYPE)], "top"
    for i in range(depth):
        members += [member(f"{short}/{'d' * width}", tarfile.DIRTYPE),
                    member(f"{short}/s{i}", tarfile.SYMTYPE, "d" * width)]
        short = f"{short}/s{i}"
    members.append(member(f"{short}/e", tarfile.SYMTYPE, "."))
    target = "/".join([f"s{i}" for i in range(depth)] + ["e"] * victim_depth + [".."] * (depth + victim_depth))
    members += [member("top/esc", tarfile.SYMTYPE, target), member("top/esc/victim.txt")]
    return tar_with(path, *members, data=b"overwritten")


def test_tar_long_symlink_chain_cannot_write_outside(box):
    outer, target = box
    victim = outer / "victim.txt"  # target is outer/data/into: top's parent's parent's parent
    victim.write_text("precious")
    archive = long_chain_tar(outer.parent / "chain.tar", victim_depth=3)
    with pytest.raises(PrepareError, match="is a link.*refusing to extract"):
        extract(archive, target)
    assert victim.read_text() == "precious"
    assert everything_under(outer) == {"data", "data/into", "victim.txt"}


def test_prepare_with_a_long_symlink_chain_archive_leaves_root_alone(tmp_path: Path, capsys):
    from hdml.cli import main

    root = tmp_path / "data"
    root.mkdir()
    victim = tmp_path / "victim.txt"  # links resolve from data/cub200/.staging.X/top: 4 up
    victim.write_text("precious")
    archive = long_chain_tar(tmp_path / "CUB_200_2011.tgz", victim_depth=4)
    code = main(["prepare", "cub200", "--root", str(root), "--archive", str(archive)])
    assert victim.read_text() == "precious"
    assert code == 2 and "is a link" in capsys.readouterr().err
    assert not [p for p in root.rglob("*") if p.is_symlink()]
    assert not (root / "cub200" / "split.csv").exists()


def test_zip_links_devices_and_fifos_are_refused_before_writing(box):
    outer, target = box
    for i, (kind, data) in enumerate([(stat.S_IFLNK, "../../../outside"), (stat.S_IFLNK, "ok.txt"),
                                      (stat.S_IFIFO, ""), (stat.S_IFCHR, "")]):
        archive = outer.parent / f"bad{i}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("top/ok.txt", "ok")
            info = zipfile.ZipInfo("top/special")
            info.external_attr = (kind | 0o777) << 16
            zf.writestr(info, data)
        with pytest.raises(PrepareError, match=r"(link|special file).*refusing to extract"):
            extract(archive, target)
        assert everything_under(outer) == {"data", "data/into"}


def test_a_destination_resolving_outside_the_root_is_refused(box):
    outer, target = box
    (target / "top").symlink_to(outer)  # a link already there: the write must not follow it
    for archive in (write_tgz(outer.parent / "x.tgz", {"top/sub/evil.txt": b"evil"}),
                    write_zip(outer.parent / "x.zip", {"top/sub/evil.txt": b"evil"})):
        with pytest.raises(PrepareError, match=r"top is not a folder \(a link\?\); refusing to extract"):
            extract(archive, target)
        assert everything_under(outer) == {"data", "data/into", "data/into/top"}


def test_empty_folders_are_created(tmp_path: Path):
    tgz = tar_with(tmp_path / "x.tgz", member("./", tarfile.DIRTYPE), member("./top/empty/deeper", tarfile.DIRTYPE),
                   member("./top/a.txt"))
    zipped = tmp_path / "x.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("top/empty/deeper/", b"")
        zf.writestr("top/a.txt", b"evil")
    for archive in (tgz, zipped):
        into = tmp_path / archive.suffix[1:]
        into.mkdir()
        extract(archive, into)
        assert everything_under(into) == {"top", "top/empty", "top/empty/deeper", "top/a.txt"}


def zeros_zip(path: Path, n: int, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"top/{i}.bin", bytes(size))
    return path


def zeros_tgz(path: Path, n: int, size: int) -> Path:
    return write_tgz(path, {f"top/{i}.bin": bytes(size) for i in range(n)})


@pytest.mark.parametrize("make", [zeros_zip, zeros_tgz])
def test_decompression_bomb_is_refused_from_its_declared_sizes(tmp_path: Path, make):
    archive = make(tmp_path / "bomb", 8, 8 << 20)  # 64 MB of zeros in under 1 MB
    assert archive.stat().st_size < (1 << 20)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(PrepareError, match="declares 67108864 bytes.*over the limit of 16777216"):
        extract(archive, into, limit=16 << 20)
    assert not any(into.iterdir())


@pytest.mark.parametrize("make", [zeros_zip, zeros_tgz])
def test_bytes_written_past_the_limit_stop_extraction_and_are_removed(tmp_path: Path, make, monkeypatch):
    # Headers that understate the sizes, simulated by skipping the declared-size check: the
    # bytes actually written are counted against the same limit.
    monkeypatch.setattr(extract_module, "_check_sizes", lambda *a: None)
    archive = make(tmp_path / "bomb", 8, 4 << 20)
    into = tmp_path / "into"
    into.mkdir()
    (into / "kept.txt").write_text("was here before")
    with pytest.raises(PrepareError, match="more than 10485760 bytes written"):
        extract(archive, into, limit=10 << 20)
    assert [p.name for p in into.iterdir()] == ["kept.txt"]


def test_budget_counts_every_byte(tmp_path: Path):
    budget = Budget(tmp_path / "a.zip", limit=10)
    budget.copy(io.BytesIO(b"x" * 6), tmp_path / "one")
    with pytest.raises(PrepareError, match="more than 10 bytes"):
        budget.copy(io.BytesIO(b"x" * 5), tmp_path / "two")
    assert (tmp_path / "one").read_bytes() == b"x" * 6 and (tmp_path / "two").read_bytes() == b""


def test_archive_larger_than_the_free_disk_is_refused(tmp_path: Path, monkeypatch):
    archive = write_zip(tmp_path / "x.zip", {"top/a.bin": bytes(1000)})
    into = tmp_path / "into"
    into.mkdir()
    monkeypatch.setattr(extract_module.shutil, "disk_usage",
                        lambda p: shutil_usage(total=1 << 40, used=0, free=1 << 20))
    from hdml.core.disk import MARGIN, DiskSpaceError

    with pytest.raises(DiskSpaceError, match=rf"extracting x.zip .*needs {1000 + MARGIN:,} bytes .* "
                                             rf"only 1,048,576 bytes .* refusing to extract"):
        extract(archive, into)
    assert not any(into.iterdir())


def test_prepare_refuses_a_bomb_over_the_datasets_limit(tmp_path: Path, monkeypatch, capsys):
    from hdml.cli import main
    from hdml.data.datasets import cub200

    monkeypatch.setattr(cub200, "MAX_EXTRACTED", 16 << 20)
    archive = zeros_tgz(tmp_path / "CUB_200_2011.tgz", 8, 8 << 20)
    root = tmp_path / "data"
    assert main(["prepare", "cub200", "--root", str(root), "--archive", str(archive)]) == 2
    assert "over the limit of 16777216 for this dataset" in capsys.readouterr().err
    assert [p.name for p in (root / "cub200").iterdir()] == []


def test_damaged_and_foreign_files_are_errors(tmp_path: Path):
    good = write_tgz(tmp_path / "x.tgz", {f"top/{i}.bin": bytes(range(256)) * 40 for i in range(5)})
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "into").mkdir()
    with pytest.raises(PrepareError, match=r"cut.tgz: (damaged archive|neither a tar)"):
        extract(cut, tmp_path / "into")
    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    with pytest.raises(PrepareError, match="neither a tar nor a zip"):
        extract(text, tmp_path / "into")

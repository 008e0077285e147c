"""`hdml prepare cub200` on a generated archive in the exact CUB-200-2011 layout."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pytest

from fakedata import Fake, cub, write_tgz
from hdml.cli import main
from hdml.data.datasets import cub200, get_dataset
from hdml.data.datasets.download import PrepareError
from httpserver import FileServer


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_prepared(root: Path, fake: Fake) -> pd.DataFrame:
    """split.csv holds exactly the fake's images with their class ids, split by the class rule."""
    split = pd.read_csv(root / "cub200" / "split.csv")
    assert list(split.columns) == ["path", "label", "split"]
    assert dict(zip(split["path"], split["label"], strict=True)) == fake.labels
    assert set(split.loc[split["split"] == "train", "label"]) == fake.train_classes == {1, 100}
    assert set(split.loc[split["split"] == "test", "label"]) == fake.test_classes == {101, 200}
    assert (split["split"] == "train").sum() == 6 and (split["split"] == "test").sum() == 6
    assert all((root / "cub200" / p).is_file() for p in split["path"])
    assert not list((root / "cub200").glob(".staging*"))
    return split


def test_prepare_from_mirror_via_cli(http_server: FileServer, tmp_path: Path, caplog, capsys):
    fake = cub(tmp_path)
    url = http_server.add("/CUB_200_2011.tgz", fake.files["archive"].read_bytes())
    root = tmp_path / "data"
    with caplog.at_level(logging.WARNING, "hdml.prepare"):
        rc = main(["prepare", "cub200", "--root", str(root), "--url", url, "--md5", md5(fake.files["archive"])])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(root / "cub200" / "split.csv")
    check_prepared(root, fake)
    # Not the official archive: counts are reported, with a warning, not asserted.
    assert "not the official archive: split has train 2 classes / 6 images, test 2 classes / 6 images" in caplog.text
    assert (root / "downloads" / "CUB_200_2011.tgz").is_file()
    assert (root / "cub200" / "CUB_200_2011" / "train_test_split.txt").is_file()


def test_prepare_from_local_archive_and_again_replaces(tmp_path: Path):
    fake = cub(tmp_path)
    root = tmp_path / "data"
    prepare = get_dataset("cub200").prepare
    prepare(root, urls=None, md5=None, archive=fake.files["archive"])
    stale = root / "cub200" / "CUB_200_2011" / "images" / "stale.jpg"
    stale.write_bytes(b"old")
    prepare(root, urls=None, md5=None, archive=fake.files["archive"])
    check_prepared(root, fake)
    assert not stale.exists()  # the old tree is replaced, not merged
    assert not (root / "downloads").exists()


def test_prepare_from_extracted_folder_links_it(tmp_path: Path):
    fake = cub(tmp_path)
    extracted = tmp_path / "mine"
    extracted.mkdir()
    import tarfile

    with tarfile.open(fake.files["archive"]) as tf:
        tf.extractall(extracted, filter="data")
    root = tmp_path / "data"
    cub200.prepare(root, archive=extracted / "CUB_200_2011")
    assert (root / "cub200" / "CUB_200_2011").is_symlink()
    check_prepared(root, fake)


def test_official_archive_counts_are_asserted(tmp_path: Path, monkeypatch, caplog):
    fake = cub(tmp_path)
    monkeypatch.setattr(cub200, "MD5", md5(fake.files["archive"]))
    root = tmp_path / "data"
    with pytest.raises(PrepareError, match="official archive but split has train 2 classes / 6 images.*"
                                           "expected train 100 classes / 5864 images"):
        cub200.prepare(root, archive=fake.files["archive"])
    assert not (root / "cub200" / "split.csv").exists()
    assert not (root / "cub200" / "CUB_200_2011").exists()
    monkeypatch.setattr(cub200, "EXPECTED", (2, 6, 2, 6))
    with caplog.at_level(logging.WARNING, "hdml.prepare"):
        cub200.prepare(root, archive=fake.files["archive"])
    assert "not the official archive" not in caplog.text
    check_prepared(root, fake)


def test_wrong_checksum_extracts_nothing(http_server: FileServer, tmp_path: Path, capsys):
    fake = cub(tmp_path)
    url = http_server.add("/CUB_200_2011.tgz", fake.files["archive"].read_bytes())
    root = tmp_path / "data"
    assert main(["prepare", "cub200", "--root", str(root), "--url", url, "--md5", "0" * 32]) == 2
    err = capsys.readouterr().err
    assert f"could not download CUB_200_2011.tgz:\n  {url}: checksum mismatch" in err and "0" * 32 in err
    assert list((root / "cub200").iterdir()) == []
    assert list((root / "downloads").iterdir()) == []


def test_404_then_second_mirror(http_server: FileServer, tmp_path: Path):
    fake = cub(tmp_path)
    url = http_server.add("/mirror2/CUB_200_2011.tgz", fake.files["archive"].read_bytes())
    root = tmp_path / "data"
    cub200.prepare(root, urls=[http_server.url("/mirror1/CUB_200_2011.tgz"), url], md5=md5(fake.files["archive"]))
    check_prepared(root, fake)
    assert [p for p, _ in http_server.requests] == ["/mirror1/CUB_200_2011.tgz", "/mirror2/CUB_200_2011.tgz"]


def test_unsafe_archive_leaves_no_dataset_and_nothing_outside(tmp_path: Path):
    archive = write_tgz(tmp_path / "evil.tgz", {"CUB_200_2011/images.txt": b"1 001.A/a.jpg\n",
                                                "../../escaped.txt": b"evil"})
    root = tmp_path / "deep" / "data"
    with pytest.raises(PrepareError, match="contains '..'"):
        cub200.prepare(root, archive=archive)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert list((root / "cub200").iterdir()) == []


def test_missing_image_and_bad_metadata_are_named(tmp_path: Path):
    members = {"CUB_200_2011/images.txt": b"1 001.A/a.jpg\n2 002.B/b.jpg\n",
               "CUB_200_2011/image_class_labels.txt": b"1 1\n2 2\n",
               "CUB_200_2011/images/001.A/a.jpg": b"x"}
    with pytest.raises(PrepareError, match="1 listed image.* missing, e.g. CUB_200_2011/images/002.B/b.jpg"):
        cub200.prepare(tmp_path / "d1", archive=write_tgz(tmp_path / "a.tgz", members))
    members["CUB_200_2011/image_class_labels.txt"] = b"1 1\n2 7\n"
    with pytest.raises(PrepareError, match="image 2 .*002.B/b.jpg.* has class 7"):
        cub200.prepare(tmp_path / "d2", archive=write_tgz(tmp_path / "b.tgz", members))
    del members["CUB_200_2011/image_class_labels.txt"]
    with pytest.raises(PrepareError, match="image_class_labels.txt: missing"):
        cub200.prepare(tmp_path / "d3", archive=write_tgz(tmp_path / "c.tgz", members))
    for d in ("d1", "d2", "d3"):
        assert not (tmp_path / d / "cub200" / "split.csv").exists()


def test_prepare_on_a_too_small_disk_stops_before_download(http_server: FileServer, tmp_path: Path, monkeypatch,
                                                           capsys):
    import collections
    import shutil

    from hdml.core.disk import MARGIN

    fake = cub(tmp_path)
    body = fake.files["archive"].read_bytes()
    url = http_server.add("/CUB_200_2011.tgz", body)
    root = tmp_path / "data"
    # the archive (its Content-Length) and what it unpacks to, by CUB's published ratio
    needed = len(body) + len(body) * cub200.SIZE.extracted // cub200.SIZE.archive + MARGIN
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed - 1))
    args = ["prepare", "cub200", "--root", str(root), "--url", url, "--md5", md5(fake.files["archive"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{root / 'downloads'}: downloading and extracting CUB_200_2011.tgz needs {needed:,} bytes" in err
    assert f"only {needed - 1:,} bytes" in err and "put --root on a larger disk" in err
    assert not (root / "downloads" / "CUB_200_2011.tgz.part").exists()
    assert not (root / "cub200" / "split.csv").exists() and len(http_server.requests) == 1
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed))
    assert main(args) == 0
    check_prepared(root, fake)

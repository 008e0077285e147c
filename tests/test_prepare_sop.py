"""`hdml prepare sop` from a generated zip in the exact Stanford Online Products layout,
served the way Google Drive serves it (an HTML confirm page first)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from fakedata import edited_zip, sop
from hdml.data.datasets import sop as sop_module
from hdml.data.datasets.download import PrepareError
from httpserver import FileServer


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_prepare_through_drive_confirm_page(http_server: FileServer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("hdml.data.datasets.download.RETRY_WAIT", 0.0)
    fake = sop(tmp_path)
    page = f"""<html><body><form id="download-form" action="{http_server.url('/download')}" method="get">
    <input type="hidden" name="id" value="ID"><input type="hidden" name="export" value="download">
    <input type="hidden" name="confirm" value="t"></form></body></html>"""
    first = http_server.add("/uc", page.encode(), content_type="text/html")
    http_server.add("/download", fake.files["archive"].read_bytes(), drop_after=1000, drops=1)
    root = tmp_path / "data"
    sop_module.prepare(root, urls=[first + "?export=download&id=ID"], md5=md5(fake.files["archive"]))
    split = pd.read_csv(root / "sop" / "split.csv")
    assert dict(zip(split["path"], split["label"], strict=True)) == fake.labels
    assert split.groupby("split")["label"].agg(lambda s: set(s)).to_dict() == {"train": {1, 2}, "test": {3, 4}}
    assert (split["split"] == "train").sum() == 6 and (split["split"] == "test").sum() == 6
    assert all((root / "sop" / p).is_file() for p in split["path"])
    assert split["path"].str.match(r"Stanford_Online_Products/(bicycle|cabinet)_final/\d+_\d\.JPG").all()
    # The dropped transfer is resumed through the confirm page again. This server answers the
    # page's Range request with 416, so the page is fetched once more without one.
    assert http_server.requests == [("/uc?export=download&id=ID", None),
                                    ("/download?id=ID&export=download&confirm=t", None),
                                    ("/uc?export=download&id=ID", "bytes=1000-"),
                                    ("/uc?export=download&id=ID", None),
                                    ("/download?id=ID&export=download&confirm=t", "bytes=1000-")]


def test_split_comes_from_the_files_not_the_class_ids(tmp_path: Path):
    fake = sop(tmp_path)

    def move_class_2_to_test(name: str, data: bytes, members: dict[str, bytes]) -> bytes:
        train = members["Stanford_Online_Products/Ebay_train.txt"].decode().splitlines(keepends=True)
        if name.endswith("Ebay_train.txt"):
            return "".join(line for line in train if " 2 2 " not in line).encode()
        if name.endswith("Ebay_test.txt"):
            return data + "".join(line for line in train if " 2 2 " in line).encode()
        return data

    moved = edited_zip(fake.files["archive"], tmp_path / "moved.zip", move_class_2_to_test)
    sop_module.prepare(tmp_path / "data", archive=moved)
    split = pd.read_csv(tmp_path / "data" / "sop" / "split.csv")
    assert split.groupby("split")["label"].agg(lambda s: set(s)).to_dict() == {"train": {1}, "test": {2, 3, 4}}


def test_bad_header_is_named(tmp_path: Path):
    fake = sop(tmp_path)
    bad = edited_zip(fake.files["archive"], tmp_path / "bad.zip", lambda name, data, _: data.replace(
        b"class_id", b"label", 1) if name.endswith("Ebay_test.txt") else data)
    with pytest.raises(PrepareError, match=r"Ebay_test.txt: header \['image_id', 'label'"):
        sop_module.prepare(tmp_path / "data", archive=bad)
    assert list((tmp_path / "data" / "sop").iterdir()) == []


def test_class_in_both_files_is_refused(tmp_path: Path):
    fake = sop(tmp_path)
    bad = edited_zip(fake.files["archive"], tmp_path / "bad.zip", lambda name, data, _: data.replace(
        b" 3 1 ", b" 1 1 ") if name.endswith("Ebay_test.txt") else data)
    with pytest.raises(PrepareError, match=r"classes in both train and test: \[1\]"):
        sop_module.prepare(tmp_path / "data", archive=bad)

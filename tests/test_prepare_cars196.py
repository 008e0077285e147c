"""`hdml prepare cars196` from the original files (car_ims.tgz + cars_annos.mat) and from the
Kaggle by-classes-folder zip, each generated in its exact layout."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pytest

from fakedata import Fake, cars_kaggle, cars_original, edited_zip
from hdml.data.datasets import cars196
from hdml.data.datasets.download import PrepareError
from httpserver import FileServer


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_prepared(root: Path, fake: Fake) -> pd.DataFrame:
    split = pd.read_csv(root / "cars196" / "split.csv")
    assert dict(zip(split["path"], split["label"], strict=True)) == fake.labels
    by_split = split.groupby("split")["label"].agg(lambda s: set(s)).to_dict()
    assert by_split == {"train": {1, 98}, "test": {99, 196}}  # classes 1-98 train, 99-196 test
    assert (split["split"] == "train").sum() == 6 and (split["split"] == "test").sum() == 6
    assert all((root / "cars196" / p).is_file() for p in split["path"])
    assert not list((root / "cars196").glob(".staging*"))
    return split


def test_original_files_from_mirrors(http_server: FileServer, tmp_path: Path, caplog):
    fake = cars_original(tmp_path)
    urls = [http_server.add("/car196/car_ims.tgz", fake.files["images"].read_bytes()),
            http_server.add("/car196/cars_annos.mat", fake.files["annos"].read_bytes())]
    root = tmp_path / "data"
    with caplog.at_level(logging.WARNING, "hdml.prepare"):
        cars196.prepare(root, urls=urls, md5=md5(fake.files["images"]))
    split = check_prepared(root, fake)
    assert split["path"].str.startswith("car_ims/").all()
    assert (root / "cars196" / "cars_annos.mat").read_bytes() == fake.files["annos"].read_bytes()
    assert "not the official archive" in caplog.text


def test_original_archive_with_annotations_beside_it(tmp_path: Path, monkeypatch):
    fake = cars_original(tmp_path)
    root = tmp_path / "data"
    # Both files official: counts are asserted (here against the fake's own).
    monkeypatch.setattr(cars196, "IMAGES_MD5", md5(fake.files["images"]))
    monkeypatch.setattr(cars196, "ANNOS_MD5", md5(fake.files["annos"]))
    with pytest.raises(PrepareError, match="official archive but split has train 2 classes / 6 images"):
        cars196.prepare(root, archive=fake.files["images"])
    monkeypatch.setattr(cars196, "EXPECTED", (2, 6, 2, 6))
    cars196.prepare(root, archive=fake.files["images"])
    check_prepared(root, fake)


def test_kaggle_zip_from_mirror_and_from_file(http_server: FileServer, tmp_path: Path):
    fake = cars_kaggle(tmp_path)
    url = http_server.add("/kaggle/cars.zip", fake.files["archive"].read_bytes())
    root = tmp_path / "data"
    cars196.prepare(root, urls=[url])  # a .zip URL: the Kaggle layout, no checksum published
    split = check_prepared(root, fake)
    # train and test folders merged; class 99's '/' became '-' in its folder name
    assert "car_data/car_data/test/Ram C-V Cargo Van Minivan 2012/00003.jpg" in set(split["path"])
    assert {"car_data/car_data/train/Make1 Model 1 2012/00001.jpg",
            "car_data/car_data/test/Make1 Model 1 2012/00001.jpg"} <= set(split["path"])
    cars196.prepare(tmp_path / "data2", archive=fake.files["archive"])
    check_prepared(tmp_path / "data2", fake)


def test_kaggle_image_in_wrong_class_folder_is_named(tmp_path: Path):
    fake = cars_kaggle(tmp_path)
    bad = edited_zip(fake.files["archive"], tmp_path / "bad.zip", lambda name, data, _: data.replace(
        b",1\n", b",98\n", 1) if name == "anno_train.csv" else data)
    with pytest.raises(PrepareError, match=r"anno_train.csv: 00001.jpg has class 98 .* folder 'Make1 Model 1 2012'"):
        cars196.prepare(tmp_path / "data", archive=bad)
    assert not (tmp_path / "data" / "cars196" / "split.csv").exists()


def test_dead_original_mirrors_fall_back_to_kaggle(http_server: FileServer, tmp_path: Path, monkeypatch):
    fake = cars_kaggle(tmp_path)
    monkeypatch.setattr(cars196, "IMAGES_URLS", [http_server.url("/dead/car_ims.tgz")])
    monkeypatch.setattr(cars196, "KAGGLE_URLS", [http_server.add("/api/download/cars",
                                                                 fake.files["archive"].read_bytes())])
    cars196.prepare(tmp_path / "data")
    check_prepared(tmp_path / "data", fake)
    assert [p for p, _ in http_server.requests] == ["/dead/car_ims.tgz", "/api/download/cars"]


def test_no_mirror_left_explains_the_kaggle_token(http_server: FileServer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(cars196, "IMAGES_URLS", [http_server.url("/dead/car_ims.tgz")])
    monkeypatch.setattr(cars196, "KAGGLE_URLS", [http_server.add("/api/download/cars", status=401)])
    with pytest.raises(PrepareError) as err:
        cars196.prepare(tmp_path / "data")
    text = str(err.value)
    assert "/dead/car_ims.tgz: HTTP 404" in text and "/api/download/cars: HTTP 401" in text
    assert "API token" in text and "--archive" in text
    assert list((tmp_path / "data" / "cars196").iterdir()) == []


def test_unreadable_annotations_are_named(tmp_path: Path):
    fake = cars_original(tmp_path)
    fake.files["annos"].write_bytes(b"not a mat file")
    with pytest.raises(PrepareError, match="cars_annos.mat: cannot read the annotations"):
        cars196.prepare(tmp_path / "data", archive=fake.files["images"])

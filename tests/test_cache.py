"""The decoded-image cache gives the same pixels as decoding, and is never used when stale."""
import shutil

import numpy as np
import torch

from hdml.data.cache import build_cache, load_cached
from hdml.data.files import read_split
from hdml.data.tensors import ImageTensors, load_splits
from hdml.train.trainer import train_run


def copy_digits(digits_root, tmp_path):
    shutil.copytree(digits_root / "digits", tmp_path / "digits")
    return tmp_path


def test_cache_equals_decoding_and_is_memory_mapped(digits_root, tmp_path):
    root = copy_digits(digits_root, tmp_path)
    build_cache(root, "digits", 8, 1, workers=2, chunk=100)
    split = read_split(root, "digits")
    for name in ("train", "test"):
        cached = load_cached(root, "digits", 8, 1, name)
        decoded = ImageTensors.from_frame(split[split.split == name], 8, 1)
        assert isinstance(cached, np.memmap) and cached.dtype == np.uint8
        assert np.array_equal(cached, decoded.pixels)
    cfg = {"image": {"resize": 8, "crop": 8, "flip": False, "normalize": "unit"}, "channels_last": True}
    train, test, _ = load_splits(root, "digits", cfg, 1, torch.device("cpu"), "unit")
    assert isinstance(train.pixels, np.memmap) and len(test) == (split.split == "test").sum()


def test_resized_cache_matches_resized_decode(digits_root, tmp_path):
    root = copy_digits(digits_root, tmp_path)
    build_cache(root, "digits", 12, 1)
    split = read_split(root, "digits")
    decoded = ImageTensors.from_frame(split[split.split == "test"], 12, 1)
    assert np.array_equal(load_cached(root, "digits", 12, 1, "test"), decoded.pixels)
    assert load_cached(root, "digits", 16, 1, "test") is None


def test_stale_cache_is_not_used(digits_root, tmp_path, caplog):
    root = copy_digits(digits_root, tmp_path)
    build_cache(root, "digits", 8, 1)
    csv = root / "digits/split.csv"
    csv.write_text(csv.read_text().replace("images/0000.png,0,train", "images/0000.png,0,test"))
    assert load_cached(root, "digits", 8, 1, "train") is None
    assert "stale image cache" in caplog.text


def test_training_from_cache_is_identical(digits_root, tmp_path):
    root = copy_digits(digits_root, tmp_path)
    sets = {"steps": 20, "batch_size": 10, "device": "cpu", "eval_every": 0}
    plain = train_run(root=root, dataset="digits", method="npair", seed=0, out=tmp_path / "a", overrides=sets)
    build_cache(root, "digits", 8, 1)
    cached = train_run(root=root, dataset="digits", method="npair", seed=0, out=tmp_path / "b", overrides=sets)
    assert plain["metrics"] == cached["metrics"]


def test_too_small_disk_fails_before_writing_and_names_folder_and_bytes(digits_root, tmp_path, monkeypatch):
    import collections

    from hdml.cli import main
    from hdml.core.disk import DiskSpaceError
    from hdml.data.cache import cache_dir

    root = copy_digits(digits_root, tmp_path)
    n = len(read_split(root, "digits"))
    needed = n * 1 * 8 * 8
    usage = collections.namedtuple("usage", "total used free")
    probed = []

    def fake_usage(path):
        probed.append(path)
        return usage(10**12, 0, needed - 1)

    monkeypatch.setattr(shutil, "disk_usage", fake_usage)
    folder = cache_dir(root, "digits", 8)
    try:
        build_cache(root, "digits", 8, 1)
    except DiskSpaceError as exc:
        message = str(exc)
    else:
        raise AssertionError("no DiskSpaceError")
    assert str(folder) in message and f"{needed:,} bytes" in message and f"{needed - 1:,} bytes" in message
    assert not folder.exists()  # nothing written, not even the folder
    assert probed and all(p.exists() for p in probed)  # asked about the disk the folder will be on
    assert main(["cache", "digits", "--root", str(root), "--size", "8"]) == 2
    assert not folder.exists()

    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed))
    build_cache(root, "digits", 8, 1)
    assert load_cached(root, "digits", 8, 1, "train") is not None

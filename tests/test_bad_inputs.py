"""Bad input files end in a one-line error naming the file (exit code 2), not a traceback or a
bare library message: split.csv, the image cache, saved embeddings, YAML."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hdml.cli import main
from hdml.data.datasets.download import PrepareError
from hdml.data.datasets.extract import check_split


def train(root: Path, out: Path, *sets: str) -> list[str]:
    return ["train", "--dataset", "digits", "--method", "triplet", "--root", str(root), "--out", str(out),
            "--set", "steps=2", "--set", "device=cpu", *[a for s in sets for a in ("--set", s)]]


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


SPLITS = {
    "empty": ("", "not a readable split file"),
    "header only": ("path,label,split\n", "no train images"),
    "no test rows": ("path,label,split\na.png,1,train\n", "no test images"),
    "non-integer label": ("path,label,split\na.png,1,train\nb.png,2.5,test\n", "label '2.5' (row 2) is not an integer"),
    "text label": ("path,label,split\na.png,cat,train\nb.png,2,test\n", "label 'cat' (row 1) is not an integer"),
    "empty label": ("path,label,split\na.png,,train\nb.png,2,test\n", "label '' (row 1) is not an integer"),
    "shared class": ("path,label,split\na.png,1,train\nb.png,2,train\nc.png,2,test\n",
                     r"classes in both train and test: [2]"),
    "binary": ("\x00\xff\xfe garbage", "not a readable split file"),
}


@pytest.mark.parametrize("case", SPLITS)
def test_bad_split_csv_is_an_error_naming_it(tmp_path, capsys, case):
    text, message = SPLITS[case]
    split = tmp_path / "data" / "digits" / "split.csv"
    split.parent.mkdir(parents=True)
    split.write_bytes(text.encode("latin-1"))
    assert main(train(tmp_path / "data", tmp_path / "run")) == 2
    err = error_of(capsys)
    assert f"{split}: " in err and message in err


def test_prepare_refuses_non_integer_labels_and_shared_classes():
    frame = pd.DataFrame({"path": ["a", "b", "c"], "label": [1, 2, 2], "split": ["train", "train", "test"]})
    with pytest.raises(PrepareError, match=r"classes in both train and test: \[2\]"):
        check_split(frame, name="x", expected=(0, 0, 0, 0), official=False)
    frame = pd.DataFrame({"path": ["a", "b"], "label": [1.5, 2.0], "split": ["train", "test"]})
    with pytest.raises(PrepareError, match=r"label '1.5' \(row 1\) is not an integer"):
        check_split(frame, name="x", expected=(0, 0, 0, 0), official=False)


@pytest.fixture
def cached_root(digits_root, tmp_path) -> Path:
    """A copy of the digits data with a built image cache, for spoiling."""
    from hdml.data.cache import build_cache
    from hdml.data.datasets import get_dataset

    root = tmp_path / "data"
    shutil.copytree(digits_root, root)
    size = get_dataset("digits").run_defaults["image"]["resize"]
    build_cache(root, "digits", size, 1)
    return root / "digits" / f"cache-{size}"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.write_bytes(b""), "unreadable image cache"),
    (truncate, "unreadable image cache"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage" * 50), "unreadable image cache"),
    (lambda p: np.save(p, np.zeros((3, 1, 2, 2), np.uint8)), "expected uint8"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "unreadable image cache"),
])
def test_bad_cache_npy_is_an_error_naming_it(cached_root, tmp_path, capsys, spoil, message):
    spoil(cached_root / "train.npy")
    assert main(train(cached_root.parent.parent, tmp_path / "run")) == 2
    err = error_of(capsys)
    assert f"{cached_root / 'train.npy'}: " in err and message in err and "hdml cache digits" in err


def test_bad_cache_meta_is_an_error_naming_it(cached_root, tmp_path, capsys):
    (cached_root / "meta.json").write_text("{not json")
    assert main(train(cached_root.parent.parent, tmp_path / "run")) == 2
    assert f"{cached_root / 'meta.json'}: unreadable cache metadata" in error_of(capsys)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("dataset: digits\nmethod: triplet\nseed: 0\neval_ks: [1, 2]\n")
    pd.DataFrame({"step": [1], "nmi": [0.5], "f1": [0.1], "recall@1": [0.2]}).to_csv(run / "curve.csv", index=False)
    return run


def npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


GOOD = npz(embeddings=np.eye(6, dtype=np.float32), labels=np.array([0, 0, 1, 1, 2, 2]))


@pytest.mark.parametrize("data, message", [
    (b"", "unreadable embeddings"),
    (GOOD[: len(GOOD) // 2], "unreadable embeddings"),
    (b"PK\x03\x04" + bytes(100), "unreadable embeddings"),
    (npz(embeddings=np.eye(6, dtype=np.float32)), "unreadable embeddings"),  # no labels
    (npz(embeddings=np.eye(6, dtype=np.float32), labels=np.arange(5)), "expected n x d and n"),
])
def test_corrupt_embeddings_npz_is_an_error_naming_it(run_dir, capsys, data, message):
    (run_dir / "embeddings.npz").write_bytes(data)
    assert main(["evaluate", "--run", str(run_dir)]) == 2
    err = error_of(capsys)
    assert f"{run_dir / 'embeddings.npz'}: " in err and message in err
    assert not (run_dir / "evaluation.json").exists()


def test_good_embeddings_still_evaluate(run_dir):
    (run_dir / "embeddings.npz").write_bytes(GOOD)
    assert main(["evaluate", "--run", str(run_dir)]) == 0
    assert "recall@1" in json.loads((run_dir / "evaluation.json").read_text())["metrics"]


@pytest.mark.parametrize("text, message", [
    ("seeds: [0, 1\ndatasets: {}\n", "line 2: malformed YAML"),
    ("a: b: c\n", "line 1: malformed YAML"),
    ("- just\n- a list\n", "expected a mapping of keys to values, got a list"),
    ("\tdata_root: x\n", "malformed YAML"),
])
def test_malformed_yaml_is_an_error_naming_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    assert f"{path}:" in (err := error_of(capsys)) and message in err


def test_malformed_set_value_is_an_error(tmp_path, capsys):
    assert main(train(tmp_path, tmp_path / "run", "eval_ks=[1, 2")) == 2
    assert "'[1, 2': not a YAML value" in error_of(capsys)

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hdml.data.files import read_split
from hdml.data.tensors import BatchTransform, ImageTensors


def test_digits_split_is_zero_shot(digits_root):
    df = read_split(digits_root, "digits")
    assert len(df) == 1797
    train, test = df[df.split == "train"], df[df.split == "test"]
    assert set(train.label) == {0, 1, 2, 3, 4} and set(test.label) == {5, 6, 7, 8, 9}
    img = np.asarray(Image.open(df.path.iloc[0]))
    assert img.shape == (8, 8) and img.dtype == np.uint8 and img.max() > 200


def test_missing_split_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="hdml prepare digits"):
        read_split(tmp_path, "digits")


def test_bad_split_values(tmp_path):
    (tmp_path / "x").mkdir()
    pd.DataFrame({"path": ["a.png"], "label": [1], "split": ["dev"]}).to_csv(tmp_path / "x/split.csv", index=False)
    with pytest.raises(ValueError, match="split.csv: column split"):
        read_split(tmp_path, "x")


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        ImageTensors.from_frame(pd.DataFrame({"path": [str(bad)], "label": [0]}), 8, 3)


def test_transform_centre_crop_and_normalisation():
    pixels = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).reshape(2, 3, 6, 6)
    t = BatchTransform(4, True, "imagenet", torch.device("cpu"))
    out = t(pixels, train=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (pixels[:, :, 1:5, 1:5].float() / 255 - mean) / std)


def test_transform_random_crop_is_a_window_possibly_flipped():
    pixels = torch.randint(0, 255, (16, 1, 6, 6), dtype=torch.uint8)
    t = BatchTransform(4, True, "unit", torch.device("cpu"))
    out = t(pixels, train=True, gen=torch.Generator().manual_seed(0))
    raw = ((out * 0.5 + 0.5) * 255).round().to(torch.uint8)
    flips = 0
    for i in range(16):
        windows = [pixels[i, :, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        plain = any(torch.equal(raw[i], w) for w in windows)
        flipped = any(torch.equal(raw[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 0 < flips < 16


def test_centre_crop_starts_where_the_authors_does():
    """Their centre crop of 256 -> 227 starts at pixel 15 (half the odd margin rounded up)."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 1, 256, 256).contiguous()
    out = BatchTransform(227, False, "unit", torch.device("cpu"))(pixels, train=False)
    raw = ((out * 0.5 + 0.5) * 255).round().to(torch.uint8)
    assert raw[0, 0, 0, 0] == 15 and raw[0, 0, 0, -1] == 241  # columns 15..241, 14 left over on the right
    assert torch.equal(raw, pixels[:, :, 15:242, 15:242])


def test_caffe_normalisation_is_bgr_minus_mean():
    pixels = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    out = BatchTransform(1, False, "caffe", torch.device("cpu"))(pixels, train=False)
    assert out.flatten().tolist() == [30 - 104, 20 - 117, 10 - 123]

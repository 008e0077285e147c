"""The per-image pipeline equals the batch pipeline pixel for pixel; bad images are named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fakedata import cub, jpeg
from hdml.data.datasets import cub200
from hdml.data.streaming import ImageTransform, SplitImages, split_images
from hdml.data.tensors import BatchTransform, ImageTensors

CPU = torch.device("cpu")


def random_pixels(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("normalize,channels", [("imagenet", 3), ("caffe", 3), ("unit", 1)])
def test_same_offsets_and_flips_give_the_batch_pixels(normalize: str, channels: int):
    pixels = random_pixels(8, channels, 12)
    batch = BatchTransform(9, True, normalize, CPU)(pixels, train=True, gen=torch.Generator().manual_seed(3))
    # The offsets and flips BatchTransform drew, drawn again in its order from the same seed.
    gen = torch.Generator().manual_seed(3)
    tops, lefts = torch.randint(0, 4, (8,), generator=gen), torch.randint(0, 4, (8,), generator=gen)
    flips = torch.rand(8, generator=gen) < 0.5
    assert 0 < int(flips.sum()) < 8  # both branches are exercised
    one = ImageTransform(9, True, normalize)
    for i in range(8):
        assert torch.equal(one.apply(pixels[i], int(tops[i]), int(lefts[i]), bool(flips[i])), batch[i])


@pytest.mark.parametrize("seed", range(5))
def test_one_image_draws_like_a_batch_of_one(seed: int):
    pixels = random_pixels(1, 3, 10, seed)
    batch = BatchTransform(7, True, "imagenet", CPU)(pixels, train=True, gen=torch.Generator().manual_seed(seed))
    one = ImageTransform(7, True, "imagenet")(pixels[0], train=True, gen=torch.Generator().manual_seed(seed))
    assert torch.equal(one, batch[0])


def test_test_mode_is_the_centre_crop_without_flip():
    pixels = random_pixels(3, 3, 11)
    batch = BatchTransform(8, True, "caffe", CPU)(pixels, train=False)
    one = ImageTransform(8, True, "caffe")
    for i in range(3):
        assert torch.equal(one(pixels[i], train=False), batch[i])
        assert torch.equal(one(pixels[i], train=False), one.apply(pixels[i], 2, 2, False))  # margin 3: 2 before


def test_hand_computed_pixels():
    img = torch.zeros(3, 2, 2, dtype=torch.uint8)
    img[:, 0, 0] = torch.tensor([255, 0, 128])  # R, G, B of the top-left pixel
    img[:, 0, 1] = torch.tensor([10, 20, 30])
    x = ImageTransform(2, False, "imagenet").apply(img, 0, 0, False)
    want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert x[:, 0, 0].tolist() == pytest.approx(want, abs=1e-6)
    caffe = ImageTransform(2, False, "caffe").apply(img, 0, 0, False)
    assert caffe[:, 0, 0].tolist() == [128 - 104, 0 - 117, 255 - 123]  # BGR, 0-255, mean pixel off
    flipped = ImageTransform(2, False, "caffe").apply(img, 0, 0, True)
    assert flipped[:, 0, 1].tolist() == [128 - 104, 0 - 117, 255 - 123]  # the pixel moved right
    assert flipped[:, 0, 0].tolist() == [30 - 104, 20 - 117, 10 - 123]


def test_dataset_over_split_rows_matches_decoded_batch(tmp_path):
    files = []
    for i, size in enumerate([(30, 22), (17, 40), (64, 64)]):  # aspect ratios not kept
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg(i, size))
        files.append(str(path))
    rows = pd.DataFrame({"path": files, "label": [5, 5, 9]})
    image = {"resize": 16, "crop": 12, "flip": True, "normalize": "imagenet"}
    dataset = SplitImages(rows, image, 3, train=False)
    decoded = ImageTensors.from_frame(rows, 16, 3)
    batch = BatchTransform(12, True, "imagenet", CPU)(torch.from_numpy(decoded.pixels), train=False)
    assert len(dataset) == 3
    for i in range(3):
        x, label = dataset[i]
        assert x.shape == (3, 12, 12) and label == rows["label"][i]
        assert torch.equal(x, batch[i])
    torch.manual_seed(0)
    train = SplitImages(rows, image, 3, train=True)
    loader = torch.utils.data.DataLoader(train, batch_size=3)
    x, y = next(iter(loader))
    assert x.shape == (3, 3, 12, 12) and y.tolist() == [5, 5, 9]


def test_corrupt_and_missing_images_are_named(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    good.write_bytes(jpeg(0))
    bad.write_bytes(jpeg(1)[:40])  # a JPEG cut short
    rows = pd.DataFrame({"path": [str(good), str(bad), str(tmp_path / "gone.jpg")], "label": [1, 1, 2]})
    dataset = SplitImages(rows, {"resize": 8, "crop": 8, "flip": False, "normalize": "imagenet"}, 3, train=True)
    assert dataset[0][0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match=f"{bad}: cannot read image"):
        dataset[1]
    with pytest.raises(ValueError, match=f"{tmp_path / 'gone.jpg'}: cannot read image"):
        dataset[2]


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="image.crop 9 is larger than the image"):
        ImageTransform(9, False, "imagenet")(random_pixels(1, 3, 8)[0], train=False)


def test_split_images_of_a_prepared_dataset(tmp_path):
    fake = cub(tmp_path)
    cub200.prepare(tmp_path / "data", archive=fake.files["archive"])
    cfg = {"image": {"resize": 20, "crop": 16, "flip": True, "normalize": "imagenet"}}
    train = split_images(tmp_path / "data", "cub200", cfg, 3, "train", "imagenet")
    test = split_images(tmp_path / "data", "cub200", cfg, 3, "test", "imagenet")
    assert sorted(np.unique(train.labels)) == [1, 100] and sorted(np.unique(test.labels)) == [101, 200]
    assert train.train and not test.train and len(train) == len(test) == 6
    assert test[0][0].shape == (3, 16, 16)

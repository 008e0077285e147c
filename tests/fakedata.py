"""Tiny archives in each dataset's exact layout (metadata files, headers, folder names, 1-based
ids, real JPEGs), 4 classes x 3 images, with class ids on both sides of each split boundary."""
from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PER_CLASS = 3


@dataclass(frozen=True)
class Fake:
    files: dict[str, Path]  # role -> archive / file on disk
    labels: dict[str, int]  # expected split.csv path -> class id
    train_classes: set[int]
    test_classes: set[int]


def jpeg(seed: int, size: tuple[int, int] = (30, 22)) -> bytes:
    """A small real JPEG (noise, so every file differs)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    """A gzip tar with the given files (folders implied by the names)."""
    with tarfile.open(path, "w:gz") as tf:
        for name in sorted({str(Path(n).parent) for n in members} - {"."}):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def edited_zip(src: Path, dst: Path, edit: Callable[[str, bytes, dict[str, bytes]], bytes]) -> Path:
    """A copy of zip `src` whose member data is `edit(name, data, all members)`."""
    with zipfile.ZipFile(src) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    return write_zip(dst, {name: edit(name, data, members) for name, data in members.items()})


def cub(tmp: Path, classes: tuple[int, ...] = (1, 100, 101, 200)) -> Fake:
    """CUB_200_2011.tgz: images.txt, image_class_labels.txt, classes.txt, train_test_split.txt
    (the classification split, deliberately unlike the zero-shot one), bounding_boxes.txt."""
    top = "CUB_200_2011"
    members: dict[str, bytes] = {"attributes.txt": b"1 has_bill_shape::curved\n"}
    images, labels, split, boxes, expected = [], [], [], [], {}
    image_id = 0
    for c in classes:
        folder = f"{c:03d}.Bird_{c}"
        for k in range(PER_CLASS):
            image_id += 1
            rel = f"{folder}/Bird_{c}_{k:04d}_{700 + image_id}.jpg"
            members[f"{top}/images/{rel}"] = jpeg(image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {k % 2}")
            boxes.append(f"{image_id} 1.0 2.0 20.0 15.0")
            expected[f"{top}/images/{rel}"] = c
    members[f"{top}/images.txt"] = ("\n".join(images) + "\n").encode()
    members[f"{top}/image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    members[f"{top}/classes.txt"] = "".join(f"{c} {c:03d}.Bird_{c}\n" for c in classes).encode()
    members[f"{top}/train_test_split.txt"] = ("\n".join(split) + "\n").encode()
    members[f"{top}/bounding_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    archive = write_tgz(tmp / "CUB_200_2011.tgz", members)
    return Fake({"archive": archive}, expected, {c for c in classes if c <= 100}, {c for c in classes if c > 100})


def car_names() -> list[str]:
    """196 class names; class 99 has the '/' that the Kaggle folders turn into '-'."""
    names = [f"Make{i} Model {i} 2012" for i in range(1, 197)]
    names[98] = "Ram C/V Cargo Van Minivan 2012"
    return names


CAR_CLASSES = (1, 98, 99, 196)


def cars_original(tmp: Path) -> Fake:
    """car_ims.tgz and cars_annos.mat in MATLAB's structure: 1 x N struct `annotations`
    (relative_im_path, bbox_x1..bbox_y2, class, test) and 1 x 196 cell `class_names`."""
    from scipy.io import savemat

    members, rows, expected = {}, [], {}
    n = 0
    for c in CAR_CLASSES:
        for k in range(PER_CLASS):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            members[rel] = jpeg(100 + n)
            rows.append((rel, c, k % 2))
            expected[rel] = c
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (rel, c, test) in enumerate(rows):
        ann[0, i] = (rel, np.array([[3]], np.uint8), np.array([[4]], np.uint8), np.array([[25]], np.uint8),
                     np.array([[18]], np.uint8), np.array([[c]], np.uint8), np.array([[test]], np.uint8))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = car_names()
    mat = tmp / "cars_annos.mat"
    savemat(mat, {"annotations": ann, "class_names": names})
    tgz = write_tgz(tmp / "car_ims.tgz", members)
    return Fake({"images": tgz, "annos": mat}, expected, {1, 98}, {99, 196})


def cars_kaggle(tmp: Path) -> Fake:
    """The Kaggle by-classes-folder zip: names.csv, anno_train.csv / anno_test.csv without a
    header, images in car_data/car_data/{train,test}/<name with '/' as '-'>/ with file names
    that repeat between train and test."""
    names = car_names()
    members: dict[str, bytes] = {"names.csv": ("\n".join(names) + "\n").encode()}
    annos: dict[str, list[str]] = {"train": [], "test": []}
    expected, count = {}, {"train": 0, "test": 0}
    for c in CAR_CLASSES:
        for k in range(PER_CLASS):
            split = "test" if k == 1 else "train"
            count[split] += 1
            file = f"{count[split]:05d}.jpg"
            rel = f"car_data/car_data/{split}/{names[c - 1].replace('/', '-')}/{file}"
            members[rel] = jpeg(200 + 10 * c + k)
            annos[split].append(f"{file},3,4,25,18,{c}")
            expected[rel] = c
    for split, lines in annos.items():
        members[f"anno_{split}.csv"] = ("\n".join(lines) + "\n").encode()
    archive = write_zip(tmp / "stanford-car-dataset-by-classes-folder.zip", members)
    return Fake({"archive": archive}, expected, {1, 98}, {99, 196})


def sop(tmp: Path) -> Fake:
    """Stanford_Online_Products.zip: Ebay_info/train/test.txt with their header, `*_final` folders."""
    top = "Stanford_Online_Products"
    supers = {1: "bicycle", 2: "chair"}
    members: dict[str, bytes] = {}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    expected = {}
    image_id = 0
    for c, super_id, split in ((1, 1, "train"), (2, 2, "train"), (3, 1, "test"), (4, 2, "test")):
        for k in range(PER_CLASS):
            image_id += 1
            rel = f"{supers[super_id]}_final/{111085122870 + c}_{k}.JPG"
            members[f"{top}/{rel}"] = jpeg(300 + image_id)
            lines[split].append(f"{image_id} {c} {super_id} {rel}")
            expected[f"{top}/{rel}"] = c
    header = "image_id class_id super_class_id path"
    for name, body in (("train", lines["train"]), ("test", lines["test"]), ("info", lines["train"] + lines["test"])):
        members[f"{top}/Ebay_{name}.txt"] = ("\n".join([header, *body]) + "\n").encode()
    archive = write_zip(tmp / "Stanford_Online_Products.zip", members)
    return Fake({"archive": archive}, expected, {1, 2}, {3, 4})

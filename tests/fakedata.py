"""Archives in each dataset's exact layout (metadata files, headers, folder names, 1-based ids,
real JPEGs): by default tiny, 4 classes x 3 images with class ids on both sides of each split
boundary; `scaled` builds them with the real datasets' class and image counts, or a fraction
of them (`bench/rehearsal.py`, `tests/test_rehearsal.py`)."""
from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PER_CLASS = 3
Members = Mapping[str, bytes] | Iterable[tuple[str, bytes]]
ImageMaker = Callable[[int], bytes]  # seed -> JPEG bytes


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


def _pairs(members: Members) -> Iterable[tuple[str, bytes]]:
    return members.items() if isinstance(members, Mapping) else members


def write_tgz(path: Path, members: Members, compresslevel: int = 9) -> Path:
    """A gzip tar with the given files, each folder's entry before its first file. Members may
    be a generator: a full-size archive is streamed, never held in memory."""
    seen: set[str] = set()
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tf:
        for name, data in _pairs(members):
            for parent in reversed(Path(name).parents[:-1]):
                if str(parent) not in seen:
                    seen.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: Members) -> Path:
    """A zip with the files stored as they are (as the SOP zip stores its JPEGs)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _pairs(members):
            zf.writestr(name, data)
    return path


def edited_zip(src: Path, dst: Path, edit: Callable[[str, bytes, dict[str, bytes]], bytes]) -> Path:
    """A copy of zip `src` whose member data is `edit(name, data, all members)`."""
    with zipfile.ZipFile(src) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    return write_zip(dst, {name: edit(name, data, members) for name, data in members.items()})


def cub(tmp: Path, classes: Iterable[int] = (1, 100, 101, 200), per_class: Mapping[int, int] | None = None,
        image: ImageMaker = jpeg) -> Fake:
    """CUB_200_2011.tgz: images.txt, image_class_labels.txt, classes.txt, train_test_split.txt
    (the classification split, deliberately unlike the zero-shot one), bounding_boxes.txt;
    `per_class` images of each class (PER_CLASS if not given)."""
    top, classes = "CUB_200_2011", tuple(classes)
    images, labels, split, boxes, expected = [], [], [], [], {}

    def members() -> Iterator[tuple[str, bytes]]:
        yield "attributes.txt", b"1 has_bill_shape::curved\n"
        image_id = 0
        for c in classes:
            folder = f"{c:03d}.Bird_{c}"
            for k in range((per_class or {}).get(c, PER_CLASS)):
                image_id += 1
                rel = f"{folder}/Bird_{c}_{k:04d}_{700 + image_id}.jpg"
                yield f"{top}/images/{rel}", image(image_id)
                images.append(f"{image_id} {rel}")
                labels.append(f"{image_id} {c}")
                split.append(f"{image_id} {k % 2}")
                boxes.append(f"{image_id} 1.0 2.0 20.0 15.0")
                expected[f"{top}/images/{rel}"] = c
        yield f"{top}/images.txt", ("\n".join(images) + "\n").encode()
        yield f"{top}/image_class_labels.txt", ("\n".join(labels) + "\n").encode()
        yield f"{top}/classes.txt", "".join(f"{c} {c:03d}.Bird_{c}\n" for c in classes).encode()
        yield f"{top}/train_test_split.txt", ("\n".join(split) + "\n").encode()
        yield f"{top}/bounding_boxes.txt", ("\n".join(boxes) + "\n").encode()

    archive = write_tgz(tmp / "CUB_200_2011.tgz", members(), compresslevel=1 if per_class else 9)
    return Fake({"archive": archive}, expected, {c for c in classes if c <= 100}, {c for c in classes if c > 100})


def car_names() -> list[str]:
    """196 class names; class 99 has the '/' that the Kaggle folders turn into '-'."""
    names = [f"Make{i} Model {i} 2012" for i in range(1, 197)]
    names[98] = "Ram C/V Cargo Van Minivan 2012"
    return names


CAR_CLASSES = (1, 98, 99, 196)


def cars_original(tmp: Path, classes: Iterable[int] = CAR_CLASSES, per_class: Mapping[int, int] | None = None,
                  image: ImageMaker = jpeg) -> Fake:
    """car_ims.tgz and cars_annos.mat in MATLAB's structure: 1 x N struct `annotations`
    (relative_im_path, bbox_x1..bbox_y2, class, test) and 1 x 196 cell `class_names`."""
    from scipy.io import savemat

    classes = tuple(classes)
    rows, expected = [], {}

    def members() -> Iterator[tuple[str, bytes]]:
        n = 0
        for c in classes:
            for k in range((per_class or {}).get(c, PER_CLASS)):
                n += 1
                rel = f"car_ims/{n:06d}.jpg"
                yield rel, image(100 + n)
                rows.append((rel, c, k % 2))
                expected[rel] = c

    tgz = write_tgz(tmp / "car_ims.tgz", members(), compresslevel=1 if per_class else 9)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (rel, c, test) in enumerate(rows):
        ann[0, i] = (rel, np.array([[3]], np.uint8), np.array([[4]], np.uint8), np.array([[25]], np.uint8),
                     np.array([[18]], np.uint8), np.array([[c]], np.uint8), np.array([[test]], np.uint8))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = car_names()
    mat = tmp / "cars_annos.mat"
    savemat(mat, {"annotations": ann, "class_names": names})
    return Fake({"images": tgz, "annos": mat}, expected, {c for c in classes if c <= 98},
                {c for c in classes if c > 98})


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


SOP_SUPERS = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa", "stapler",
              "table", "toaster")
SOP_TINY = ((1, 1, "train", PER_CLASS), (2, 2, "train", PER_CLASS), (3, 1, "test", PER_CLASS),
            (4, 2, "test", PER_CLASS))


def sop(tmp: Path, products: Iterable[tuple[int, int, str, int]] = SOP_TINY, image: ImageMaker = jpeg) -> Fake:
    """Stanford_Online_Products.zip: Ebay_info/train/test.txt with their header, `*_final` folders;
    `products` are (class id, super class id, split, images)."""
    top = "Stanford_Online_Products"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    expected: dict[str, int] = {}
    train, test = set(), set()

    def members() -> Iterator[tuple[str, bytes]]:
        image_id = 0
        for c, super_id, split, count in products:
            (train if split == "train" else test).add(c)
            for k in range(count):
                image_id += 1
                rel = f"{SOP_SUPERS[super_id - 1]}_final/{111085122870 + c}_{k}.JPG"
                yield f"{top}/{rel}", image(300 + image_id)
                lines[split].append(f"{image_id} {c} {super_id} {rel}")
                expected[f"{top}/{rel}"] = c
        header = "image_id class_id super_class_id path"
        for name, body in (("train", lines["train"]), ("test", lines["test"]),
                           ("info", lines["train"] + lines["test"])):
            yield f"{top}/Ebay_{name}.txt", ("\n".join([header, *body]) + "\n").encode()

    archive = write_zip(tmp / "Stanford_Online_Products.zip", members())
    return Fake({"archive": archive}, expected, train, test)


# The real datasets' counts (../shared/spec/datasets.md): per split, classes and images.
REAL = {
    "cub200": {"train": (range(1, 101), 5864), "test": (range(101, 201), 5924)},
    "cars196": {"train": (range(1, 99), 8054), "test": (range(99, 197), 8131)},
    "sop": {"train": (range(1, 11319), 59551), "test": (range(11319, 22635), 60502)},
}
PHOTO_SIZES = {"cub200": (500, 375), "cars196": (700, 480), "sop": (400, 400)}  # typical, not measured
SOP_SIZES = (2, 12)  # fewest and most images of one SOP product


def spread(total: int, n: int, low: int, high: int, rng: np.random.Generator) -> list[int]:
    """n class sizes in [low, high] summing to `total`, the extra images spread at random."""
    sizes = np.full(n, low)
    for i in rng.permutation(np.repeat(np.arange(n), high - low))[: total - low * n]:
        sizes[i] += 1
    return sizes.tolist()


def photo(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-sized JPEG of smooth colour (a random 8 x 6 grid, bicubically enlarged): decodes at
    a real photo's pixel cost, though its file is about 6x smaller than a real photo's."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def class_counts(dataset: str, scale: float, min_per_class: int = 4) -> dict[str, list[tuple[int, int]]]:
    """split -> (class id, images) at `scale` of the real image count (1.0: exactly the real
    counts). CUB and Cars keep all their classes and scale the images per class (at least
    `min_per_class`, which the paper's semi-hard batches of 4 per class need); SOP keeps its
    products' sizes (2-12 images) and scales the number of products (at least 60 per split,
    the classes of one paper batch)."""
    rng = np.random.default_rng(17)
    out = {}
    for split, (classes, images) in REAL[dataset].items():
        if dataset == "sop":
            n = len(classes) if scale == 1 else max(60, round(len(classes) * scale))
            sizes = spread(images if n == len(classes) else round(images * n / len(classes)), n, *SOP_SIZES, rng)
        else:
            n = len(classes)
            base, extra = divmod(max(min_per_class * n, round(images * scale)), n)
            sizes = [base + (i < extra) for i in range(n)]
        out[split] = list(zip(classes[:n], sizes, strict=False))
    return out


def scaled(dataset: str, tmp: Path, scale: float, size: tuple[int, int] | None = None) -> Fake:
    """`dataset`'s archive(s) with `class_counts(dataset, scale)`, JPEGs of `size` (default:
    PHOTO_SIZES), written as they are generated (a full-size archive is never in memory)."""
    wh = size or PHOTO_SIZES[dataset]

    def maker(seed: int) -> bytes:
        return photo(seed, wh)

    counts = class_counts(dataset, scale)
    if dataset == "sop":
        products = [(c, 1 + i * len(SOP_SUPERS) // len(rows), split, k)
                    for split, rows in counts.items() for i, (c, k) in enumerate(rows)]
        return sop(tmp, products, image=maker)
    per_class = dict(counts["train"] + counts["test"])
    build = cub if dataset == "cub200" else cars_original
    return build(tmp, classes=list(per_class), per_class=per_class, image=maker)

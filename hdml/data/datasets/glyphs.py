"""The embedded demo's task: characters drawn from the fonts matplotlib ships, one class per
character, zero-shot split by character (41 train, 40 test, 16 images each).

Why not digits: on scikit-learn's 8x8 digits the small CNN at initialisation already finds the
right class as nearest neighbour about 95% of the time (5 test classes of near-identical
strokes), as often as any trained method, so that demo could not tell training from no training.
Here a class is one character drawn in up to 21 typefaces (DejaVu Sans, Sans Mono and Serif, STIX
General, each regular, bold, oblique and bold oblique, and Computer Modern roman, bold, sans,
italic and typewriter), each image at another size, stroke weight, rotation, position, contrast
and noise: the network at initialisation retrieves the right character about 15% of the time,
the trained methods 33-61% (README, "What the demo shows"); chance is 1 in 40.

The characters are visually distinct: Latin capitals, the small letters whose capital has another
shape, digits 2-9, and the Greek and Cyrillic letters unlike any of those (no l/I/1, o/O/0, c/C,
Cyrillic Ze/3 ...), so that no two labels name one shape.

Every image is drawn from a fixed seed per character: the same files on every machine with the
same fonts and Pillow (FreeType) build, prepared in a few seconds, no download. 12x12 pixels:
legible, at 2.25 times the pixels (and about the cost per run, with the demo's fewer steps) of
8x8 digits.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hdml.data.datasets import DatasetSpec, register
from hdml.data.datasets.embedded import write_dataset

NAME = "glyphs"
SEED = 20190616  # CVPR 2019's first day: any fixed number would do
SIDE = 12  # image side in pixels (16 would cost 4x the pixels of 8x8 digits per image)
SUPER = 4  # drawn at SUPER x SIDE, then averaged down: anti-aliased strokes
PER_CLASS = 16  # images per character, each typeface at most once: 640 test images (digits: 899)
CHARACTERS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # Latin capitals
    "abdefghijmnqrty"  # lower case whose capital is another shape
    "23456789"  # digits unlike a letter (no 0, 1)
    "ΓΔΘΛΞΠΣΦΨΩ"  # Greek capitals unlike a Latin one
    "βδεζλμξστω"  # Greek small letters unlike a Latin one or their capital
    "БДЖИЛЦЧШЩЭЮЯ"  # Cyrillic capitals unlike a Latin or Greek one
)
# Faces by file name under matplotlib's mpl-data/fonts/ttf; a character is drawn in those that
# have it (the Computer Modern files have Latin and digits only).
FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf",
)
CM_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
TEST_CLASSES = 40  # the rest train; which ones by a seeded shuffle, so both splits mix scripts


def font_dir() -> Path:
    # here: matplotlib (for the fonts it ships) only when glyphs are drawn (start-up time)
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def faces_for(char: str) -> list[str]:
    """The faces that draw `char` (Computer Modern's files map only Latin letters and digits)."""
    return [f for f in FACES if not f.startswith("cm") or char in CM_CHARACTERS]


@cache
def _font(face: str) -> ImageFont.FreeTypeFont:
    path = font_dir() / face
    if not path.is_file():
        raise ValueError(f"glyphs: {path}: font missing from matplotlib's mpl-data")
    return ImageFont.truetype(str(path), size=SIDE * SUPER * 2)


@cache
def _ink(face: str, char: str) -> Image.Image:
    """The character's strokes (white on black), cropped to their bounding box."""
    font = _font(face)
    side = SIDE * SUPER * 4
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).text((side // 4, side // 4), char, fill=255, font=font)
    box = img.getbbox()
    if box is None:
        raise ValueError(f"glyphs: {face} draws nothing for {char!r}")
    return img.crop(box)


def render(char: str, face: str, rng: np.random.Generator) -> np.ndarray:
    """One SIDE x SIDE uint8 instance: scaled, stroke-weighted, rotated, shifted, noised."""
    big = SIDE * SUPER
    ink = _ink(face, char)
    scale = rng.uniform(0.55, 0.8) * big / max(ink.size)
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    glyph = ink.resize((w, h), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:  # thicker strokes (thinner ones would erase Computer Modern's hairlines)
        glyph = glyph.filter(ImageFilter.MaxFilter(3))
    canvas = Image.new("L", (big, big), 0)
    shift = rng.uniform(-0.08, 0.08, size=2) * big
    canvas.paste(glyph, (round((big - w) / 2 + shift[0]), round((big - h) / 2 + shift[1])))
    canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
    small = np.asarray(canvas.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32)
    small = small * rng.uniform(0.6, 1.0) + rng.normal(0, 12, size=small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def class_split() -> np.ndarray:
    """True for the test characters: TEST_CLASSES of them, chosen by a seeded shuffle."""
    order = np.random.default_rng(SEED).permutation(len(CHARACTERS))
    test = np.zeros(len(CHARACTERS), bool)
    test[order[:TEST_CLASSES]] = True
    return test


def images() -> tuple[np.ndarray, np.ndarray]:
    """All images (N x SIDE x SIDE uint8) and their labels (index into CHARACTERS), in label
    order; the typefaces dealt round-robin after a per-character shuffle."""
    pixels, labels = [], []
    for label, char in enumerate(CHARACTERS):
        faces = faces_for(char)
        rng = np.random.default_rng([SEED, label])
        order = rng.permutation(len(faces))
        for i in range(PER_CLASS):
            pixels.append(render(char, faces[order[i % len(faces)]], rng))
            labels.append(label)
    return np.stack(pixels), np.array(labels)


def prepare(root: Path, *, urls: list[str] | None = None, md5: str | None = None,
            archive: Path | None = None) -> Path:
    if urls or md5 or archive:
        raise ValueError("glyphs is drawn from matplotlib's fonts: --url, --md5 and --archive do not apply")
    pixels, labels = images()
    return write_dataset(Path(root) / NAME, pixels, labels, class_split()[labels])


register(
    DatasetSpec(
        name=NAME,
        title="Glyphs (embedded demo)",
        report_order=50,
        demo=True,
        prepare=prepare,
        channels=1,
        run_defaults={
            "backbone": "smallcnn",
            "pretrained": False,
            "embedding_dim": 64,
            # 9 characters x 4 images, or 12 triplets of 24 distinct characters: the fair
            # protocol's 30 training characters (41 less the validation fold) still fill a batch.
            "batch_size": 36,
            "images_per_class": 4,
            "image": {"resize": SIDE, "crop": SIDE, "flip": False, "normalize": "unit"},
            # 12x12 crops cost nothing to cut: loader threads would only compete for the cores.
            "num_workers": 0,
            # The demo's rate, so that `hdml train --dataset glyphs` by hand trains as its runs do.
            "lr": 1e-3,
            "weight_decay": 1e-4,
        },
        # 10 pairs of distinct characters: N-pair batches cost what the others do.
        layout_defaults={"npair": {"batch_size": 20}},
    )
)

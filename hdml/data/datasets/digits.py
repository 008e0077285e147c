"""The embedded demo dataset: scikit-learn's bundled 8x8 handwritten digits (1,797 images).

Zero-shot split like the paper's: digits 0-4 train, 5-9 test. Images are written as PNG
files so the demo exercises the same split.csv -> image path as the real datasets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hdml.data.datasets import DatasetSpec, register
from hdml.data.datasets.embedded import write_dataset


def prepare(root: Path, *, urls: list[str] | None = None, md5: str | None = None,
            archive: Path | None = None) -> Path:
    if urls or md5 or archive:
        raise ValueError("digits ships with scikit-learn: --url, --md5 and --archive do not apply")
    # here: scikit-learn's loader only when digits is prepared (start-up time)
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * 255 / 16), 0, 255).astype(np.uint8)
    labels = digits.target.astype(int)
    return write_dataset(Path(root) / "digits", pixels, labels, labels >= 5)


register(
    DatasetSpec(
        name="digits",
        title="Digits (embedded demo)",
        report_order=40,
        demo=True,
        prepare=prepare,
        channels=1,
        run_defaults={
            "backbone": "smallcnn",
            "pretrained": False,
            "embedding_dim": 64,
            # Digits has 5 training classes, and an N-pair or m-per-class batch needs distinct
            # classes: 5 pairs, or 5 classes x 2 images. Triplets may repeat classes: 10 of them.
            "batch_size": 10,
            "image": {"resize": 8, "crop": 8, "flip": False, "normalize": "unit"},
            # 8x8 crops cost nothing to cut: loader threads would only compete for the cores.
            "num_workers": 0,
            # 5 training classes: the authors' triplet batches need 2 distinct classes per triplet.
            "triplet_sampler": "independent",
        },
        layout_defaults={"triplet": {"batch_size": 30}},
    )
)

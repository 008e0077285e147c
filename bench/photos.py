"""Photo-like JPEGs for the benchmarks: CUB's typical size (500x375), smooth gradients + noise,
so that decoding costs what a real photo costs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, n: int) -> list[str]:
    """n JPEGs `00000.jpg`... in `folder` (created); their file names, in order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    names = []
    for i in range(n):
        base = (np.sin(xx / (20 + i % 7)) + np.cos(yy / (15 + i % 5))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 25, (375, 500, 3)), 0, 255).astype(np.uint8)
        names.append(f"{i:05d}.jpg")
        Image.fromarray(img).save(folder / names[-1], quality=90)
    return names

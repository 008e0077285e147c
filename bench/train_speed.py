"""A whole training run as the workflow runs it (`hdml.train.trainer.train_run`: cached images,
prefetching loader, device-side normalisation, the run config's fast paths), on a synthetic
dataset in CUB-200-2011's shape (5,864 training images of 100 classes, resized to 256x256),
so the time per step includes data loading. Prints images/s, the share of the time spent
waiting for batches, and the projected time of the paper's 8,000-step run.

    python bench/train_speed.py --device cuda --steps 300                 # GoogLeNet@227, batch 128
    python bench/train_speed.py --device cuda --steps 300 --amp bf16
    python bench/train_speed.py --device cpu --steps 3 --batch 16 --crop 96 --images 400   # smoke test
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hdml.data.cache import build_cache
from hdml.train.trainer import train_run
from photos import write_photos

PAPER_STEPS = 8000


def make_dataset(root: Path, train_images: int, classes: int, test_images: int, distinct: int = 64) -> None:
    """`root/cub200/split.csv` over `distinct` generated photo-like JPEGs reused across rows
    (what costs in training is reading the decoded cache, not how varied it is)."""
    names = write_photos(root / "cub200" / "images", distinct)
    n = train_images + test_images
    test_classes = max(2, min(classes, test_images // 10))
    rows = pd.DataFrame({"path": [f"images/{names[i % distinct]}" for i in range(n)],
                         "label": np.r_[np.arange(train_images) % classes,
                                        classes + np.arange(test_images) % test_classes],
                         "split": ["train"] * train_images + ["test"] * test_images})
    rows.to_csv(root / "cub200" / "split.csv", index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--method", default="hdml-npair")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--crop", type=int, default=227)
    p.add_argument("--images", type=int, default=5864, help="training images (CUB: 5,864)")
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--amp", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--workers", type=int, default=2, help="num_workers of the run")
    p.add_argument("--cache-workers", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, args.images, 100, args.test_images)
        start = time.perf_counter()
        build_cache(root, "cub200", 256, 3, workers=args.cache_workers)
        print(f"cache of {args.images + args.test_images} images built in {time.perf_counter() - start:.1f} s")
        overrides = {"steps": args.steps, "batch_size": args.batch, "pretrained": False, "device": args.device,
                     "amp": args.amp, "compile": args.compile, "num_workers": args.workers, "eval_every": 0,
                     "checkpoint_every": 0, "lr_milestones": [], "image.crop": args.crop}
        result = train_run(root=root, dataset="cub200", method=args.method, seed=0, out=root / "run",
                           overrides=overrides)
        losses = pd.read_csv(root / "run" / "losses.csv")
    per_step = result["train_seconds"] / args.steps
    wait = result["data_wait_seconds"] / result["train_seconds"]
    print(json.dumps({k: v for k, v in vars(args).items()}))
    print(f"{args.method}: {per_step * 1000:.1f} ms/step over {args.steps} steps (warm-up included), "
          f"{args.batch / per_step:.0f} training images/s, waiting for batches {100 * wait:.1f}% of the time")
    print(f"projected {PAPER_STEPS}-step run: {PAPER_STEPS * per_step / 60:.1f} min "
          f"(target <= 3 min on one H100 for GoogLeNet@227, batch 128)")
    print(f"losses finite: {bool(np.isfinite(losses['loss']).all())}")


if __name__ == "__main__":
    main()

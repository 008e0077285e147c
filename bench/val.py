"""What `selection: val` costs: one evaluation on the validation classes against one training step.

At each evaluation point (never inside a step) the trainer embeds the validation images and
scores them (`hdml.eval.selection.score_val`; MAP@R needs no clustering). This times both parts
and a plain N-pair training step (the cheapest step of the paper's methods, so the ratio is an
upper bound for HDML's), then the share of a whole run's time the validation adds at the run's
evaluation cadence (`hdml.core.schedule.eval_due`).

- `--preset demo`: the digits demo (small CNN, 8x8, batch 10, 64-d; classes 0 and 4 of the
  training classes 0-4: 359 images; 200 steps at config/config.yaml's cadence).
- `--preset sop`: Stanford Online Products under the paper's settings (GoogLeNet@227 from 256,
  batch 128, 512-d; a quarter of the 11,318 training classes: 2,830 classes, about 14,890 of the
  59,551 training images; 8,000 steps evaluated every 500, then every 64 after 5,000).
  Embedding is timed on `--measure` random images and scaled to the validation size (linear in
  the image count); the scoring runs at full size on synthetic embeddings (Gaussian classes of
  equal size).

    python bench/val.py --preset demo
    python bench/val.py --preset sop --measure 256 --steps 2      # CPU: minutes
    python bench/val.py --preset sop --device cuda --measure 14890 --steps 20
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from hdml.core.config import build_run_config
from hdml.core.schedule import eval_due
from hdml.data.tensors import ImageTensors, batch_transform
from hdml.eval.selection import score_val
from hdml.model.backbones import input_normalisation
from hdml.model.embedding import build_model
from hdml.train.trainer import embed, place_model
from step import time_method  # bench/step.py: one training step, the trainer's model placement

PRESETS = {
    "demo": {"backbone": "smallcnn", "resize": 8, "crop": 8, "batch": 10, "embedding": 64, "channels": 1,
             "val_images": 359, "val_classes": 2, "normalize": "unit",
             "cadence": {"steps": 200, "eval_every": 40, "eval_every_late": 8, "eval_late_from": 125}},
    "sop": {"backbone": "googlenet", "resize": 256, "crop": 227, "batch": 128, "embedding": 512, "channels": 3,
            "val_images": 14_890, "val_classes": 2_830, "normalize": "auto",
            "cadence": {"steps": 8000, "eval_every": 500, "eval_every_late": 64, "eval_late_from": 5000}},
}


def synthetic(n_classes: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n embeddings in n_classes classes of (nearly) equal size, Gaussian around random centres."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    x = rng.standard_normal((n_classes, d), dtype=np.float32)[labels] + rng.standard_normal((n, d), dtype=np.float32)
    return x, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--measure", type=int, default=None, help="images embedded for the timing (default: all)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--amp", default="fp32", choices=["fp32", "tf32", "bf16"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pre = PRESETS[args.preset]
    n_val = pre["val_images"]
    measure = min(args.measure or n_val, n_val)

    step_args = SimpleNamespace(backbone=pre["backbone"], embedding=pre["embedding"], batch=pre["batch"],
                                amp=args.amp, compile=False, channels_last=True, size=pre["crop"],
                                warmup=2, steps=args.steps)
    step_s, _ = time_method("npair", step_args, device)

    cfg = build_run_config({}, {"backbone": pre["backbone"], "pretrained": False, "embedding_dim": pre["embedding"],
                                "device": str(device), "amp": args.amp,
                                "image": {"resize": pre["resize"], "crop": pre["crop"], "flip": False,
                                          "normalize": pre["normalize"]}})
    model = place_model(build_model(cfg, pre["channels"]), cfg, device)
    rng = np.random.default_rng(0)
    images = ImageTensors(rng.integers(0, 256, (measure, pre["channels"], pre["resize"], pre["resize"]),
                                       dtype=np.uint8), np.zeros(measure, dtype=np.int64))
    transform = batch_transform(cfg, input_normalisation(cfg), device)
    embed(model, ImageTensors(images.pixels[:8], images.labels[:8]), transform, 8)  # warm-up
    sync(device)
    start = time.perf_counter()
    embed(model, images, transform, cfg["eval_batch_size"])
    sync(device)
    embed_s = (time.perf_counter() - start) * n_val / measure

    z, labels = synthetic(pre["val_classes"], n_val, pre["embedding"])
    start = time.perf_counter()
    score = score_val(z, labels, "map@r", cfg["eval_ks"], 0, cfg["eval_kmeans"])
    score_s = time.perf_counter() - start

    cadence = {**cfg, **pre["cadence"], "protocol": "code"}
    evals = sum(eval_due(s, cadence) for s in range(1, cadence["steps"] + 1))
    val_s = embed_s + score_s
    share = evals * val_s / (evals * val_s + cadence["steps"] * step_s)
    print(f"preset={args.preset} device={device} threads={args.threads} amp={args.amp} "
          f"val={n_val} images / {pre['val_classes']} classes (embedded {measure}, scaled)")
    print(f"training step (npair, batch {pre['batch']}): {step_s * 1000:.1f} ms")
    print(f"validation: embed {embed_s:.3f} s + MAP@R {score_s:.3f} s = {val_s:.3f} s "
          f"(MAP@R of the synthetic set {score:.3f})")
    print(f"ratio validation / training step: {val_s / step_s:.1f}x")
    print(f"whole run: {evals} evaluations in {cadence['steps']} steps -> validation {share:.1%} of the time")


if __name__ == "__main__":
    main()

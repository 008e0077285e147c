"""Training-step time of HDML-N-pair vs plain N-pair: same backbone, same batch, one run.

CPU (default): the small CNN on 8x8 digits-sized input, or GoogLeNet at a small size.
GPU: GoogLeNet@227, batch 128, as the paper. Prints images/s, peak GPU memory, the ratio,
and the projected GPU-hours of the paper grid.

    python bench/step.py                       # CPU, small CNN
    python bench/step.py --backbone googlenet --size 64 --batch 32
    python bench/step.py --device cuda --backbone googlenet --size 227 --batch 128 --amp bf16

The model goes through the trainer's own `place_model`, so `--amp`,
`--compile` and `--channels-last` time exactly what `amp`, `compile` and `channels_last` train.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hdml.core.config import build_run_config, read_yaml
from hdml.methods.base import build_method
from hdml.model.embedding import build_model
from hdml.train.trainer import place_model
from hdml.workflow.plan import validate_workflow_config


def time_method(method: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    channels = 1 if args.backbone == "smallcnn" else 3
    cfg = build_run_config({}, {"backbone": args.backbone, "pretrained": False, "embedding_dim": args.embedding,
                                "batch_size": args.batch, "device": str(device), "lr": 1e-4,
                                "hdml.block": 4, "amp": args.amp, "compile": args.compile,
                                "channels_last": args.channels_last})
    torch.manual_seed(0)
    model = place_model(build_model(cfg, channels), cfg, device)
    runner = build_method(method, model, cfg, num_classes=args.batch // 2, train_size=10_000)
    x = torch.randn(args.batch, channels, args.size, args.size, device=device)
    if device.type == "cuda" and args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(args.batch, device=device) % (args.batch // 2)

    for _ in range(args.warmup):
        runner.step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        runner.step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="smallcnn", choices=["smallcnn", "googlenet", "resnet50", "googlenet-caffe"])
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--amp", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (warm-up compiles)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} backbone={args.backbone} size={args.size} batch={args.batch} threads={args.threads} "
          f"amp={args.amp} compile={args.compile} channels_last={args.channels_last}")
    results = {m: time_method(m, args, device) for m in ("npair", "hdml-npair")}
    for m, (s, peak) in results.items():
        print(f"{m:>11}: {s * 1000:8.2f} ms/step  {args.batch / s:9.0f} images/s  peak GPU {peak:.2f} GiB")
    ratio = results["hdml-npair"][0] / results["npair"][0]
    print(f"ratio hdml-npair / npair: {ratio:.2f}x (target <= 1.2x) {'MET' if ratio <= 1.2 else 'NOT MET'}")
    # Paper grid: every run of config/paper.yaml, at the measured HDML step time.
    runs = validate_workflow_config(read_yaml(Path(__file__).resolve().parent.parent / "config/paper.yaml"))
    hours = sum(r.overrides.get("steps", 8000) for r in runs) * results["hdml-npair"][0] / 3600
    print(f"projected paper grid ({len(runs)} runs at the HDML step time): {hours:.1f} h on this device")


if __name__ == "__main__":
    main()

"""One training run: dataset -> sampler -> model -> method steps -> periodic and final evaluation.

Outputs in the run directory: `config.yaml` (the resolved run config), `curve.csv` (metrics at
every evaluation), `losses.csv` (every step's losses), `model.pt` (final weights), and `metrics.json`, written last and only when
the run completed, so its presence means a finished run.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from hdml import metrics
from hdml.config import build_run_config
from hdml.data import BatchTransform, ImageTensors, load_splits
from hdml.datasets import get_dataset
from hdml.io import write_json, write_text, write_with
from hdml.methods import build_method
from hdml.model import EmbeddingNet, build_model
from hdml.samplers import build_sampler

log = logging.getLogger("hdml.train")


class TrainingDiverged(RuntimeError):
    """The loss stayed NaN or infinite for too many consecutive steps."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def embed(model: EmbeddingNet, images: ImageTensors, transform: BatchTransform, batch_size: int) -> np.ndarray:
    """Test-mode embeddings (BatchNorm in eval mode, centre crop), not yet normalised."""
    was_training = model.training
    model.eval()
    out = [model(transform(images.pixels[i : i + batch_size], train=False)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def evaluate_model(model: EmbeddingNet, images: ImageTensors, transform: BatchTransform,
                   cfg: dict, seed: int) -> dict[str, float]:
    z = embed(model, images, transform, cfg["eval_batch_size"])
    return metrics.evaluate(z, images.labels, cfg["eval_ks"], seed=seed)


def train_run(*, root: str | Path, dataset: str, method: str, seed: int, out: str | Path,
              overrides: dict[str, Any]) -> dict[str, Any]:
    out = Path(out)
    spec = get_dataset(dataset)
    cfg = build_run_config(spec.run_defaults, overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump({"dataset": dataset, "method": method, "seed": seed, **cfg}))

    torch.manual_seed(seed)
    np.random.seed(seed)
    device = resolve_device(cfg["device"])
    train_set, test_set, transform = load_splits(root, dataset, cfg, spec.channels, device)
    _, train_targets = np.unique(train_set.labels, return_inverse=True)
    num_classes = int(train_targets.max()) + 1

    model = build_model(cfg, spec.channels).to(device)
    runner = build_method(method, model, cfg, num_classes)
    sample_gen = torch.Generator().manual_seed(2 * seed)
    augment_gen = torch.Generator().manual_seed(2 * seed + 1)
    sampler = build_sampler(runner.sampler, train_targets, cfg, sample_gen)
    targets = torch.from_numpy(train_targets)

    curve: list[dict[str, Any]] = []
    losses: list[dict[str, float]] = []
    bad_streak, started = 0, time.perf_counter()
    for step in range(1, cfg["steps"] + 1):
        idx = sampler()
        x = transform(train_set.pixels[idx], train=True, gen=augment_gen)
        logs = runner.step(x, targets[idx].to(device))
        losses.append({"step": step, **logs})
        bad_streak = 0 if all(math.isfinite(v) for v in logs.values()) else bad_streak + 1
        if bad_streak:
            log.warning("step %d: non-finite loss %s", step, logs)
            if bad_streak >= cfg["max_bad_steps"]:
                raise TrainingDiverged(f"{bad_streak} consecutive steps with a NaN/infinite loss (last at step {step}); "
                                       f"no metrics written")
        if step == cfg["steps"] or (cfg["eval_every"] and step % cfg["eval_every"] == 0):
            row = {"step": step, **evaluate_model(model, test_set, transform, cfg, seed),
                   **{f"train_{k}": v for k, v in logs.items()}}
            curve.append(row)
            log.info("step %d: %s", step, {k: round(v, 4) for k, v in row.items() if k != "step"})
    train_seconds = time.perf_counter() - started

    write_with(out / "curve.csv", lambda p: pd.DataFrame(curve).to_csv(p, index=False))
    write_with(out / "losses.csv", lambda p: pd.DataFrame(losses).to_csv(p, index=False))
    write_with(out / "model.pt", lambda p: torch.save(model.state_dict(), p))
    final = {k: v for k, v in curve[-1].items() if not k.startswith("train_") and k != "step"}
    result = {"dataset": dataset, "method": method, "seed": seed, "steps": cfg["steps"],
              "train_seconds": train_seconds, "metrics": final}
    write_json(out / "metrics.json", result)
    return result

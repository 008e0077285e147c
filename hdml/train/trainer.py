"""One training run: dataset -> sampler -> model -> method steps -> periodic and final evaluation.

Outputs in the run directory: `config.yaml` (the resolved run config), `curve.csv` (metrics at
every evaluation), `losses.csv` (every step's losses), `model.pt` (final weights),
`embeddings.npz` (the reported model's evaluation embeddings and labels: `hdml.eval.evaluate.Embeddings`), and
`metrics.json`, written last and only when the run completed, so its presence means a
finished run. With `evaluate_test: false` (tuning trials) the test images are never loaded:
`curve.csv` holds the validation score, `metrics.json` that score and `"evaluate_test": false`
but no `metrics`, and no `embeddings.npz` is written. `ckpt/` holds checkpoints while the run
is unfinished: a rerun with the same `--out` resumes from the newest readable one and, on
the CPU, ends with exactly the metrics of an uninterrupted run.
The run's length, learning-rate halvings and evaluation steps are those of its resolved config
(`hdml.core.schedule`: under protocol code the authors' gating, which stops and halves only at
evaluation steps). SIGTERM/SIGINT (what SLURM sends before preemption) checkpoint and exit
non-zero. A finished run deletes `ckpt/` (`keep_finished_checkpoints: true` keeps it).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from hdml.core.config import build_run_config
from hdml.core.errors import Interrupted, TrainingDiverged
from hdml.core.io import write_json, write_text, write_with
from hdml.core.schedule import eval_due
from hdml.data.datasets import get_dataset
from hdml.data.loader import Batch, BatchLoader
from hdml.data.samplers import Sampler, build_sampler
from hdml.data.tensors import BatchTransform, ImageTensors
from hdml.data.valsplit import RunImages, training_images
from hdml.eval import selection
from hdml.eval.evaluate import Embeddings
from hdml.methods.base import Method, build_method
from hdml.model.backbones import input_normalisation
from hdml.model.embedding import EmbeddingNet, build_model
from hdml.train import checkpoint
from hdml.train.progress import Progress
from hdml.train.runfolder import exclusive
from hdml.train.state import TrainState

log = logging.getLogger("hdml.train")
Features = Callable[[torch.Tensor], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_determinism(enabled: bool) -> None:
    """Deterministic kernels on the GPU (slower); CPU runs are deterministic anyway."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled


def set_precision(amp: str, device: torch.device) -> None:
    """float32 arithmetic on a GPU: IEEE for `fp32` (and `bf16`'s float32 parts: head, losses,
    generator), TF32 for `tf32`. PyTorch's default runs cuDNN convolutions in TF32, so strict
    `fp32` has to ask for IEEE. Never through the legacy `allow_tf32` flags, which torch 2.14
    refuses to mix with the per-backend ones: cuDNN through its per-backend flag, matrix products
    through set_float32_matmul_precision, which sets both kinds at once. On the CPU nothing
    changes."""
    if device.type != "cuda":
        return
    tf32 = amp == "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def place_model(model: EmbeddingNet, cfg: dict, device: torch.device) -> EmbeddingNet:
    """The model on `device` with the run config's numerics and fast paths (float32 precision,
    bf16 autocast of the backbone, channels_last on a GPU, torch.compile of the backbone);
    shared with bench/step.py so it times what trains."""
    set_precision(cfg["amp"], device)
    model = model.to(device)
    model.amp_dtype = torch.bfloat16 if cfg["amp"] == "bf16" else None
    if device.type == "cuda" and cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if cfg["compile"]:
        model.backbone.compile()  # in place: state_dict keys stay those of the plain module
    return model


@torch.no_grad()
def embed(model: EmbeddingNet, images: ImageTensors, transform: BatchTransform, batch_size: int,
          features: Features | None = None) -> np.ndarray:
    """Test-mode embeddings (BatchNorm in eval mode, centre crop), not yet normalised; `features`,
    a method's `eval_features` where it has one (DAML's code protocol: its discriminator's output),
    maps a batch to what is evaluated instead of the model's embedding."""
    forward = features or model
    was_training = model.training
    model.eval()
    out = [forward(transform.load(images, np.arange(i, min(i + batch_size, len(images))), train=False)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def embed_evaluation(model: EmbeddingNet, images: RunImages, batch_size: int,
                     features: Features | None = None) -> np.ndarray:
    """Embeddings of the evaluation images: the query rows, then the gallery rows where the
    dataset has a gallery split (`Embeddings.stacked` splits them again)."""
    z = embed(model, images.query, images.transform, batch_size, features)
    if images.gallery is None:
        return z
    return np.concatenate([z, embed(model, images.gallery, images.transform, batch_size, features)])


class SignalFlag:
    """Records SIGTERM/SIGINT so the loop can stop at a step boundary, after a checkpoint."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@dataclass
class Run:
    """What one training run is made of once built: its folder, config, images, method and the
    resumable `TrainState` (model, generators, curve, ...)."""

    out: Path
    header: dict[str, Any]
    cfg: dict[str, Any]
    device: torch.device
    images: RunImages
    num_classes: int
    runner: Method
    sampler: Sampler
    targets: torch.Tensor
    state: TrainState

    @property
    def seed(self) -> int:
        return self.header["seed"]

    @property
    def features(self) -> Features | None:
        """What the method evaluates, if not the embedding (`Method.eval_features`)."""
        return getattr(self.runner, "eval_features", None)

    def evaluation(self, z: np.ndarray) -> Embeddings:
        gallery = None if self.images.gallery is None else self.images.gallery.labels
        return Embeddings.stacked(z, self.images.query.labels, gallery)

    def save(self) -> None:
        checkpoint.save(self.out / "ckpt", self.state.step, self.state.state_dict(), self.cfg["keep_checkpoints"])


@exclusive  # one process per run folder; checks it is writable, removes stale temporaries
def train_run(*, root: str | Path, dataset: str, method: str, seed: int, out: str | Path,
              overrides: dict[str, Any]) -> dict[str, Any]:
    run = build_run(root, dataset, method, seed, Path(out), overrides)
    z, progress = train_steps(run)
    result = finish(run, z)
    progress.close("done")
    return result


def build_run(root: str | Path, dataset: str, method: str, seed: int, out: Path, overrides: dict[str, Any]) -> Run:
    """Config, images, model and method of a run, resumed from its newest checkpoint if any;
    `config.yaml` written, a stale `metrics.json` removed."""
    spec = get_dataset(dataset)
    cfg = build_run_config(spec.defaults_for(method), overrides, method)
    out.mkdir(parents=True, exist_ok=True)
    header = {"dataset": dataset, "method": method, "seed": seed}
    write_text(out / "config.yaml", yaml.safe_dump({**header, **cfg}))
    (out / "metrics.json").unlink(missing_ok=True)

    set_determinism(cfg["deterministic"])
    torch.manual_seed(seed)
    device = resolve_device(cfg["device"])
    images = training_images(root, dataset, cfg, spec.channels, device, input_normalisation(cfg))
    _, train_targets = np.unique(images.train.labels, return_inverse=True)
    num_classes = int(train_targets.max()) + 1
    model = place_model(build_model(cfg, spec.channels), cfg, device)
    runner = build_method(method, model, cfg, num_classes, train_size=len(images.train))
    state = TrainState(model, runner, torch.Generator().manual_seed(2 * seed),
                       torch.Generator().manual_seed(2 * seed + 1), json.dumps({**header, **cfg}, sort_keys=True))
    sampler = build_sampler(runner.sampler, train_targets, cfg, state.sample_gen)
    saved = checkpoint.load_latest(out / "ckpt", state.fingerprint)
    if saved is not None:
        state.load_state_dict(saved)
    return Run(out, header, cfg, device, images, num_classes, runner, sampler, torch.from_numpy(train_targets), state)


def train_steps(run: Run) -> tuple[np.ndarray | None, Progress]:
    """The training loop from the step after the state's; returns the latest evaluation
    embeddings (None if no evaluation ran in this process) and the run's progress record, which
    `finish` closes. A signal checkpoints and raises `Interrupted`; checkpoints every
    `checkpoint_every` steps but the last."""
    cfg, state, images = run.cfg, run.state, run.images
    z = None
    loader = BatchLoader(images.train, run.sampler, images.transform, state.sample_gen, state.augment_gen,
                         cfg["num_workers"])
    state.start_clock(lambda: loader.wait)
    progress = Progress(run.out, steps=cfg["steps"], start=state.step + 1, batch_size=cfg["batch_size"],
                        header=run.header, tensorboard=cfg["tensorboard"])
    with SignalFlag() as stop, loader, progress:
        if cfg["steps"] == 0:  # the network before metric learning: the report's reference row
            z = evaluate_at(run, progress, 0, {})
        for step in range(state.step + 1, cfg["steps"] + 1):
            logs = train_step(run, progress, step, next(loader), loader.wait)
            if eval_due(step, cfg):
                z = evaluate_at(run, progress, step, logs)
            if stop.received is not None:
                run.save()
                raise Interrupted(f"signal {stop.received} at step {step}: checkpoint written, rerun to resume")
            if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0 and step < cfg["steps"]:
                run.save()
    state.stop_clock()
    train_seconds, data_wait = state.train_seconds(), state.wait_seconds()
    log.info("training: %.1f s, of which %.1f s (%.1f%%) waiting for batches", train_seconds, data_wait,
             100 * data_wait / max(train_seconds, 1e-9))
    return z, progress


def train_step(run: Run, progress: Progress, step: int, batch: Batch, waited: float) -> dict[str, float]:
    """One method step on `batch`; raises `TrainingDiverged` after `max_bad_steps` non-finite
    losses in a row."""
    logs = run.runner.step(run.images.transform.normalise(batch.crops), run.targets[batch.index].to(run.device))
    bad_streak = run.state.record_step(step, logs, batch.rng, all(math.isfinite(v) for v in logs.values()))
    progress.step(step, logs, waited)
    if bad_streak:
        log.warning("step %d: non-finite loss %s (%d in a row)", step, logs, bad_streak)
        if bad_streak >= run.cfg["max_bad_steps"]:
            raise TrainingDiverged(
                f"{bad_streak} consecutive steps with a NaN/infinite loss (last at step {step}); "
                f"no metrics written (max_bad_steps={run.cfg['max_bad_steps']})")
    return logs


def evaluate_at(run: Run, progress: Progress, step: int, logs: dict[str, float]) -> np.ndarray | None:
    """One evaluation point of the curve (test metrics, validation score, the step's losses);
    offered to the selection; returns the test embeddings (None without a test split)."""
    cfg, images, metric = run.cfg, run.images, run.cfg["selection_metric"]
    test, val_set = cfg["evaluate_test"], images.val  # no test: images.query is None, test-free selection (val)
    row: dict[str, Any] = {"step": step}
    z_now = None
    if test:
        z_now = embed_evaluation(run.state.model, images, cfg["eval_batch_size"], run.features)
        row.update(run.evaluation(z_now).evaluate(cfg["eval_ks"], run.seed, cfg["eval_kmeans"]))
    row.update({f"train_{k}": v for k, v in logs.items()})
    if val_set is not None:  # at evaluation points only: never on a training step's path
        row[f"val_{metric}"] = selection.score_val(
            embed(run.state.model, val_set, images.transform, cfg["eval_batch_size"], run.features), val_set.labels,
            metric, cfg["eval_ks"], run.seed, cfg["eval_kmeans"])
    if cfg["selection"] != "last":
        run.state.chosen.offer(step, row[f"val_{metric}" if val_set is not None else metric], row,
                               z_now if test else np.empty(0))
    run.state.curve.append(row)
    progress.evaluated(step, row)
    log.info("step %d: %s", step, {k: round(v, 4) for k, v in row.items() if k != "step"})
    return z_now


def finish(run: Run, z: np.ndarray | None) -> dict[str, Any]:
    """Write the finished run's outputs, `metrics.json` last; drop its checkpoints. `z`: the
    latest evaluation embeddings of this process (None: resumed from a checkpoint of the last
    step, so embed again)."""
    cfg, state, out = run.cfg, run.state, run.out
    test, evaluated_here = cfg["evaluate_test"], z is not None
    if test and not evaluated_here:
        z = embed_evaluation(state.model, run.images, cfg["eval_batch_size"], run.features)
    write_with(out / "curve.csv", lambda p: pd.DataFrame(state.curve).to_csv(p, index=False))
    write_with(out / "losses.csv", lambda p: pd.DataFrame(state.losses).to_csv(p, index=False))
    write_with(out / "model.pt", lambda p: torch.save(state.model.state_dict(), p))
    result = {**run.header, "steps": cfg["steps"], "train_seconds": state.train_seconds(),
              "data_wait_seconds": state.wait_seconds()}
    if test:
        reported, z = (state.curve[-1], z) if cfg["selection"] == "last" else state.chosen.reported()
        saved = run.evaluation(z)
        write_with(out / "embeddings.npz", saved.save)
        result["metrics"] = {k: v for k, v in reported.items() if not k.startswith(("train_", "val_")) and k != "step"}
        if evaluated_here or cfg["selection"] != "last":  # the metrics above were computed from exactly this z
            result["embeddings_sha256"] = saved.digest()
    else:  # no test metrics and no embeddings.npz: a stale one (a rerun with evaluate_test on before) goes
        (out / "embeddings.npz").unlink(missing_ok=True)
        result["evaluate_test"] = False
    if cfg["selection"] != "last":
        val_set = run.images.val
        result["selection"] = selection.summary(
            cfg["selection"], cfg["selection_metric"], state.chosen.step, state.chosen.score,
            sorted(int(c) for c in np.unique(val_set.labels)) if val_set is not None else None, run.num_classes)
    write_json(out / "metrics.json", result)
    if not cfg["keep_finished_checkpoints"]:  # only once metrics.json marks the run finished
        checkpoint.discard(out / "ckpt")
    return result

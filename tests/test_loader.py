"""Batches prepared ahead in worker threads are the batches a plain sequential loop draws."""
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from hdml.data.loader import BatchLoader
from hdml.data.samplers import build_sampler
from hdml.data.tensors import BatchTransform, ImageTensors
from hdml.train.trainer import train_run

CPU = torch.device("cpu")
LABELS = np.repeat(np.arange(12), 5)
PIXELS = np.random.default_rng(0).integers(0, 256, (len(LABELS), 3, 12, 12), dtype=np.uint8)
CFG = {"batch_size": 8, "images_per_class": 2}


def make_loader(workers: int, seed: int = 0, states: dict | None = None, sampler=None) -> BatchLoader:
    sample_gen, augment_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    if states:
        sample_gen.set_state(states["sample_gen"])
        augment_gen.set_state(states["augment_gen"])
    sampler = sampler or build_sampler("npair", LABELS, CFG, sample_gen)
    return BatchLoader(ImageTensors(PIXELS, LABELS), sampler, BatchTransform(9, True, "imagenet", CPU),
                       sample_gen, augment_gen, workers)


def sequential(steps: int, seed: int = 0) -> list[tuple[np.ndarray, torch.Tensor]]:
    """The reference: draw the images, then their crops, one step after the other."""
    sample_gen, augment_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    sampler, transform = build_sampler("npair", LABELS, CFG, sample_gen), BatchTransform(9, True, "imagenet", CPU)
    out = []
    for _ in range(steps):
        idx = sampler()
        out.append((idx, transform.crops(PIXELS, idx, True, augment_gen)))
    return out


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_equal_the_sequential_draws(workers):
    with make_loader(workers) as loader:
        got = [next(loader) for _ in range(15)]
    for batch, (idx, crops) in zip(got, sequential(15), strict=True):
        assert np.array_equal(batch.index, idx) and torch.equal(batch.crops, crops)
    assert len({tuple(b.index) for b in got}) > 1  # batches differ from step to step


@pytest.mark.parametrize("workers", [0, 2])
def test_saved_generator_states_resume_the_stream(workers):
    """A checkpoint stores the states of the batch just used, though later ones were drawn."""
    with make_loader(workers) as loader:
        batches = [next(loader) for _ in range(10)]
    with make_loader(workers, seed=99, states=batches[5].rng) as resumed:
        rest = [next(resumed) for _ in range(4)]
    for a, b in zip(batches[6:], rest, strict=True):
        assert np.array_equal(a.index, b.index) and torch.equal(a.crops, b.crops)


def test_close_stops_the_worker_threads_and_wait_is_counted():
    with make_loader(2) as loader:
        for _ in range(5):
            next(loader)
        assert any(t.name.startswith("hdml-crops") for t in threading.enumerate())
    assert not any(t.name.startswith("hdml-crops") for t in threading.enumerate())
    inline = make_loader(0)
    next(inline)
    assert inline.wait > 0


def test_num_workers_does_not_change_training(digits_root, tmp_path):
    overrides = {"steps": 12, "batch_size": 10, "device": "cpu", "embedding_dim": 16, "eval_every": 0}
    runs = {w: train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=2, out=tmp_path / str(w),
                         overrides={**overrides, "num_workers": w}) for w in (0, 2)}
    a, b = (pd.read_csv(tmp_path / str(w) / "losses.csv") for w in (0, 2))
    pd.testing.assert_frame_equal(a, b)
    assert runs[0]["metrics"] == runs[2]["metrics"]
    assert all(r["data_wait_seconds"] >= 0 for r in runs.values())


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_draw_reaches_the_training_loop(workers):
    calls = []

    def sampler():
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("batch needs 4 classes")
        return np.arange(8)

    with make_loader(workers, sampler=sampler) as loader:
        next(loader), next(loader)
        with pytest.raises(ValueError, match="batch needs 4 classes"):
            next(loader)


def test_resume_with_worker_threads_ends_as_the_uninterrupted_run(digits_root, tmp_path, caplog):
    """The checkpoint of step 4 holds the generator states of batch 4, although the drawing
    thread had already drawn batches 5 and 6: a rerun from it ends where the full run ended."""
    overrides = {"steps": 8, "batch_size": 10, "device": "cpu", "embedding_dim": 16, "eval_every": 0,
                 "num_workers": 2, "checkpoint_every": 4, "keep_finished_checkpoints": True}
    full = train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=1, out=tmp_path,
                     overrides=overrides)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step-00000004.pt"]
    with caplog.at_level("INFO"):
        resumed = train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=1, out=tmp_path,
                            overrides=overrides)
    assert "resuming from" in caplog.text and "step-00000004.pt" in caplog.text
    assert resumed["metrics"] == full["metrics"]
    losses = pd.read_csv(tmp_path / "losses.csv")
    assert list(losses.step) == list(range(1, 9))

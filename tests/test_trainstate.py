"""TrainState: the one owner of what a checkpoint holds; its keys are the checkpoint file format,
which checkpoints written before it existed share, so they must not change."""
from __future__ import annotations

import time

import torch
from torch import nn

from hdml.eval.selection import Best
from hdml.train import checkpoint
from hdml.train.state import TrainState

FORMAT = {"model", "method", "sample_gen", "augment_gen", "torch_rng", "curve", "losses", "bad_streak", "elapsed",
          "data_wait", "fingerprint", "chosen"}  # + "step", added by checkpoint.save


def fresh(seed: int) -> TrainState:
    torch.manual_seed(seed)
    return TrainState(nn.Linear(3, 2), nn.Linear(2, 2), torch.Generator().manual_seed(1),
                      torch.Generator().manual_seed(2), "fp")


def test_state_dict_is_the_checkpoint_format_and_round_trips_through_a_file(tmp_path):
    state = fresh(0)
    state.start_clock(lambda: 0.25)
    for step in (1, 2, 3):
        torch.rand(4, generator=state.sample_gen), torch.rand(2, generator=state.augment_gen)
        rng = {"sample_gen": state.sample_gen.get_state(), "augment_gen": state.augment_gen.get_state()}
        state.record_step(step, {"loss": float(step) if step != 3 else float("nan")}, rng, finite=step != 3)
    state.curve.append({"step": 2, "recall@1": 0.5})
    state.chosen.offer(2, 0.5, {"step": 2}, torch.ones(2, 2).numpy())
    torch.rand(5, generator=state.sample_gen)  # the loader drew ahead: not what is saved
    assert set(state.state_dict()) == FORMAT
    checkpoint.save(tmp_path, state.step, state.state_dict(), keep=2)
    expected_global = torch.get_rng_state()

    resumed = fresh(1)
    torch.rand(7)
    resumed.load_state_dict(checkpoint.load_latest(tmp_path, "fp"))
    assert resumed.step == 3 and resumed.bad_streak == 1 and resumed.curve == state.curve
    assert resumed.losses[:2] == state.losses[:2] and len(resumed.losses) == 3
    assert resumed.chosen.step == 2 and resumed.elapsed >= 0 and resumed.data_wait == 0.25
    assert torch.equal(resumed.sample_gen.get_state(), rng["sample_gen"])
    assert torch.equal(resumed.augment_gen.get_state(), rng["augment_gen"])
    assert torch.equal(torch.get_rng_state(), expected_global)
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 state.model.state_dict().values(), strict=True))
    assert torch.equal(resumed.method.weight, state.method.weight)


def test_a_checkpoint_from_before_selection_modes_resumes_with_no_chosen_point():
    old = fresh(0)
    saved = {**old.state_dict(), "step": 5}
    del saved["chosen"]
    resumed = fresh(1)
    resumed.load_state_dict(saved)
    assert resumed.step == 5 and resumed.chosen == Best()


def test_stop_clock_freezes_the_training_time():
    state = fresh(0)
    state.elapsed, state.data_wait = 10.0, 1.0
    state.start_clock(lambda: 2.0)
    time.sleep(0.01)
    state.stop_clock()
    frozen = state.train_seconds()
    time.sleep(0.01)
    assert frozen > 10.0 and state.train_seconds() == frozen and state.wait_seconds() == 3.0

"""HDML term by term: the authors' TF 1 graph (wzzheng/HDML at fa03ef0) beside the suite, on the CPU.

    python bench/authors.py --authors PATH [--steps K]

PATH is a checkout of the authors' repository (`git archive fa03ef0`); the project never contains their
code. `bench/authors_shims.py` imports it under `tf.compat.v1` (needs `pip install -e '.[authors]'`).

For each variant (N-pair: `main_npair.py`, triplet: `main_triplet.py`) the harness
1. runs their `main()` up to the session, as it is, with one stand-in: their `GoogleNet_Model` becomes a
   linear layer (32 -> 1024) in the same `Classifier` scope, so the "backbone" is trained and weight-decayed
   as GoogLeNet's variables were; the suite gets the same layer (`nn.Linear`) as its backbone;
2. builds the suite's method (`hdml.methods.base.build_method`: `baselines/hdml.py`, `baselines/hdml_augmentor.py`,
   `baselines/hdml_generator.py`, `baselines/npair.py` / `baselines/triplet.py`,
   the routing of `hdml/methods/synthesis.py`, the optimiser of `hdml/methods/optim.py`)
   with the authors' flag values, and copies the suite's initial weights into their variables;
3. replays their training loop (`main_npair.py:162-205`: the three Adam steps, their `data_collector`s
   feeding J_avg and J_gen_avg) beside `method.step` on identical batches, in two copies of their graph:
   `synced`, loaded with the suite's whole state (weights, BatchNorm statistics, Adam moments, beta powers)
   before every step, so every term and every update is compared on identical inputs at every step; and
   `free`, loaded once, whose drift from the suite after K steps is set beside that of the suite's own
   float64 copy (the control: what float32 rounding alone does to a run).

Their step is gated (`Authors.step`): all terms and gradients from the pre-step state, then their Adam
updates. Their literal single `sess.run` of the three train ops lets TF's executor read the softmax layer
and the generator before or after another optimiser updated them in place; the harness prints how far that
moves the first step (`Authors.single_run_race`).

N-pair runs at their batch of 128: `new_npair_loss` splits the synthetic tile by its default
`half_batch_size=64` (`lib/Loss_ops.py:250`, not passed by `main_npair.py:118`). Their `data_collector` block
is 64 steps (`lib/nn_Ops.py:292`, a literal); `--block 8` (default) sets it to 8 on both sides
(`authors_shims.load(collector_block=)`, `hdml.block`), so the default K = 20 crosses two blocks;
`--block 64 --steps 72` is their own block.

`main()` collects row lists (term, max_abs_diff, tolerance, passed) from the section functions in
`SECTIONS` and prints one table; another section is a function `rows(authors: Path) -> list[dict]`.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import authors_eval  # noqa: E402
import authors_schedule  # noqa: E402
import authors_shims  # noqa: E402
from authors_rows import table  # noqa: E402
from baselines.hdml import HDMLMethod  # noqa: E402
from hdml.core.config import default_config, merge, validate  # noqa: E402
from hdml.methods.base import build_method  # noqa: E402
from hdml.model.embedding import EmbeddingNet  # noqa: E402

TERM_RTOL = 1e-5  # float32 terms on identical inputs, relative to the term's scale
PARAM_ATOL = 1e-4  # parameters and BatchNorm statistics after each step from the same state
# Adam's normalised step moves a weight by about lr whatever its gradient, so an element whose gradient is at
# float32 noise level (1e-6 of the tensor's scale) may step either way on either side: up to 2 lr apart. A
# parameter passes with at most this fraction of its elements beyond PARAM_ATOL (a wrong formula moves most).
NOISE_FRACTION = 1e-4
FEATURES = 1024  # their code hard-codes the GoogLeNet feature size (main_npair.py:49, lib/HDML.py:72)
STANDIN_IN = 32  # input size of the linear backbone stand-in
NUM_CLASS = 99  # their flag default (FLAGS.py:42)
EMBEDDING = 16  # their flag embedding_size (default 128), smaller to keep the N x N tile fast


@dataclass
class Variant:
    name: str  # the suite's method
    script: str  # their main
    loss_type: str  # their FLAGS.LossType
    batch: int
    flags: dict[str, Any] = field(default_factory=dict)


VARIANTS = {
    "npair": Variant("hdml-npair", "main_npair.py", "NpairLoss", 128),
    "triplet": Variant("hdml-triplet", "main_triplet.py", "Triplet", 12),
}

# Their flag defaults (FLAGS.py, Cars196), the suite's matching run-config keys.
FLAG_VALUES = {"init_learning_rate": 7e-5, "Regular_factor": 5e-3, "loss_l2_reg": 3e-3, "beta": 1e4,
               "alpha": 90.0, "_lambda": 0.5, "Softmax_factor": 1e4, "lr_gen": 1e-2, "s_lr": 1e-3}


def suite_config(variant: Variant, block: int) -> dict:
    cfg = default_config()
    merge(cfg, {"lr": FLAG_VALUES["init_learning_rate"], "weight_decay": FLAG_VALUES["Regular_factor"],
                "batch_size": variant.batch, "embedding_dim": EMBEDDING, "protocol": "code", "head_init": "glorot",
                "hdml.alpha": FLAG_VALUES["alpha"], "hdml.beta": FLAG_VALUES["beta"],
                "hdml.lambda": FLAG_VALUES["_lambda"], "hdml.softmax_scale": FLAG_VALUES["Softmax_factor"],
                "hdml.gen_lr": FLAG_VALUES["lr_gen"], "hdml.cls_lr": FLAG_VALUES["s_lr"], "hdml.block": block,
                "hdml.init_avg": 1e6, "npair.l2_reg": FLAG_VALUES["loss_l2_reg"], "triplet.margin": 1.0,
                "triplet.reduction": "sum"})
    validate(cfg)
    return cfg


def batches(variant: Variant, steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stand-in inputs and labels laid out as their samplers do: N-pair [a; p] of N distinct classes;
    triplet [a; p; n] with 2T distinct classes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        x = rng.standard_normal((variant.batch, STANDIN_IN)).astype(np.float32)
        if variant.loss_type == "NpairLoss":
            c = rng.choice(NUM_CLASS, variant.batch // 2, replace=False)
            labels = np.concatenate([c, c])
        else:
            t = variant.batch // 3
            c = rng.choice(NUM_CLASS, 2 * t, replace=False)
            labels = np.concatenate([c[:t], c[:t], c[t:]])
        out.append((x, labels.astype(np.int64)))
    return out


class Authors:
    """Their graph for one variant, built by their main() with the backbone stand-in, in its own graph."""

    def __init__(self, checkout: Path, variant: Variant, block: int) -> None:
        argv = [f"--LossType={variant.loss_type}", f"--batch_size={variant.batch}",
                f"--embedding_size={EMBEDDING}", f"--num_class={NUM_CLASS}"]
        argv += [f"--{k}={v}" for k, v in FLAG_VALUES.items()]
        self.mods = authors_shims.load(checkout, argv, collector_block=block)
        self.v1 = v1 = authors_shims.tensorflow_v1()
        self.graph = v1.Graph()
        standin = self

        class GoogleNetStandIn:
            """Their GoogleNet_Model's interface: forward(x_raw) -> 1024-d features, variables in the
            caller's scope (Classifier), a linear layer on its own input placeholder."""

            def forward(self, x_raw: Any) -> Any:
                standin.x = v1.placeholder(v1.float32, [None, STANDIN_IN], name="standin_x")
                w = v1.get_variable("standin_w", [STANDIN_IN, FEATURES])
                b = v1.get_variable("standin_b", [FEATURES])
                return v1.matmul(standin.x, w) + b

        namespace = {k: v for k, v in vars(self.mods["FLAGS"]).items() if not k.startswith("__")}
        namespace.update(GoogleNet_Model=type("GoogleNet_Model", (), {"GoogleNet_Model": GoogleNetStandIn}),
                         nn_Ops=self.mods["lib.nn_Ops"], Loss_ops=self.mods["lib.Loss_ops"],
                         HDML=self.mods["lib.HDML"], Embedding_Visualization=self.mods["lib.Embedding_Visualization"])
        with self.graph.as_default():
            exec(authors_shims.main_body(checkout, variant.script), namespace)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                self.g = namespace["build"](None)
            self.session = v1.Session(graph=self.graph, config=v1.ConfigProto(
                inter_op_parallelism_threads=1, intra_op_parallelism_threads=1))
            self.session.run(v1.global_variables_initializer())
            self.vars = {v.name: v for v in v1.global_variables()}
        self.initial = self.values()  # their initialisers' draw, before the suite's weights are loaded
        self.trainable = {v.name for v in self.graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)}
        self.train = [self.g["c_train_step"], self.g["g_train_step"], self.g["s_train_step"]]
        applies = [op for op in self.graph.get_operations() if op.type == "ApplyAdam"]
        if len(applies) != len(self.trainable):
            raise RuntimeError(f"their graph has {len(applies)} Adam updates for {len(self.trainable)} variables")
        self.grads = [op.inputs[9] for op in applies]  # ApplyAdam(var, m, v, b1^t, b2^t, lr, b1, b2, eps, grad)
        g = self.g
        # J_m and J_syn as fetched are weighted (main_npair.py:118-123); their unweighted factors:
        self.terms = {
            "J_m (weighted)": g["J_m"], "J_m": g["J_m"].op.inputs[1], "w": g["J_m"].op.inputs[0],
            "J_syn": g["J_syn"].op.inputs[1],
            "J_metric": g["J_metric"], "J_recon": g["J_recon"], "J_soft": g["J_soft"], "J_gen": g["J_gen"],
            "softmax CE (J_cls)": g["cross_entropy"], "z": g["embedding_z"], "y (backbone)": g["embedding_y_origin"],
            "pulling output": g["embedding_z_concate"], "generator output": g["embedding_y_concate"],
        }
        self.collectors = {k: self.mods["lib.nn_Ops"].data_collector(tag=k, init=1e6) for k in ("Jm", "J_gen")}

    def feed(self, x: np.ndarray, labels: np.ndarray, lr: float, training: bool = True) -> dict:
        g = self.g
        return {self.x: x, g["label_raw"]: labels.reshape(-1, 1).astype(np.int32), g["is_Training"]: training,
                g["lr"]: lr, g["Javg"]: self.collectors["Jm"].read(), g["Jgen"]: self.collectors["J_gen"].read()}

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> dict[str, np.ndarray]:
        """One iteration of their loop (main_npair.py:190-203), its three Adam steps gated: every term and
        every gradient from the pre-step state first, then their ApplyAdam ops on those gradients; then the
        collectors take the fetched (weighted) J_m and J_gen.

        Their loop runs all three train ops in one `sess.run` and leaves the order of reads and in-place
        updates across optimisers to TF's executor (reference variables): J_soft and the generator's gradient
        may read the softmax layer already updated, J_metric's gradient may read the generator already updated
        (`single_run_race` measures it). The gate is the order their code means and the suite computes. The
        second run feeds the gradients and `is_Training: False`, so the BatchNorm updates (control dependencies
        of every gradient op, nn_Ops.py:116) run once, in the first."""
        feed = self.feed(x, labels, lr)
        fed = {"J_avg (fed)": feed[self.g["Javg"]], "J_gen_avg (fed)": feed[self.g["Jgen"]]}
        out = self.session.run({**self.terms, "grads": self.grads}, feed_dict=feed)
        self.session.run(self.train, feed_dict={**self.feed(x, labels, lr, training=False),
                                                **dict(zip(self.grads, out.pop("grads"), strict=True))})
        self.collectors["Jm"].update(var=out["J_m (weighted)"])
        self.collectors["J_gen"].update(var=out["J_gen"])
        return {**out, **fed}

    def single_run_race(self, x: np.ndarray, labels: np.ndarray, lr: float) -> dict[str, float]:
        """Their literal step, one `sess.run` of the three train ops with the losses, against the gated step
        from the same state: how far the fetched J_soft and J_gen and the updated weights move. Leaves the
        graph's state as the gated step would."""
        start = self.values()
        single = self.session.run({"train": self.train, "J_soft": self.g["J_soft"], "J_gen": self.g["J_gen"]},
                                  feed_dict=self.feed(x, labels, lr))
        after_single = self.values()
        self.load(start)
        collectors = {k: copy.deepcopy(c) for k, c in self.collectors.items()}
        gated = self.step(x, labels, lr)
        self.collectors = collectors
        after_gated = self.values()
        return {"J_soft": abs(float(single["J_soft"]) - float(gated["J_soft"])),
                "J_gen": abs(float(single["J_gen"]) - float(gated["J_gen"])),
                "weights": max(float(np.abs(after_single[n] - after_gated[n]).max()) for n in after_gated
                               if "Adam" not in n and "_power" not in n)}

    def values(self) -> dict[str, np.ndarray]:
        return self.session.run(self.vars)

    def load(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self.vars[name].load(value, self.session)


Getter = Callable[[HDMLMethod], torch.Tensor]


def variable_map(authors: Authors) -> dict[str, tuple[Getter, bool]]:
    """Their variable name -> (the suite's tensor, given a method; transposed in their layout?)."""

    def bn(prefix: str, module: Callable[[HDMLMethod], nn.BatchNorm1d]) -> dict[str, tuple[Getter, bool]]:
        return {f"{prefix}/batch_normalization/gamma:0": (lambda m: module(m).weight, False),
                f"{prefix}/batch_normalization/beta:0": (lambda m: module(m).bias, False),
                f"{prefix}/batch_normalization/moving_mean:0": (lambda m: module(m).running_mean, False),
                f"{prefix}/batch_normalization/moving_variance:0": (lambda m: module(m).running_var, False)}

    out = {
        "Classifier/standin_w:0": (lambda m: m.model.backbone.weight, True),
        "Classifier/standin_b:0": (lambda m: m.model.backbone.bias, False),
        **bn("Classifier/BN1", lambda m: m.model.head.bn),
        "Classifier/fc1/weightfc1w:0": (lambda m: m.model.head.fc.weight, True),
        "Classifier/fc1/biasfc1b:0": (lambda m: m.model.head.fc.bias, False),
        "Generator/generator1/weightgenerator1w:0": (lambda m: m.generator.net[0].weight, True),
        "Generator/generator1/biasgenerator1b:0": (lambda m: m.generator.net[0].bias, False),
        **bn("Generator/generator1/generator1BN", lambda m: m.generator.net[2]),
        "Generator/generator2/weightgenerator2w:0": (lambda m: m.generator.net[3].weight, True),
        "Generator/generator2/biasgenerator2b:0": (lambda m: m.generator.net[3].bias, False),
        "Softmax_classifier/weightsoftmax_w:0": (lambda m: m.classifier.weight, True),
        "Softmax_classifier/biassoftmax_b:0": (lambda m: m.classifier.bias, False),
    }
    model_vars = {n for n in authors.vars if "Adam" not in n and "_power" not in n and "Embedding_of_fc1" not in n}
    if model_vars != set(out):
        raise RuntimeError(f"their variables {sorted(model_vars ^ set(out))} do not map onto the suite's")
    return out


def layout(t: torch.Tensor, transpose: bool) -> np.ndarray:
    t = t.detach()
    return (t.T if transpose else t).cpu().numpy()


def suite_values(method: HDMLMethod, mapping: dict[str, tuple[Getter, bool]]) -> dict[str, np.ndarray]:
    return {name: layout(get(method), tr) for name, (get, tr) in mapping.items()}


def suite_state(method: HDMLMethod, mapping: dict[str, tuple[Getter, bool]], authors: Authors,
                steps_done: int) -> dict[str, np.ndarray]:
    """Everything their graph holds, from the suite's state: weights, BatchNorm statistics, Adam's two
    moments per weight and the optimisers' beta powers (TF keeps b^t for the coming step t)."""
    out = suite_values(method, mapping)
    for name, (get, tr) in mapping.items():
        p = get(method)
        if isinstance(p, nn.Parameter):
            state = method.opt.state.get(p) or {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            out[name.replace(":0", "/Adam:0")] = layout(state["exp_avg"], tr)
            out[name.replace(":0", "/Adam_1:0")] = layout(state["exp_avg_sq"], tr)
    for name in authors.vars:
        if "_power" in name:
            out[name] = np.float32((0.9 if "beta1_power" in name else 0.999) ** (steps_done + 1))
    missing = set(authors.vars) - set(out) - {n for n in authors.vars if "Embedding_of_fc1" in n}
    if missing:
        raise RuntimeError(f"their variables {sorted(missing)} have no suite state")
    return out


def new_method(variant: Variant, block: int, seed: int) -> HDMLMethod:
    """The suite's method on the linear backbone stand-in, as a run builds it (protocol code)."""
    torch.manual_seed(seed)
    cfg = suite_config(variant, block)
    model = EmbeddingNet(nn.Linear(STANDIN_IN, FEATURES), FEATURES, EMBEDDING)
    method = build_method(variant.name, model, cfg, NUM_CLASS)
    assert isinstance(method, HDMLMethod)
    return method


def float64_copy(method: HDMLMethod) -> HDMLMethod:
    """The same method, weights and state in float64: the control for what float32 rounding alone does."""
    control = copy.deepcopy(method)
    for part in (control.model, control.nets, control.loss):
        part.double()
    for state in control.opt.state.values():
        for k, v in state.items():
            if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                state[k] = v.double()
    return control


class Capture:
    """The suite's generator input ([z; synthetic tuple]) and output of the last step, by forward hook."""

    def __init__(self, method: HDMLMethod) -> None:
        self.seen: dict[str, torch.Tensor] = {}
        method.generator.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.seen = {"generator input": args[0].detach().clone(), "generator output": output.detach().clone()}


TENSOR_TERMS = ("z (embeddings)", "pulling output (synthetic tuple)", "generator output")
EXACT_FACTOR = 3.0  # a term may differ by 3 x the suite's own float32 rounding on that step, if that is larger


def suite_terms(logs: dict[str, float], capture: Capture, w: float, n_real: int) -> dict[str, Any]:
    """The suite's values of the compared terms, in their scaling (J_recon, J_soft carry their factors)."""
    lam, s = FLAG_VALUES["_lambda"], FLAG_VALUES["Softmax_factor"]
    return {
        "J_avg fed to the pulling": logs["j_avg"], "J_gen_avg fed to J_metric": logs["j_gen_avg"],
        "lambda0 = 1 - exp(-alpha / J_avg)": logs["lambda0"], "J_m (unweighted, weight decay in)": logs["j_m"],
        "J_m weighted (the J_avg input)": logs["j_m_weighted"], "w = exp(-beta / J_gen_avg), the weight of J_m": w,
        "J_syn (the base loss on the synthetic tuple)": logs["j_syn"], "J_metric": logs["j_metric"],
        "J_recon, (1 - lambda) sum": (1 - lam) * logs["j_recon"], "J_soft, S lambda CE": s * lam * logs["j_soft"],
        "J_gen": logs["j_gen"], "softmax CE on real features (J_cls)": logs["j_cls"],
        "z (embeddings)": capture.seen["generator input"][:n_real],
        "pulling output (synthetic tuple)": capture.seen["generator input"][n_real:],
        "generator output": capture.seen["generator output"],
    }


def close(term: str, suite: Any, authors: Any, rtol: float = TERM_RTOL, exact: Any = None) -> dict[str, Any]:
    """One row: max |suite - authors| against rtol x the term's scale (max |authors|, at least 1e-6), or, if
    larger, EXACT_FACTOR x |suite - exact|, the suite's float32 error against its float64 run of the step."""
    s, a = np.asarray(suite, dtype=np.float64), np.asarray(authors, dtype=np.float64)
    if s.shape != a.shape:
        raise ValueError(f"{term}: suite shape {s.shape}, authors' {a.shape}")
    diff = float(np.max(np.abs(s - a))) if s.size else 0.0
    tol = rtol * max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-6)
    if exact is not None:
        tol = max(tol, EXACT_FACTOR * float(np.max(np.abs(s - np.asarray(exact, dtype=np.float64)))))
    return {"term": term, "max_abs_diff": diff, "tolerance": tol, "passed": bool(diff <= tol)}


def close_tensor(term: str, suite: Any, authors: Any, rtol: float = TERM_RTOL, exact: Any = None) -> dict[str, Any]:
    """A tensor term: its relative L2 error ||suite - authors|| / ||authors|| against rtol (an element near
    zero in a sum of 512 float32 products has no meaningful relative error of its own), or, if larger,
    EXACT_FACTOR x the suite's own relative L2 error against its float64 run of the step."""
    s, a = np.asarray(suite, dtype=np.float64), np.asarray(authors, dtype=np.float64)
    if s.shape != a.shape:
        raise ValueError(f"{term}: suite shape {s.shape}, authors' {a.shape}")
    norm = max(float(np.linalg.norm(a)), 1e-12)
    rel = float(np.linalg.norm(s - a)) / norm
    tol = rtol
    if exact is not None:
        tol = max(tol, EXACT_FACTOR * float(np.linalg.norm(s - np.asarray(exact, dtype=np.float64))) / norm)
    return {"term": f"{term}, relative L2", "max_abs_diff": rel, "tolerance": tol, "passed": rel <= tol}


def close_param(term: str, suite: np.ndarray, authors: np.ndarray) -> dict[str, Any]:
    """A parameter after one step: max |diff| against PARAM_ATOL; passed also when at most NOISE_FRACTION of
    its elements (at least one) are beyond it, the noise-level gradients Adam steps either way."""
    d = np.abs(np.asarray(suite, dtype=np.float64) - np.asarray(authors, dtype=np.float64))
    beyond = int((d > PARAM_ATOL).sum())
    allowed = max(1, math.floor(NOISE_FRACTION * d.size))
    return {"term": term, "max_abs_diff": float(d.max()), "tolerance": PARAM_ATOL,
            "passed": beyond <= allowed, "note": f"{beyond} of {d.size} elements beyond (at most {allowed})"}


def merge_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per term over the steps: the step of the largest |diff| with its tolerance; passed only if
    every step passed."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = out.setdefault(r["term"], {**r})
        if r["max_abs_diff"] > m["max_abs_diff"]:
            m.update(max_abs_diff=r["max_abs_diff"], tolerance=r["tolerance"], note=r.get("note", ""))
        m["passed"] = m["passed"] and r["passed"]
    return list(out.values())


def init_rows(method: HDMLMethod, mapping: dict[str, tuple[Getter, bool]], authors: Authors) -> list[dict[str, Any]]:
    """Initialisation (not the stand-in's): each Linear weight's standard deviation against their
    initialiser's draw, within 5% (a Glorot-uniform std is bound / sqrt 3; the sampling error at these sizes
    is under 1%); biases and BatchNorm parameters and statistics exactly."""
    ours = suite_values(method, mapping)
    rows = []
    for name in mapping:
        if "standin" in name:
            continue
        term = f"initial value: {name.removesuffix(':0')}"
        if "/weight" in name:
            std, theirs = float(ours[name].std()), float(authors.initial[name].std())
            rows.append({"term": f"{term} (std)", "max_abs_diff": abs(std - theirs), "tolerance": 0.05 * theirs,
                         "passed": abs(std - theirs) <= 0.05 * theirs})
        else:
            diff = float(np.abs(ours[name] - authors.initial[name]).max())
            rows.append({"term": term, "max_abs_diff": diff, "tolerance": 0.0, "passed": diff == 0.0})
    return rows


def run_variant(checkout: Path, key: str, steps: int, block: int, seed: int = 0,
                log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], list[float], list[float]]:
    """Rows of one variant over K steps; the free-running drift per step (max |suite - authors| over every
    parameter and statistic) and that of the float64 control (max |suite - suite in float64|), reported, not
    judged: after a ReLU or pulling-mask flip float32 runs part chaotically on either side (the control shows
    the suite's own float32 run parting from its float64 copy as far).

    Two copies of their graph run beside the suite (float32) and its float64 control: `synced` is loaded with
    the suite's whole state (weights, statistics, Adam moments, beta powers) before every step, so each step's
    terms and update are compared on identical inputs; `free` is loaded once and runs on its own."""
    variant = VARIANTS[key]
    method = new_method(variant, block, seed)
    control = float64_copy(method)
    capture = Capture(method)
    synced, free = Authors(checkout, variant, block), Authors(checkout, variant, block)
    mapping = variable_map(free)
    rows = init_rows(method, mapping, free)
    free.load(suite_state(method, mapping, free, 0))
    drift: list[float] = []
    drift_control: list[float] = []
    drift_exact: list[float] = []  # authors (float32) against the suite in float64
    alpha = FLAG_VALUES["alpha"]
    lr = method.cfg["lr"]
    n_real = variant.batch
    for step, (x, labels) in enumerate(batches(variant, steps, seed)):
        synced.load(suite_state(method, mapping, synced, step))
        exact = float64_copy(method)  # this step in float64, from the same state: float32's own rounding
        capture64 = Capture(exact)
        logs64 = exact.step(torch.from_numpy(x).double(), torch.from_numpy(labels))
        if step == 0:
            race = synced.single_run_race(x, labels, lr)
            synced.load(suite_state(method, mapping, synced, step))
            log(f"{key}: their literal single-run step against the gated one, from the same state: |J_soft| "
                f"{race['J_soft']:.3g}, |J_gen| {race['J_gen']:.3g}, weights {race['weights']:.3g}")
        logs = method.step(torch.from_numpy(x), torch.from_numpy(labels))
        control.step(torch.from_numpy(x).double(), torch.from_numpy(labels))
        a = synced.step(x, labels, lr)
        free.step(x, labels, lr)
        j_avg, j_gen_avg = float(a["J_avg (fed)"]), float(a["J_gen_avg (fed)"])  # float64 from here
        w = math.exp(-FLAG_VALUES["beta"] / j_gen_avg)
        theirs_terms = {
            "J_avg fed to the pulling": a["J_avg (fed)"], "J_gen_avg fed to J_metric": a["J_gen_avg (fed)"],
            "lambda0 = 1 - exp(-alpha / J_avg)": 1 - math.exp(-alpha / j_avg), "J_m (unweighted, weight decay in)":
            a["J_m"], "J_m weighted (the J_avg input)": a["J_m (weighted)"],
            "w = exp(-beta / J_gen_avg), the weight of J_m": a["w"],
            "J_syn (the base loss on the synthetic tuple)": a["J_syn"], "J_metric": a["J_metric"],
            "J_recon, (1 - lambda) sum": a["J_recon"], "J_soft, S lambda CE": a["J_soft"], "J_gen": a["J_gen"],
            "softmax CE on real features (J_cls)": a["softmax CE (J_cls)"], "z (embeddings)": a["z"],
            "pulling output (synthetic tuple)": a["pulling output"][n_real:],
            "generator output": a["generator output"]}
        ours_terms, exact_terms = suite_terms(logs, capture, w, n_real), suite_terms(logs64, capture64, w, n_real)
        for term, theirs_value in theirs_terms.items():
            check = close_tensor if term in TENSOR_TERMS else close
            rows.append(check(term, ours_terms[term], theirs_value, exact=exact_terms[term]))
        ours, ours64 = suite_values(method, mapping), suite_values(control, mapping)
        theirs, theirs_free = synced.values(), free.values()
        for name in mapping:
            rows.append(close_param(f"one step, from the same state: {name.removesuffix(':0')}", ours[name],
                                    theirs[name]))
        diffs = {name: float(np.abs(ours[name] - theirs_free[name]).max()) for name in mapping}
        diffs64 = {name: float(np.abs(ours[name] - ours64[name]).max()) for name in mapping}
        drift.append(max(diffs.values()))
        drift_control.append(max(diffs64.values()))
        drift_exact.append(max(float(np.abs(theirs_free[name] - ours64[name]).max()) for name in mapping))
        log(f"{key} step {step + 1}/{steps}: J_avg {a['J_avg (fed)']:.4g}, lambda0 {logs['lambda0']:.4g}, "
            f"free-running drift {drift[-1]:.2e} (float64 control {drift_control[-1]:.2e})")
    log(f"{key}: free-running drift per step, authors vs suite in float64: "
        + " ".join(f"{d:.1e}" for d in drift_exact))
    worst = max(diffs, key=diffs.get)
    log(f"{key}: after {steps} free-running steps the largest drift is {diffs[worst]:.2e} in {worst} "
        f"(suite vs its float64 copy: {diffs64[worst]:.2e})")
    return [{**r, "term": f"{key}: {r['term']}"} for r in merge_rows(rows)], drift, drift_control


def hdml_rows(authors: Path, steps: int = 20, block: int = 8,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Section: both variants, K steps, J_avg / J_gen_avg over blocks of `block` steps on both sides."""
    out = []
    for key in VARIANTS:
        rows, drift, control = run_variant(authors, key, steps, block, log=log)
        out += rows
        log(f"{key}: free-running drift per step, suite vs authors: " + " ".join(f"{d:.1e}" for d in drift))
        log(f"{key}: the same, suite vs suite in float64 (control): " + " ".join(f"{d:.1e}" for d in control))
    return out


SECTIONS: list[Callable[[Path], list[dict[str, Any]]]] = [hdml_rows, authors_schedule.rows, authors_eval.rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", type=Path, required=True, help="checkout of wzzheng/HDML at fa03ef0")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps K")
    parser.add_argument("--block", type=int, default=8,
                        help="steps per J_avg / J_gen_avg block on both sides (theirs: 64; 8 lets K = 20 cross two)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    try:
        rows = [row for section in SECTIONS
                for row in (hdml_rows(args.authors, args.steps, args.block) if section is hdml_rows
                            else section(args.authors))]
    except authors_shims.AuthorsCodeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(rows))
    failed = [r["term"] for r in rows if not r["passed"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} terms within tolerance, {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

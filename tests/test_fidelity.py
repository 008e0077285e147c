"""HDML as the authors' code (github.com/wzzheng/HDML, commit fa03ef0) runs it under
`protocol: code`, and the paper's protocol kept apart from the ablations (hdml/fidelity.md).
References are computed here from the authors' formulas, in numpy, not from the suite's code."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.hdml import HDMLNPair, HDMLTriplet
from baselines.hdml_generator import recon_loss, soft_loss
from hdml.core.config import default_config, merge, validate
from hdml.methods.base import build_method
from hdml.model.embedding import EmbeddingNet


def np_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row softmax cross-entropy, as tf.nn.sparse_softmax_cross_entropy_with_logits."""
    shifted = logits - logits.max(1, keepdims=True)
    return np.log(np.exp(shifted).sum(1)) - shifted[np.arange(len(labels)), labels]


NAMES = {HDMLNPair: "hdml-npair", HDMLTriplet: "hdml-triplet"}


def method(cls: type, overrides: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = EmbeddingNet(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12)), 12, 4)
    cfg = default_config()
    merge(cfg, {"lr": 1e-2, "weight_decay": 1e-3, "hdml.gen_hidden": 16, "batch_size": 12, **(overrides or {})})
    validate(cfg)
    return build_method(NAMES[cls], model, cfg, 3, train_size=100)


def synthetic_features(m, x: torch.Tensor, labels: torch.Tensor) -> tuple[dict, np.ndarray]:
    """The step's losses and the generator's synthetic rows (y_tilde), captured by a hook."""
    seen = {}
    handle = m.generator.register_forward_hook(lambda mod, inp, out: seen.setdefault("out", out.detach()))
    L = m.losses(x, labels)
    handle.remove()
    return L, seen["out"][len(x):].numpy().astype(np.float64)


def test_soft_loss_groups_add_the_group_means() -> None:
    cls = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        cls.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    y = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    labels = torch.tensor([0, 2, 1, 1, 0])
    ce = np_ce(y.numpy() @ cls.weight.detach().numpy().T, labels.numpy())
    assert soft_loss(cls, y, labels, (2, 3)).item() == pytest.approx(ce[:2].mean() + ce[2:].mean(), rel=1e-6)
    assert soft_loss(cls, y, labels).item() == pytest.approx(ce.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="groups"):
        soft_loss(cls, y, labels, (2, 2))


def test_npair_j_soft_is_the_authors_two_means_under_protocol_code() -> None:
    """genSoftmax (HDML.py:91-95): S lambda (mean CE over the N x N tile + mean CE over the anchors)."""
    m = method(HDMLNPair)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    L, y_syn = synthetic_features(m, x, labels)
    n = 3
    w, b = (t.detach().numpy().astype(np.float64) for t in (m.classifier.weight, m.classifier.bias))
    logits = y_syn @ w.T + b
    anchors = np_ce(logits[:n], labels[:n].numpy())
    tile = np_ce(logits[n:], np.tile(labels[n:].numpy(), n))  # row i*N + j has p_j's label
    want = anchors.mean() + tile.mean()
    assert L["j_soft"].item() == pytest.approx(want, rel=1e-5)
    assert abs(want - np.concatenate([anchors, tile]).mean()) > 1e-3  # the one-mean form differs
    assert L["j_gen"].item() == pytest.approx(0.5 * L["j_recon"].item() + 1e4 * 0.5 * want, rel=1e-5)


def test_triplet_j_soft_is_one_mean_over_the_synthetic_triplets() -> None:
    """main_triplet.py:119-120: S lambda mean CE over [anchors; positives; synthetic negatives]."""
    m = method(HDMLTriplet)
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0, 1, 2, 0, 1])
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(4))
    L, y_syn = synthetic_features(m, x, labels)
    w, b = (t.detach().numpy().astype(np.float64) for t in (m.classifier.weight, m.classifier.bias))
    assert L["j_soft"].item() == pytest.approx(np_ce(y_syn @ w.T + b, labels.numpy()).mean(), rel=1e-5)


def test_recon_scale_per_protocol() -> None:
    y = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    y_rec = torch.tensor([[0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])
    assert recon_loss(y_rec, y, protocol="code").item() == 1 + 2 + 4  # sum over batch and dims
    assert recon_loss(y_rec, y, protocol="paper").item() == pytest.approx((1 + 2 + 4) / 3)  # per sample, mean
    with pytest.raises(ValueError, match="protocol"):
        recon_loss(y_rec, y, protocol="tf")


@pytest.mark.parametrize("cls", [HDMLNPair, HDMLTriplet])
def test_softmax_term_changes_the_generator_gradient_under_the_paper_protocol(cls: type) -> None:
    """protocol paper must not be the no-softmax ablation: with 1024-d features at initialisation
    (the worst case: J_recon is largest before the generator has learnt anything) lambda J_soft
    moves d J_gen / d generator by > 0.1% (about 0.4% here, growing as J_recon falls); a J_recon
    summed over the batch, as before, divided that share by the batch size (0.01%)."""
    n_cls = 16
    labels = (torch.arange(n_cls).repeat(2) if cls is HDMLNPair
              else torch.cat([torch.arange(10), torch.arange(10), torch.arange(10) + 5]) % n_cls)

    def grads(softmax: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = EmbeddingNet(nn.Sequential(nn.Linear(6, 1024), nn.ReLU()), 1024, 4)
        cfg = default_config()
        merge(cfg, {"protocol": "paper", "batch_size": len(labels), "hdml.softmax": softmax})
        validate(cfg)
        m = build_method(NAMES[cls], model, cfg, n_cls, train_size=100)
        x = torch.randn(len(labels), 6, generator=torch.Generator().manual_seed(5))
        g = torch.autograd.grad(m.losses(x, labels)["j_gen"], list(m.generator.parameters()))
        return torch.cat([t.flatten() for t in g])

    with_soft, without = grads(True), grads(False)
    share = ((with_soft - without).norm() / with_soft.norm()).item()
    assert share > 1e-3, f"the softmax term moves the generator's gradient by only {share:.2e}"


def test_every_batchnorm_of_head_and_generator_runs_tensorflow_settings() -> None:
    """tf.layers.batch_normalization (nn_Ops.py:81-84): decay 0.99 -> momentum 0.01, eps 1e-3."""
    m = method(HDMLNPair)
    norms = [mod for part in (m.model.head, m.generator) for mod in part.modules()
             if isinstance(mod, nn.BatchNorm1d)]
    assert len(norms) == 2
    for bn in norms:
        assert (bn.momentum, bn.eps) == (0.01, 1e-3)
    # one training batch moves the running mean 1% of the way to the batch mean, as TF's decay 0.99
    bn = m.model.head.bn
    y = torch.randn(8, 12) + 5
    bn.train()
    bn(y)
    assert torch.allclose(bn.running_mean, 0.01 * y.mean(0), atol=1e-6)


def eval_steps(**sets) -> list[int]:
    from hdml.core.schedule import eval_due

    cfg = default_config()
    merge(cfg, sets)
    validate(cfg)
    return [s for s in range(1, cfg["steps"] + 1) if eval_due(s, cfg)]


def test_test_selected_cadence_is_the_authors_under_protocol_code() -> None:
    """main_npair.py: evaluate when step % bp_epoch == 0, bp_epoch 500, switched to 64 by the
    evaluation at step 5,000: 500, ..., 5000, 5056, 5120, ..., 8000."""
    steps = eval_steps(eval_every=500)
    assert steps == list(range(500, 5001, 500)) + list(range(5056, 8001, 64))
    assert len(steps) == 10 + 47 and {5632, 6848} <= set(steps)
    assert eval_steps(eval_every=500, protocol="paper") == list(range(500, 8001, 500))
    assert eval_steps(eval_every=500, eval_every_late=0) == list(range(500, 8001, 500))
    assert eval_steps() == [8000]  # no periodic evaluation: the last step only
    # a switch point between two regular evaluations waits for the next one, as the authors' loop
    assert eval_steps(steps=100, eval_every=30, eval_late_from=40, eval_every_late=8)[:4] == [30, 60, 64, 72]


LABELS = np.repeat(np.arange(30), 3)


def triplet_batch(kind: str, batch_size: int = 30, labels: np.ndarray = LABELS, seed: int = 0) -> np.ndarray:
    from hdml.data.samplers import build_sampler

    cfg = {"batch_size": batch_size, "images_per_class": 2, "triplet_sampler": kind}
    return build_sampler("triplet", labels, cfg, torch.Generator().manual_seed(seed))


def test_triplet_batches_use_2t_distinct_classes_as_the_authors_sampler() -> None:
    """TripletLossScheme (data_provider.py:158-179): random.sample of 2T classes, T anchor
    classes then T negative classes."""
    sample = triplet_batch("distinct")
    for _ in range(20):
        idx = sample()
        a, p, n = LABELS[idx[:10]], LABELS[idx[10:20]], LABELS[idx[20:]]
        assert (a == p).all() and (idx[:10] != idx[10:20]).all()
        assert len(set(a)) == 10 and len(set(n)) == 10 and not set(a) & set(n)


def test_independent_triplets_repeat_classes_and_distinct_needs_enough_classes() -> None:
    sample = triplet_batch("independent")
    assert any(len(set(LABELS[sample()[:10]])) < 10 or len(set(LABELS[sample()[20:]])) < 10 for _ in range(20))
    few = np.repeat(np.arange(5), 4)
    with pytest.raises(ValueError, match="triplet_sampler"):
        triplet_batch("distinct", 30, few)
    from hdml.data.datasets import get_dataset

    assert get_dataset("digits").run_defaults["triplet_sampler"] == "independent"


def test_paper_protocol_variant_fixes_one_beta_and_one_learning_rate() -> None:
    """The paper: "We fixed the balance factors beta and lambda" and "set the learning rate for
    CNNs" once for all datasets; the code's per-dataset values stay with protocol code."""
    from pathlib import Path

    import yaml

    from hdml.core.config import build_run_config
    from hdml.data.datasets import get_dataset
    from hdml.workflow.plan import validate_workflow_config

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config/paper.yaml").read_text())
    runs = [r for r in validate_workflow_config(cfg) if r.variant == "protocol=paper"]
    assert {r.dataset for r in runs} == {"cub200", "cars196", "sop"}
    assert {r.method for r in runs} == {"hdml-triplet", "hdml-npair", "daml-triplet", "daml-npair"}
    built = {r: build_run_config(get_dataset(r.dataset).defaults_for(r.method), r.overrides, r.method) for r in runs}
    assert {(c["lr"], c["protocol"]) for c in built.values()} == {(1e-4, "paper")}
    assert {c["hdml"]["beta"] for r, c in built.items() if r.method.startswith("hdml")} == {1e4}
    assert not any("hdml" in c for r, c in built.items() if r.method.startswith("daml"))  # HDML's beta is not DAML's


def separated(n_clusters: int = 12, per: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, 16)).astype(np.float32) * 10
    labels = np.repeat(np.arange(n_clusters), per)
    return centres[labels] + 0.01 * rng.standard_normal((len(labels), 16)).astype(np.float32), labels


def test_clustering_as_the_authors_finds_separated_clusters_where_one_lloyd_run_does_not() -> None:
    """60 points in 12 perfectly separated clusters: k-means++ with 10 restarts (sklearn's KMeans,
    evaluation.py:20) finds them; one Lloyd run from sampled points (faiss, PML) does not."""
    from hdml.eval.metrics import evaluate

    x, labels = separated()
    for seed in range(3):
        ours = evaluate(x, labels, [1], seed=seed)
        assert (ours["nmi"], ours["f1"]) == (1.0, 1.0)
    old = [evaluate(x, labels, [1], seed=s, kmeans_algorithm="faiss") for s in range(3)]
    assert all(o["nmi"] < 0.97 and o["f1"] < 0.9 for o in old)
    sklearn = evaluate(x, labels, [1], kmeans_algorithm="sklearn")  # KMeans as the authors call it
    assert (sklearn["nmi"], sklearn["f1"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="kmeans"):
        evaluate(x, labels, [1], kmeans_algorithm="lloyd")


def test_kmeans_restarts_matches_sklearn_kmeans_quality_and_is_seeded() -> None:
    """Same algorithm as sklearn.cluster.KMeans(k, n_init=10): on Gaussian data its best inertia
    is within 1% of sklearn's (another random stream, so not equal), and a seed fixes it."""
    from sklearn.cluster import KMeans

    from hdml.eval.metrics import kmeans_restarts

    x = np.random.default_rng(1).standard_normal((600, 8)).astype(np.float32)

    def inertia(assign: np.ndarray) -> float:
        return sum(float(((x[assign == j] - x[assign == j].mean(0)) ** 2).sum()) for j in np.unique(assign))

    ours = kmeans_restarts(x, 20, seed=3)
    ref = KMeans(20, n_init=10, random_state=1).fit(x).inertia_
    assert len(np.unique(ours)) == 20
    assert inertia(ours) <= 1.01 * ref
    assert np.array_equal(ours, kmeans_restarts(x, 20, seed=3))
    assert not np.array_equal(ours, kmeans_restarts(x, 20, seed=4))
    # fewer restarts can only be worse or equal: the best of 10 includes the first run
    assert inertia(ours) <= inertia(kmeans_restarts(x, 20, seed=3, n_init=1)) + 1e-3



def test_the_clustering_is_chosen_per_dataset_in_the_paper_grid() -> None:
    """`eval_kmeans: faiss` in one dataset's train section (the cheap way out at SOP's size,
    hdml/fidelity.md note 3) reaches that dataset's runs and no other's."""
    from pathlib import Path

    import yaml

    from hdml.core.config import build_run_config
    from hdml.data.datasets import get_dataset
    from hdml.workflow.plan import validate_workflow_config

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config/paper.yaml").read_text())
    cfg["datasets"]["sop"]["train"]["eval_kmeans"] = "faiss"
    chosen = {(r.dataset, build_run_config(get_dataset(r.dataset).run_defaults, r.overrides)["eval_kmeans"])
              for r in validate_workflow_config(cfg)}
    assert chosen == {("sop", "faiss"), ("cub200", "kmeans++"), ("cars196", "kmeans++")}

def test_run_config_chooses_the_clustering() -> None:
    cfg = default_config()
    assert cfg["eval_kmeans"] == "kmeans++"
    merge(cfg, {"eval_kmeans": "faiss"})
    validate(cfg)
    merge(cfg, {"eval_kmeans": "lloyd"})
    from hdml.core.config import ConfigError

    with pytest.raises(ConfigError, match="eval_kmeans"):
        validate(cfg)


def test_weight_decay_covers_weights_and_biases_but_not_batchnorm() -> None:
    """main_npair.py:60-65: Regular_factor * sum of tf.nn.l2_loss (sum(v^2) / 2) over every trainable
    variable of the metric network whose name lacks "batch_normalization": biases included."""
    from hdml.methods.optim import weight_penalty

    torch.manual_seed(0)
    model = EmbeddingNet(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12)), 12, 4)
    with torch.no_grad():
        model.head.bn.weight.fill_(3.0)
        model.head.bn.bias.fill_(2.0)
    tensors = [m.weight for m in (model.backbone[0], model.backbone[2], model.head.fc)]
    tensors += [m.bias for m in (model.backbone[0], model.backbone[2], model.head.fc)]
    want = 0.01 * sum(float((t.detach().double() ** 2).sum()) for t in tensors) / 2
    assert weight_penalty(model, 0.01).item() == pytest.approx(want, rel=1e-6)


def test_paper_grid_takes_the_codes_per_dataset_values() -> None:
    """FLAGS.py (fa03ef0 and, for products, e6dfab3): CUB evaluates every 46 steps late in
    training, SOP's generator learns at 5e-4 with beta 5e4."""
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config/paper.yaml").read_text())
    train = {d: cfg["datasets"][d]["train"] for d in ("cub200", "cars196", "sop")}
    assert (train["cub200"]["eval_every_late"], train["cars196"]["eval_every_late"]) == (46, 64)
    assert train["sop"]["hdml"] == {"beta": 5e4, "gen_lr": 5e-4}
    assert (train["cub200"]["hdml"]["beta"], train["cars196"]["hdml"]["beta"]) == (5e3, 1e4)


def test_ledger_rows_have_known_statuses_and_proofs() -> None:
    from hdml.fidelity import PROOFS, STATUSES, proofs, read_ledger, summary

    rows = read_ledger()
    groups = summary(rows)
    assert list(groups) == list(STATUSES) and sum(map(len, groups.values())) == len(rows) >= 40
    executed = proofs(rows)["executed"]
    assert list(proofs(rows)) == list(PROOFS) and len(executed) + len(proofs(rows)["read"]) == len(rows)
    assert {"LR schedule and run length", "evaluation cadence (test-selected)", "NMI", "F1",
            "Recall@K"} <= set(executed)


def test_ledger_citations_resolve() -> None:
    """Every `path::symbol` of every table's suite columns (HDML's, DDML's, Multi-Similarity's,
    DAML's) names a symbol its file defines (ast; `Class.method` too) or a key its YAML has, no
    suite citation is a `path:line`, and every test named exists: a renamed function fails here,
    not in a reader's hands."""
    from pathlib import Path

    from hdml.fidelity import read_tables, unresolved

    tables = read_tables()
    assert len(tables) >= 4 and all(t.suite_columns for t in tables)
    assert unresolved(Path(__file__).parents[1]) == []


# The three kinds of table hdml/fidelity.md holds: HDML's ledger (first), DAML's (the same columns,
# further down) and the five-column tables of DDML and Multi-Similarity (no proof, no status).
GOOD_SUITE, GOOD_TEST = "`baselines/hdml_augmentor.py::pull`", "`tests/test_fidelity.py::test_ledger_citations_resolve`"
TABLES = {
    "hdml": ("| element | paper | authors' code (fa03ef0) | suite, protocol code | suite, protocol paper | test "
             "| proof | status |\n|---|---|---|---|---|---|---|---|\n"
             "| J_gen | x | `lib/HDML.py:17` | {suite} | same | {test} | read | match |\n"),
    "daml": ("| element | paper | authors' code (883aa5a) | suite, protocol code | suite, protocol paper | test "
             "| proof | status |\n|---|---|---|---|---|---|---|---|\n"
             "| J_hard | x | utils.py:308-314 | {suite} | same | {test} | executed | match |\n"),
    "five-column": ("| element | paper | authors' code (file:line) | this suite | test |\n|---|---|---|---|---|\n"
                    "| weighting | log(1 + \\|x\\|) | MSL:45-48 | {suite} | {test} |\n"),
}


def synthetic_ledger(path, bad_kind: str, suite: str, test: str) -> int:
    """A ledger with one table of each kind, good citations everywhere but in `bad_kind`'s row;
    returns that row's line."""
    text, line = "# Ledger\n\nProse with `baselines/hdml_augmentor.py` (a bare path is fine in prose).\n", 0
    for kind, table in TABLES.items():
        text += f"\n## {kind}\n\n"
        if kind == bad_kind:
            line = text.count("\n") + 3
            text += table.format(suite=suite, test=test)
        else:
            text += table.format(suite=GOOD_SUITE, test=GOOD_TEST)
    path.write_text(text)
    return line


CASES = [
    # what resolves
    (GOOD_SUITE, GOOD_TEST, None),
    ("`hdml/methods/optim.py::MilestoneLR.get_lr`, `baselines/daml.py::DAMLMethod.eval_features`", "-", None),
    ("`config/paper.yaml::datasets.sop.train.hdml.gen_lr`", "-", None),
    ("`baselines/hdml_augmentor.py::pull` as torchvision `models/googlenet.py:207` does", "-", None),
    ("-", "`tests/test_training.py::test_method_trains_and_its_loss_falls[ddml]`, `::test_same_seed_same_result`",
     None),
    ("-", "`tests/test_loss_triplet.py` (the whole file)", None),
    # what does not
    ("`hdml/no_such_module.py::pull`", GOOD_TEST, "hdml/no_such_module.py does not exist"),
    ("`baselines/hdml_augmentor.py::no_such_function`", GOOD_TEST,
     "baselines/hdml_augmentor.py defines no no_such_function"),
    ("`hdml/methods/optim.py::MilestoneLR.no_such_method`", GOOD_TEST, "defines no MilestoneLR.no_such_method"),
    ("`baselines/daml.py::DAMLNPair.eval_features`", GOOD_TEST, "defines no DAMLNPair.eval_features"),  # inherited
    ("`baselines/hdml_augmentor.py:24-56`", GOOD_TEST, "`baselines/hdml_augmentor.py:24-56` cites a line"),
    ("baselines/ddml.py:67 (unquoted)", GOOD_TEST, "`baselines/ddml.py:67` cites a line"),
    ("multisimilarity.py:46", GOOD_TEST, "`multisimilarity.py:46` is the suite's baselines/multisimilarity.py"),
    ("`baselines/hdml_augmentor.py`", GOOD_TEST, "`baselines/hdml_augmentor.py` cites no symbol"),
    ("`config/paper.yaml::datasets.sop.train.no_key`", GOOD_TEST, "has no key datasets.sop.train.no_key"),
    ("`lib/HDML.py::genSoftmax`", GOOD_TEST, "is not a path of this repository"),
    (GOOD_SUITE, "`tests/test_fidelity.py::test_that_does_not_exist`", "has no test test_that_does_not_exist"),
    (GOOD_SUITE, "`tests/test_fidelity.py`, `::test_ledger_citations_resolve`, `::test_gone`", "has no test test_gone"),
    (GOOD_SUITE, "tests/test_daml.py::test_gone (unquoted)", "tests/test_daml.py has no test test_gone"),
    (GOOD_SUITE, "`tests/test_nothing_here.py::test_x`", "test file tests/test_nothing_here.py does not exist"),
    (GOOD_SUITE, "`tests/test_nothing_here.py`", "test file tests/test_nothing_here.py does not exist"),
    (GOOD_SUITE, "`tests/test_fidelity.py:300`", "`tests/test_fidelity.py:300` cites a line"),
    (GOOD_SUITE, "`::test_ledger_citations_resolve`", "follows no file"),
    (GOOD_SUITE, "test_ledger_citations_resolve", "`test_ledger_citations_resolve` names no test file"),
    (GOOD_SUITE, "`tests/test_fidelity.py::separated`", "tests/test_fidelity.py::separated is not a test"),
]


@pytest.mark.parametrize("kind", list(TABLES))
@pytest.mark.parametrize("suite, test, problem", CASES)
def test_unresolved_citations_are_named_in_every_kind_of_table(tmp_path, kind, suite, test, problem) -> None:
    from pathlib import Path

    from hdml.fidelity import unresolved

    line = synthetic_ledger(tmp_path / "f.md", kind, suite, test)
    found = unresolved(Path(__file__).parents[1], tmp_path / "f.md")
    assert (found == []) if problem is None else (
        len(found) == 1 and problem in found[0] and found[0].startswith(f"line {line} ")), found


@pytest.mark.parametrize("prose, problem", [
    ("`baselines/hdml_augmentor.py` and augmentor's `pull` (`lib/HDML.py:17-29`)", None),
    ("pinned by tests/test_fidelity.py::test_ledger_citations_resolve and `::test_recon_scale_per_protocol`", None),
    ("see `baselines/hdml_augmentor.py::gone`", "baselines/hdml_augmentor.py defines no gone"),
    ("see baselines/hdml_augmentor.py:24", "`baselines/hdml_augmentor.py:24` cites a line"),
    ("pinned by tests/test_fidelity.py::test_gone", "tests/test_fidelity.py defines no test_gone"),
    ("(::test_worked_example matches it)", "follows no file"),
    ("see `hdml/gone.py`", "hdml/gone.py does not exist"),
])
def test_prose_citations_resolve_too(tmp_path, prose, problem) -> None:
    from pathlib import Path

    from hdml.fidelity import unresolved

    synthetic_ledger(tmp_path / "f.md", "hdml", GOOD_SUITE, GOOD_TEST)
    text = (tmp_path / "f.md").read_text().replace("## daml", f"A paragraph,\n{prose}.\n\n## daml")
    (tmp_path / "f.md").write_text(text)
    found = unresolved(Path(__file__).parents[1], tmp_path / "f.md")
    assert (found == []) if problem is None else (
        len(found) == 1 and problem in found[0] and "(prose)" in found[0]), found


def test_every_table_is_read_and_only_the_first_is_counted(tmp_path) -> None:
    """The report counts HDML's ledger (the first table); the checker reads them all, escaped
    pipes inside cells included, and every table's proof and status are checked."""
    from pathlib import Path

    from hdml.fidelity import read_ledger, read_tables, unresolved

    path = tmp_path / "f.md"
    synthetic_ledger(path, "hdml", GOOD_SUITE, GOOD_TEST)
    tables = read_tables(path)
    assert [t.suite_columns for t in tables] == [["suite, protocol code", "suite, protocol paper"]] * 2 + [
        ["this suite"]]
    assert [r.element for r in read_ledger(path)] == ["J_gen"]
    five = tables[2].rows[0]
    assert (five.cells["paper"], five.proof, five.status) == ("log(1 + \\|x\\|)", "", "")
    path.write_text(path.read_text().replace("| executed | match |", "| executed | close |"))
    with pytest.raises(ValueError, match=r"f.md:\d+: status 'close' of 'J_hard'"):
        read_tables(path)
    path.write_text("| element | paper | test |\n|---|---|---|\n| J_gen | x | - |\n")
    assert unresolved(Path(__file__).parents[1], path) == [
        "line 1: the table has no suite column ('suite...' or 'this suite...') or no 'test' column, so its citations "
        "go unchecked"]


def test_bad_ledger_status_or_proof_is_named(tmp_path) -> None:
    from hdml.fidelity import read_ledger

    path = tmp_path / "f.md"
    path.write_text("| element | paper | proof | status |\n|---|---|---|---|\n| J_gen | x | read | match |\n"
                    "| J_soft | y | read | close |\n")
    with pytest.raises(ValueError, match=r"f.md:4: status 'close' of 'J_soft'"):
        read_ledger(path)
    path.write_text("| element | paper | proof | status |\n|---|---|---|---|\n| J_gen | x | seen | match |\n")
    with pytest.raises(ValueError, match=r"f.md:3: proof 'seen' of 'J_gen'"):
        read_ledger(path)
    path.write_text("| element | paper | status |\n|---|---|---|\n| J_gen | x | match |\n")
    with pytest.raises(ValueError, match="last columns must be 'proof', 'status'"):
        read_ledger(path)
    path.write_text("no table\n")
    with pytest.raises(ValueError, match="no ledger table"):
        read_ledger(path)


def test_report_section_renders_the_ledger_summary(tmp_path) -> None:
    from hdml.report import Report, fidelity_section

    path = tmp_path / "f.md"
    path.write_text("| element | code | proof | status |\n|---|---|---|---|\n| J_gen | a | executed | match |\n"
                    "| J_soft | b | read | match |\n"
                    "<!-- backbone rows -->\n| k of k-means | c | read | documented difference |\n")
    (tmp_path / "out" / "tables").mkdir(parents=True)
    rep = Report(tmp_path / "out")
    fidelity_section(rep, ledger=path)
    html = rep.sections[0]
    assert rep.toc == [("fidelity", "Fidelity to the authors' code")] and "3 elements" in html
    md = (tmp_path / "out" / "tables" / "fidelity.md").read_text()
    assert "1 executed beside the authors' code, 2 read" in md
    assert "| match | 2 | 1 | J_gen; J_soft |" in md and "| documented difference | 1 | 0 | k of k-means |" in md
    assert "| follows paper | 0 | 0 |" in md
    missing = Report(tmp_path / "out")
    fidelity_section(missing, ledger=tmp_path / "none.md")
    assert "No fidelity ledger" in missing.sections[0]

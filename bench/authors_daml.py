"""DAML's authors' code run beside the suite, term by term: anonymous1computervision/DAML at 883aa5a
(MIT, Chainer), whose functions bench/authors_daml_chainer.py imports from a checkout under an
interpreter with Chainer. Both sides get the same raw embeddings of one triplet batch (the
code's shape: 40 triplets of 512-d) and the same generator and discriminator weights (D: the
suite's identity start perturbed, so that it is not a plain ReLU; G: N(0, 0.04), so that both
hinges are active, `GEN_STD`); each term's max |suite - authors| is printed against its
tolerance, 1e-5 of the term's largest magnitude (float32 on both sides; 1e-12 for NMI and F1,
float64). Values only: the parameter updates differ by design (the gradient routing,
hdml/fidelity.md).

    python3 -m venv V && V/bin/pip install "setuptools<70" wheel "numpy<2"
    V/bin/pip install --no-build-isolation chainer "scipy<1.14"  # chainer 7.8.1: its sdist needs pkg_resources
    git clone https://github.com/anonymous1computervision/DAML AUTHORS && git -C AUTHORS checkout 883aa5a
    HDML_DAML_PYTHON=V/bin/python python bench/authors_daml.py AUTHORS

The suite side is `daml-triplet` under protocol code with `triplet.reduction: mean`, weight decay
0, and its model replaced by the identity on the raw embeddings (the backbone's place; the
code's model ends in the same normalisation). Two terms are compared after the documented
rescaling (hdml/fidelity.md, "base triplet loss"): the code's triplet loss is the suite's mean
halved.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from baselines.daml import DAMLMethod  # noqa: E402
from hdml.core.config import default_config, merge, validate  # noqa: E402
from hdml.eval import metrics  # noqa: E402
from hdml.methods.base import build_method  # noqa: E402
from hdml.model.embedding import EmbeddingNet  # noqa: E402

TRIPLETS, DIM, RELATIVE = 40, 512, 1e-5
FLOAT64, RELATIVE64 = {"nmi", "f1"}, 1e-12  # computed in float64 on both sides
GEN_STD = 0.04  # the generator's weights here: ||x~-||^2 about 1, so that with positives from near to far
# (`batch`) J_adv's hinge is active on some triplets and the metric loss's on the others


def chainer_python() -> str:
    """The interpreter with Chainer: env HDML_DAML_PYTHON (the suite's own has no Chainer)."""
    return os.environ.get("HDML_DAML_PYTHON", sys.executable)


def identity_model(d: int) -> EmbeddingNet:
    """An EmbeddingNet whose output is its input, exactly: no backbone, no BatchNorm, fc = I."""
    model = EmbeddingNet(nn.Identity(), d, d)
    model.head.bn = nn.Identity()
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.eye(d))
        model.head.fc.bias.zero_()
    return model


def suite_method(seed: int = 0) -> DAMLMethod:
    torch.manual_seed(seed)
    cfg = default_config()
    merge(cfg, {"protocol": "code", "weight_decay": 0.0, "triplet.reduction": "mean", "steps": 10,
                "daml.warmup": 0.2, "lr": 1e-4})
    validate(cfg)
    method = build_method("daml-triplet", identity_model(DIM), cfg, 3)
    assert isinstance(method, DAMLMethod) and method.discriminator is not None
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in method.discriminator.parameters():  # off its identity start: D's features are not relu(z)
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for p in method.generator.parameters():  # N(0, 0.02)'s x~- stays near 0, nearer every anchor than
            p.copy_(torch.randn(p.shape, generator=gen) * GEN_STD)  # its positive: J_adv's hinge would be 0
    return method


def suite_terms(method: DAMLMethod, x: torch.Tensor) -> dict[str, np.ndarray]:
    t = len(x) // 3
    method.steps_done = method.warmup_steps  # past the warm-up: the adversarial losses
    anchors = torch.arange(t) % 5
    L = method.losses(x, torch.cat([anchors, anchors, (anchors + 1) % 5]))
    with torch.no_grad():
        z = method.embedding(x)
        a, p, n = z[:t], z[t : 2 * t], z[2 * t :]
        fake = method.generator(a, p, n)
        feats = method.discriminator(torch.cat([a, p, fake]))
        out = {"embedding": z, "generator": fake, "discriminator": feats,
               "j_hard": L["j_hard"], "j_reg": L["j_reg"], "j_adv": L["j_adv"], "j_gen": L["j_gen"],
               "j_syn": L["j_syn"] / 2, "j_syn_step": L["j_syn"] / 2, "j_m_warmup": L["j_m"] / 2}
        out["eval_epoch19"] = method.eval_features(x)  # steps_done == warmup_steps: D has not trained
        method.steps_done = method.warmup_steps + 1
        out["eval_epoch20"] = method.eval_features(x)
    return {k: v.detach().numpy() for k, v in out.items()}


def batch(seed: int) -> torch.Tensor:
    """Raw embeddings [anchors; positives; negatives]: positive t is its anchor plus noise of
    scale 0.1 to 10 times the anchor's, so that ||a - p||^2 after normalisation spans 0 to ~1.8."""
    gen = torch.Generator().manual_seed(seed + 2)
    a, noise, n = (torch.randn(TRIPLETS, DIM, generator=gen) for _ in range(3))
    return torch.cat([a, a + torch.linspace(0.1, 10, TRIPLETS)[:, None] * noise, n])


def partition(seed: int, n: int = 2000, classes: int = 98) -> tuple[np.ndarray, np.ndarray]:
    """Labels in 98 classes (Cars196's test classes, the code's n_clusters) and clusters that
    agree with them on 60% of the points: NMI and F1 well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    clusters = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))
    return labels, clusters


LABELS = {
    "embedding": "normalised embedding (F.normalize)",
    "generator": "generator output x~-",
    "discriminator": "discriminator features of [a; p; x~-]",
    "j_hard": "J_hard",
    "j_reg": "J_reg",
    "j_adv": "J_adv (through D)",
    "j_gen": "J_gen (lossfun_one_batch)",
    "j_syn": "J_m synthetic through D (suite mean / 2)",
    "j_syn_step": "J_m synthetic, lossfun_one_batch (suite mean / 2)",
    "j_m_warmup": "J_m warm-up, real triplets (suite mean / 2)",
    "eval_epoch19": "evaluation features, warm-up (iterate_forward epoch 19)",
    "eval_epoch20": "evaluation features, after (iterate_forward epoch 20)",
    "nmi": "NMI of a given partition (compute_clutering_metric)",
    "f1": "F1 of a given partition (compute_clutering_metric)",
}


def rows(authors: Path, seed: int = 0) -> list[dict]:
    """One row per term: term, max_abs_diff, tolerance, passed."""
    method = suite_method(seed)
    x = batch(seed)
    arrays = {"x": x.numpy(), "alpha": np.float32(1.0)}
    for prefix, net in (("g", method.generator), ("d", method.discriminator)):
        for layer in ("l0", "l1"):
            lin = getattr(net, layer)
            arrays[f"{prefix}_{layer}_W"] = lin.weight.detach().numpy()
            arrays[f"{prefix}_{layer}_b"] = lin.bias.detach().numpy()
    ours = suite_terms(method, x)
    arrays["classes"], arrays["clusters"] = partition(seed)
    ours |= metrics.clustering_metrics(arrays["classes"], arrays["clusters"])
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **arrays)
        run = subprocess.run([chainer_python(), str(HERE / "authors_daml_chainer.py"), str(authors), str(inp),
                              str(out)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"the authors' side failed ({chainer_python()}, set HDML_DAML_PYTHON to an "
                               f"interpreter with Chainer):\n{run.stderr[-2000:]}")
        with np.load(out) as theirs_file:
            theirs = dict(theirs_file)
    table = []
    for key, label in LABELS.items():
        a, b = np.asarray(ours[key], np.float64), np.asarray(theirs[key], np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{key}: suite shape {a.shape}, authors' {b.shape}")
        diff = float(np.abs(a - b).max())
        tol = (RELATIVE64 if key in FLOAT64 else RELATIVE) * max(float(np.abs(b).max()), 1e-2)
        table.append({"term": label, "max_abs_diff": diff, "tolerance": tol, "passed": diff <= tol})
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("authors", type=Path, help="checkout of anonymous1computervision/DAML at 883aa5a")
    args = parser.parse_args()
    table = rows(args.authors)
    width = max(len(r["term"]) for r in table)
    print(f"{'term':<{width}}  max|suite-authors|  tolerance  pass")
    for r in table:
        print(f"{r['term']:<{width}}  {r['max_abs_diff']:18.3e}  {r['tolerance']:9.1e}  {r['passed']}")
    return 0 if all(r["passed"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The Chainer half of bench/authors_daml.py: runs the DAML authors' own functions on the arrays
the suite half wrote, under an interpreter that has Chainer (numpy < 2), and writes what they
return. Nothing of the authors' code is copied: it is imported from their checkout.

    PYTHON_WITH_CHAINER bench/authors_daml_chainer.py AUTHORS_CHECKOUT IN.npz OUT.npz

IN holds `classes` and `clusters` (a partition whose NMI and F1 their evaluation computes), `x`
(the raw embeddings of a batch [anchors; positives; negatives], i.e. what the code's `fc` layer
outputs), the generator's and discriminator's weights (`g_l0_W` ... `d_l1_b`, Chainer's
(out, in) layout, as torch's) and `alpha`. The modules the authors' files import but these
functions never call (matplotlib, yaml, tqdm, scikit-learn, scipy) are replaced by stubs when they
are not installed; `tqdm` by the identity. scipy is needed (`comb` in the clustering metrics).
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np


def _stub_missing_imports() -> None:
    """Empty stand-ins for modules the authors' files import at module level, used nowhere here."""

    def unavailable(*_: object, **__: object) -> None:
        raise RuntimeError("a stub of bench/authors_daml_chainer.py was called: install the real package")

    stubs = {"matplotlib": {}, "matplotlib.pyplot": {}, "yaml": {"load": unavailable},
             "tqdm": {"tqdm": lambda iterable, *a, **k: iterable}, "sklearn": {},
             "sklearn.preprocessing": {"LabelEncoder": unavailable}, "sklearn.cluster": {"KMeans": unavailable},
             "sklearn.metrics": {}, "sklearn.neighbors": {"KNeighborsClassifier": unavailable},
             "sklearn.model_selection": {"ParameterSampler": unavailable}, "scipy": {},
             "scipy.special": {"comb": unavailable}, "colorama": {"init": unavailable}}
    for name, attrs in stubs.items():
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)


def _ignore_python2_bytecode() -> None:
    """The checkout ships Python 2 .pyc files beside its sources (lib/__init__.pyc, no __init__.py),
    which Python 3 would load and reject: import from sources (and extensions) only."""
    from importlib import machinery

    loaders = [(machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
               (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES)]
    sys.path_hooks.insert(0, machinery.FileFinder.path_hook(*loaders))
    sys.path_importer_cache.clear()


def main(authors: Path, inp: Path, out: Path) -> None:
    _stub_missing_imports()
    _ignore_python2_bytecode()
    sys.path.insert(0, str(authors))
    import chainer
    import chainer.functions as F
    from lib.common import utils  # the authors' lossfun_one_batch, l2_hard, l2_norm, adv_loss, triplet_loss
    from lib.functions.triplet_loss import triplet_loss as warmup_triplet_loss
    from lib.models.net import Discriminator, Generator

    data = dict(np.load(inp))
    x = data["x"].astype(np.float32)
    d = x.shape[1]
    gen, dis = Generator(out_dim=d), Discriminator(d, d)
    for net, prefix in ((gen, "g"), (dis, "d")):
        for layer in ("l0", "l1"):
            link = getattr(net, layer)
            link.W.array[...] = data[f"{prefix}_{layer}_W"]
            link.b.array[...] = data[f"{prefix}_{layer}_b"]

    class StandIn(chainer.Chain):
        """The backbone's place: its input is the raw embedding, its output that normalised, as
        ModifiedGoogLeNet with normalize_output=True ends (modified_googlenet.py:54-55)."""

        def __call__(self, h: np.ndarray) -> chainer.Variable:
            return F.normalize(h, axis=1)

    model = StandIn()
    alpha = float(data["alpha"])
    res: dict[str, np.ndarray] = {}
    with chainer.using_config("train", True):
        batch = model(x)
        a, p, n = F.split_axis(batch, 3, axis=0)
        fake = gen(F.concat([a, p, n], axis=1))
        batch_fake = F.concat([a, p, fake], axis=0)
        feats = dis(batch_fake)
        res["embedding"] = batch.array
        res["generator"] = fake.array
        res["discriminator"] = feats.array
        res["j_hard"] = utils.l2_hard(batch_fake, batch).array
        res["j_reg"] = utils.l2_norm(batch_fake, batch).array
        res["j_adv"] = utils.adv_loss(feats).array
        res["j_syn"] = utils.triplet_loss(feats).array
        res["j_m_warmup"] = warmup_triplet_loss(a, p, n, alpha).array

        # the whole step function as their training loop calls it (train_eval.py:104), past the warm-up;
        # its optimisers as train_eval.py:64-83 builds them (the values are taken before they update)
        params = types.SimpleNamespace(loss="triplet", alpha=alpha)
        opts = []
        for net, lr in ((model, 1e-7), (model, 1e-4), (gen, 1e-5), (dis, 1e-4)):
            opt = chainer.optimizers.Adam(lr)
            opt.setup(net)
            opts.append(opt)
        loss_gen, loss_m = utils.lossfun_one_batch(model, gen, dis, *opts, params, (x, np.zeros(len(x))), epoch=20)
        res["j_gen"] = loss_gen.array
        res["j_syn_step"] = loss_m.array

    # the evaluation's features (utils.py:165-185) before and after the warm-up's end, weights as given
    for net, prefix in ((gen, "g"), (dis, "d")):  # undo the step's update
        for layer in ("l0", "l1"):
            link = getattr(net, layer)
            link.W.array[...] = data[f"{prefix}_{layer}_W"]
            link.b.array[...] = data[f"{prefix}_{layer}_b"]
    batches = [(x[i : i + 50], np.zeros(len(x[i : i + 50]))) for i in range(0, len(x), 50)]
    with chainer.no_backprop_mode(), chainer.using_config("train", False):
        res["eval_epoch19"] = utils.iterate_forward(model, dis, batches, normalize=False, epoch=19)[0]
        res["eval_epoch20"] = utils.iterate_forward(model, dis, batches, normalize=False, epoch=20)[0]
    # NMI and F1 of a given partition (lib/common/evaluation.py:73-190; needs scipy for its `comb`)
    from lib.common.evaluation import compute_clutering_metric

    res["nmi"], res["f1"] = compute_clutering_metric(data["classes"], data["clusters"])
    np.savez(out, **{k: np.asarray(v) for k, v in res.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))

import numpy as np
import pytest
import torch

from hdml.core.config import DEFAULTS
from hdml.data.samplers import SAMPLERS, DistinctTripletSampler, TripletSampler, build_sampler

LABELS = np.repeat(np.arange(12), 5)


def sampler(kind, batch_size, m=2, labels=LABELS, triplet="independent"):
    cfg = {"batch_size": batch_size, "images_per_class": m, "triplet_sampler": triplet}
    return build_sampler(kind, labels, cfg, torch.Generator().manual_seed(0))


def test_npair_layout_anchors_then_positives_of_distinct_classes():
    idx = sampler("npair", 16)()
    a, p = LABELS[idx[:8]], LABELS[idx[8:]]
    assert (a == p).all() and len(set(a)) == 8 and not set(idx[:8]) & set(idx[8:])


def test_triplet_layout():
    idx = sampler("triplet", 30)()
    a, p, n = LABELS[idx[:10]], LABELS[idx[10:20]], LABELS[idx[20:]]
    assert (a == p).all() and (a != n).all() and (idx[:10] != idx[10:20]).all()


def test_m_per_class_groups():
    idx = sampler("m_per_class", 12, m=3)()
    groups = LABELS[idx].reshape(4, 3)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 4 and len(set(idx)) == 12


def test_same_seed_same_batches_and_classes_vary():
    s1, s2 = sampler("npair", 8), sampler("npair", 8)
    batches = [s1() for _ in range(5)]
    assert all((b == s2()).all() for b in batches)
    assert len({tuple(sorted(LABELS[b[:4]])) for b in batches}) > 1


def test_too_few_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="needs 20 classes"):
        sampler("npair", 40)()
    with pytest.raises(ValueError, match="multiple of images_per_class"):
        sampler("m_per_class", 10, m=3)


def test_unknown_kind_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown sampler 'npairs' \(did you mean 'npair'\?\); known: m_per_class, "
                                         r"npair, triplet"):
        sampler("npairs", 8)


def test_each_registered_sampler_reads_only_the_flat_keys_it_declares():
    """`reads` is the contract with the run config: every declared key is a core config key, and a
    config holding only those keys builds each kind (a key read but not declared raises KeyError)."""
    assert set(SAMPLERS) == {"npair", "triplet", "m_per_class"}
    for kind, cls in SAMPLERS.items():
        assert set(cls.reads) <= set(DEFAULTS), kind
        for triplet in ("distinct", "independent"):
            full = {"batch_size": 12, "images_per_class": 3, "triplet_sampler": triplet}
            built = build_sampler(kind, LABELS, {k: full[k] for k in cls.reads}, torch.Generator().manual_seed(0))
            assert len(built()) == 12


def test_triplet_sampler_key_picks_the_variant():
    assert type(sampler("triplet", 18, triplet="distinct")) is DistinctTripletSampler
    assert type(sampler("triplet", 18, triplet="independent")) is TripletSampler

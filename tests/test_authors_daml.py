"""DAML's authors' code (anonymous1computervision/DAML at 883aa5a, Chainer) run beside the suite,
term by term (bench/authors_daml.py). The harness needs a checkout and an interpreter with
Chainer; without them those tests skip, naming the command that runs them. The harness's premise
(exact identity model, both hinges active) is checked here always."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import authors_daml  # noqa: E402

AUTHORS = os.environ.get("HDML_DAML_PATH")
needs_authors = pytest.mark.skipif(
    not AUTHORS or not os.environ.get("HDML_DAML_PYTHON"),
    reason="needs the DAML authors' code and Chainer: HDML_DAML_PATH=<checkout of "
           "anonymous1computervision/DAML at 883aa5a> HDML_DAML_PYTHON=<python with chainer 7.8.1, numpy<2, scipy> "
           "python -m pytest tests/test_authors_daml.py (install recipe: bench/authors_daml.py)")


def test_the_harness_premise_holds_without_chainer() -> None:
    """The suite side alone: the stand-in model is exactly the identity, the embedding normalised,
    and both hinges (J_adv's, the synthetic metric loss's) are active on the harness's batch, so
    that a difference in either would show."""
    method = authors_daml.suite_method()
    x = authors_daml.batch(0)
    with torch.no_grad():
        assert torch.equal(method.model(x), x)
    terms = authors_daml.suite_terms(method, x)
    assert terms["j_adv"] > 1e-3 and terms["j_syn"] > 1e-2 and all(
        math.isfinite(float(terms[k])) for k in ("j_hard", "j_reg", "j_gen", "j_m_warmup"))
    assert not (terms["eval_epoch19"] == terms["eval_epoch20"]).all()  # D's features differ from z


@needs_authors
def test_suite_agrees_with_the_authors_code_term_by_term() -> None:
    table = authors_daml.rows(Path(AUTHORS))
    assert len(table) == len(authors_daml.LABELS)
    failed = [r for r in table if not r["passed"]]
    assert not failed, failed


@needs_authors
def test_the_harness_catches_a_wrong_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """J_adv taken before D instead of on D's features (the suite's form before it followed the
    code): the J_adv and J_gen rows fail, the others still pass."""
    import baselines.daml as daml

    real = daml.generator_losses

    def before_d(*args, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, **{**kwargs, "adv": None})

    monkeypatch.setattr(daml, "generator_losses", before_d)
    failed = {r["term"] for r in authors_daml.rows(Path(AUTHORS)) if not r["passed"]}
    assert failed == {authors_daml.LABELS["j_adv"], authors_daml.LABELS["j_gen"]}

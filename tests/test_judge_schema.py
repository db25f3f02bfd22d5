"""The automated judge's grammar: every value an approving branch admits is a coherent approval of the key
(so a small model cannot waste a judgement on an incoherent one), and the rejecting branch stays unconstrained.
Exhaustive over the branch's enums: the parser (the same rules as a human's form) must accept every instance."""
from __future__ import annotations

import itertools

import pytest

from curation.review.invariant import VoteRecord, problems
from curation.review.judge import _panel_form, _review_form, panel_schema, review_schema
from curation.review.records import ReviewError
from medcot.config import RubricPolicyConfig, load_config
from medcot.records import Item
from medcot.review_tables import RUBRIC_DIMENSIONS

ITEM = Item(id="q1", family_id="q1", language="en", question="Which drug?", options={"A": "a", "B": "b", "C": "c"},
            answer="B")
LETTERS = sorted(ITEM.options)


def _instances(branch: dict) -> list[dict]:
    """Every object of a branch whose properties are enums (strings get a fixed comment)."""
    props = branch["properties"]
    names = [k for k in props if "enum" in props[k]]
    out = []
    for combo in itertools.product(*(props[k]["enum"] for k in names)):
        d = dict(zip(names, combo))
        out.append({k: d.get(k, "fine") for k in props})
    return out


@pytest.mark.parametrize("policy", [RubricPolicyConfig(), RubricPolicyConfig(min_score=2, required={}),
                                    RubricPolicyConfig(min_score=0, required={"clinical_utility": 1})])
def test_every_approval_the_review_grammar_admits_counts_under_the_invariant(policy):
    cfg = load_config(None).review
    cfg.rubric_policy = policy
    reject, approve = review_schema(LETTERS, ITEM.answer, cfg)["anyOf"]
    assert reject["properties"]["approve"]["enum"] == [False] and approve["properties"]["approve"]["enum"] == [True]
    assert list(approve["properties"])[0] == "approve"  # the verdict is decided first
    instances = _instances(approve)
    assert instances
    for d in instances:
        form = _review_form(d, ITEM, cfg, "rev1")  # never raises: coherent by construction
        vote = VoteRecord(user_id=1, kind="llm", phase="review", revision_hash="rev1", approve=form.approve,
                          answer=form.answer, blind=True, binary=(form.relevance, form.correctness, form.sufficiency),
                          scores=form.scores or {})
        assert problems(vote, "rev1", ITEM.answer, cfg) == []
    # the rejecting branch lets the judge say anything: every score, every letter
    assert all(reject["properties"][d]["enum"] == [0, 1, 2] for d in RUBRIC_DIMENSIONS)
    assert reject["properties"]["answer"]["enum"] == LETTERS


def test_panel_grammar_accepts_only_coherently_and_the_parser_still_refuses_forged_ones():
    cfg = load_config(None).review
    other, accept = panel_schema(LETTERS, ITEM.answer, cfg)["anyOf"]
    assert other["properties"]["action"]["enum"] == ["regenerate", "discard"]
    assert accept["properties"]["answer"]["enum"] == [ITEM.answer]
    assert accept["properties"]["medical_correctness"]["enum"] == [2]
    for d in _instances(accept)[:200]:
        assert _panel_form(d, ITEM, 1, cfg, "rev1").action == "accept"
    # a reply outside the grammar (e.g. from a server without structured outputs) is refused, never repaired
    forged = {**_instances(accept)[0], "medical_correctness": 0}
    with pytest.raises(ReviewError, match="incoherent"):
        _panel_form(forged, ITEM, 1, cfg, "rev1")

"""Agreement statistics checked against independently computed values: published textbook examples, and a
brute-force pairwise computation of Krippendorff's alpha that shares no code with the implementation."""
from __future__ import annotations

import random
from itertools import combinations

import pytest
from review_helpers import ALL2, panel_vote, vote

from curation.review import assign as assigning
from curation.review import sample
from curation.review.agreement import cohen_kappa, fleiss_from_ratings, fleiss_kappa, krippendorff_alpha
from curation.review.panel import submit_panel
from curation.review.stats import collect, render_text
from curation.review.submit import submit_review
from medcot.config import ReviewConfig
from medcot.store import Store

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units,
# missing values (None). Published: nominal 0.743, ordinal 0.815, interval 0.849.
K2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
         [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects, 14 raters, 5 categories,
# P_bar = 0.378, P_e = 0.213, kappa = 0.210.
FLEISS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
          [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def _units(matrix):
    return [[v for v in col if v is not None] for col in zip(*matrix)]


def test_krippendorff_published_example():
    units = _units(K2011)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def _alpha_pairwise(units, level):
    """Independent route: D_o = weighted mean distance of value pairs WITHIN units (each unit's pairs weighted
    1/(m_u - 1)), D_e = mean distance over ALL pairs of pairable values; ordinal distances from the pooled ranks."""
    pooled = [v for u in units if len(u) >= 2 for v in u]
    n = len(pooled)

    def dist(a, b):
        if level == "nominal":
            return float(a != b)
        if level == "interval":
            return float(a - b) ** 2
        lo, hi = min(a, b), max(a, b)  # ordinal: values between, counting the two ends by halves
        between = sum(1 for v in pooled if lo <= v <= hi)
        return (between - (pooled.count(a) + pooled.count(b)) / 2) ** 2

    d_o = sum(2 * dist(u[i], u[j]) / (len(u) - 1) for u in units if len(u) >= 2
              for i, j in combinations(range(len(u)), 2)) / n
    d_e = sum(2 * dist(pooled[i], pooled[j]) for i, j in combinations(range(n), 2)) / (n * (n - 1))
    return 1 - d_o / d_e


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_matches_brute_force_on_random_rubric_data(level):
    rng = random.Random(7)
    for _ in range(20):
        units = [[rng.choice([0, 1, 2, 2]) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(3, 15))]
        ours = krippendorff_alpha(units, level)
        if ours is None:
            continue
        assert ours == pytest.approx(_alpha_pairwise(units, level), abs=1e-9)


def test_fleiss_and_cohen_published_examples():
    assert fleiss_kappa(FLEISS) == pytest.approx(0.210, abs=5e-4)
    # Cohen (Wikipedia "Cohen's kappa", example 1): 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # two raters, Fleiss on 2 raters per item equals Scott's pi: p_o 0.7, pooled yes 0.55 -> pi = 0.3939...
    assert fleiss_from_ratings(list(zip(a, b))) == pytest.approx((0.7 - (0.55 ** 2 + 0.45 ** 2)) /
                                                                 (1 - (0.55 ** 2 + 0.45 ** 2)))


def test_undefined_agreement_is_none_not_a_number():
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None
    assert cohen_kappa([], []) is None
    assert fleiss_kappa([[3, 0], [3, 0]]) is None
    assert krippendorff_alpha([[2, 2], [2, 2, 2]]) is None
    assert krippendorff_alpha([[1], [2]]) is None  # nothing pairable
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 2]])


def test_stats_from_the_store(sqlite_url):
    store = Store(sqlite_url)
    cfg = ReviewConfig()
    ids = sample.add_items(store, 6)
    users = sample.add_users(store, "correct horse battery", reviewers=2, panelists=2, admins=0)
    rev1, rev2, pan1, pan2 = users["rev1"], users["rev2"], users["pan1"], users["pan2"]
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg, "review"))
    a = [1, 1, 0, 1, 0, 1]  # rev1's correctness; rev2 agrees on 4 of 6
    b = [1, 1, 0, 0, 1, 1]
    for i, item in enumerate(ids):
        for user, judged in ((rev1, a[i]), (rev2, b[i])):
            mc = {**ALL2, "medical_correctness": 2 * judged}
            submit_review(store, item, user, vote(store, item, 1, judged, 1, "C", bool(judged), scores=mc), cfg)
    scores = {"pan1": [2, 1, 0], "pan2": [2, 1, 1]}  # medical_correctness on three escalated items
    for k, item in enumerate(ids[:3]):
        sample.fail_five_strikes(store, item)
        with store.transaction() as conn:
            assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, cfg, "panel"))
        for u in (pan1, pan2):
            sc = {d: 2 for d in ("reasoning_structure", "information_sufficiency", "terminology_clarity",
                                 "clinical_utility")} | {"medical_correctness": scores[u.name][k]}
            action = "accept" if sc["medical_correctness"] == 2 else "discard"  # an accept must satisfy the policy
            submit_panel(store, item, u, panel_vote(store, item, action, sc), cfg)
    with store.engine.connect() as conn:
        s = collect(conn)
    [pair] = s["cohen_pairs"]
    assert pair["pair"] == ["rev1", "rev2"] and pair["items"] == 6
    assert pair["correctness"] == pytest.approx(cohen_kappa(a, b)) == pytest.approx(0.25)
    assert pair["relevance"] is None  # no variation at all
    ci = pair["ci"]["correctness"]  # Cohen's kappa with its bootstrap interval over the pair's items
    assert ci["estimate"] == pytest.approx(0.25) and ci["low"] <= 0.25 <= ci["high"] and ci["confidence"] == 0.95
    assert pair["ci"]["relevance"]["estimate"] is None and pair["ci"]["relevance"]["low"] is None
    assert pair["ci"]["pooled"]["estimate"] == pytest.approx(pair["pooled"])
    assert s["fleiss"]["raters_per_item"] == 2 and s["fleiss"]["correctness"] == pytest.approx(
        fleiss_from_ratings(list(zip(a, b))))
    alpha = s["krippendorff_rubric"]["medical_correctness"]
    # every rated item counts (initial reviewers' scores too); the three panel items have four raters each
    expected = [[2 * a[i], 2 * b[i]] + ([scores["pan1"][i], scores["pan2"][i]] if i < 3 else []) for i in range(6)]
    assert alpha["units"] == 6 and alpha["alpha"] == pytest.approx(_alpha_pairwise(expected, "ordinal"))
    assert s["progress"]["reviewers"]["rev1"]["review"] == {"assigned": 6, "done": 6}
    corr = s["agreement"]["review"]["correctness"]  # raw agreement beside kappa, each with its interval
    assert corr["percent_agreement"]["estimate"] == pytest.approx(4 / 6)
    assert corr["fleiss_kappa"]["low"] <= corr["fleiss_kappa"]["estimate"] <= corr["fleiss_kappa"]["high"]
    assert s["agreement"]["rubric"]["medical_correctness"]["n_items_used"] == 6
    assert "percent agreement beside kappa" in render_text(s)
    assert "Cohen's kappa per reviewer pair" in render_text(s)
    assert f"pooled {pair['pooled']:.3f} [" in render_text(s)

"""Percent agreement, Gwet's AC1, Fleiss' kappa with unequal rater counts, bootstrap intervals over items and the
agreement summary: hand-computed examples, the kappa paradox, independent references (a loop-by-loop Gwet reference, krippendorff) where
they install, and the vectorised bootstrap path checked against the plain functions."""
from __future__ import annotations

import json
import math
import random
from functools import partial

import numpy as np
import pytest

from curation.review.agreement import (
    AgreementValue,
    cohen_kappa,
    fleiss_from_ratings,
    fleiss_unequal,
    gwet_ac1,
    gwet_ac1_multi,
    krippendorff_alpha,
    percent_agreement,
    percent_agreement_multi,
)
from curation.review.agreement_ci import (
    AgreementCI,
    agreement_summaries,
    agreement_summary,
    bootstrap_ci,
    bootstrap_cis,
    cohen_kappa_ci,
    cohen_kappa_cis,
    count_matrix,
    krippendorff_alpha_batch,
    nominal_batch,
    paired,
    resample_weights,
)

# Unequal rater counts, 2 observed labels. Per item, the fraction of agreeing ordered rater pairs
# sum_k r_ik (r_ik - 1) / (r_i (r_i - 1)):
#   [a,a,a] 6/6 = 1;  [a,a,b] 2/6 = 1/3;  [a,b] 0/2 = 0;  [b,b,b,b] 12/12 = 1;  [a] skipped (1 rating)
#   p_a = (1 + 1/3 + 0 + 1) / 4 = 7/12 = 525/900
# pi_k = mean over the 5 rated items of r_ik / r_i:
#   pi_a = (1 + 2/3 + 1/2 + 0 + 1) / 5 = 19/30,  pi_b = (0 + 1/3 + 1/2 + 1 + 0) / 5 = 11/30
# AC1, K = 2: p_e = (19/30 * 11/30 + 11/30 * 19/30) / 1 = 418/900; AC1 = (525 - 418) / (900 - 418) = 107/482
# AC1, K = 3 (declared a, b, c): p_e = 418/900 / 2 = 209/900;       AC1 = (525 - 209) / (900 - 209) = 316/691
# Fleiss generalised: p_e = (19/30)^2 + (11/30)^2 = 482/900;       kappa = (525 - 482) / (900 - 482) = 43/418
HAND = [["a", "a", "a"], ["a", "a", "b"], ["a", "b"], ["b", "b", "b", "b"], ["a"]]

# Fleiss (1971) as worked on Wikipedia: 10 subjects x 14 raters, 5 categories, kappa = 0.210.
FLEISS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
          [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def _fleiss_labels():
    return [[j for j, c in enumerate(row) for _ in range(c)] for row in FLEISS]


def _paradox():
    """100 items, 2 raters: both approve 95, A approves / B rejects 2, A rejects / B approves 3."""
    a = ["approve"] * 97 + ["reject"] * 3
    b = ["approve"] * 95 + ["reject"] * 2 + ["approve"] * 3
    return a, b


def _simulated(n, seed, raters=(3, 3), labels=(0, 1, 2), noise=0.3):
    """Items with a true label; each rater reports it, or a random label with probability `noise`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        truth = rng.choice(labels)
        out.append([truth if rng.random() > noise else rng.choice(labels)
                    for _ in range(rng.randint(*raters))])
    return out


# --- percent agreement -------------------------------------------------------------------------------------------

def test_percent_agreement_two_raters():
    assert percent_agreement(["a", "b", "a", "a"], ["a", "a", "a", "a"]) == 0.75
    assert percent_agreement([], []) is None
    with pytest.raises(ValueError):
        percent_agreement(["a"], ["a", "b"])


def test_percent_agreement_multi_counts_skipped_items():
    res = percent_agreement_multi(HAND + [[]])
    assert isinstance(res, AgreementValue)
    assert res.value == pytest.approx(7 / 12, abs=1e-15)
    assert (res.items_used, res.items_dropped) == (4, 2)
    assert "fewer than 2" in res.dropped_reason
    full = percent_agreement_multi([["x", "x"], ["x", "y"]])
    assert (full.value, full.items_dropped, full.dropped_reason) == (0.5, 0, None)
    assert percent_agreement_multi([["x"], []]).value is None
    # two raters: the multi-rater form is the plain fraction of agreeing items
    a, b = _paradox()
    assert percent_agreement_multi([[x, y] for x, y in zip(a, b)]).value == pytest.approx(percent_agreement(a, b))


# --- Gwet's AC1 --------------------------------------------------------------------------------------------------

def test_ac1_hand_computed_unequal_raters():
    assert gwet_ac1_multi(HAND) == pytest.approx(107 / 482, abs=1e-12)
    assert gwet_ac1_multi(HAND, categories=["a", "b", "c"]) == pytest.approx(316 / 691, abs=1e-12)
    assert gwet_ac1_multi(HAND, categories=["a"]) == pytest.approx(107 / 482, abs=1e-12)  # union, not override


def test_ac1_undefined_and_degenerate():
    everyone_approves = [["approve"] * 3 for _ in range(10)]
    assert gwet_ac1_multi(everyone_approves) is None  # K = 1 without a declared scale
    assert gwet_ac1_multi(everyone_approves, categories=("approve", "reject")) == pytest.approx(1.0, abs=1e-12)
    assert gwet_ac1_multi([["a"], ["b"]]) is None  # nothing pairable
    assert gwet_ac1_multi([]) is None
    with pytest.raises(ValueError):
        gwet_ac1(["a"], [])


def test_kappa_paradox_ac1_stays_high():
    a, b = _paradox()
    assert percent_agreement(a, b) == pytest.approx(0.95)
    # kappa: p_e = 0.97 * 0.98 + 0.03 * 0.02 = 0.9512, kappa = (0.95 - 0.9512) / 0.0488 = -0.02459
    assert cohen_kappa(a, b) == pytest.approx(-0.0012 / 0.0488, abs=1e-12)
    assert abs(cohen_kappa(a, b)) < 0.05
    # AC1: pi = (0.975, 0.025), p_e = 2 * 0.975 * 0.025 / (2 - 1) = 0.04875, AC1 = 0.90125 / 0.95125 = 0.9474
    assert gwet_ac1(a, b) == pytest.approx(0.90125 / 0.95125, abs=1e-12)
    assert gwet_ac1(a, b) > 0.9


def _gwet_reference(units, chance):
    """Gwet (2014) ch. 2, written out loop by loop as irrCAC's raw.CAC computes it: p_a over units with 2+ ratings,
    category shares averaged over units with 1+ rating; `chance` turns the shares into p_e (AC1 or Fleiss).
    (irrCAC itself pins pandas<2 and scipy==1.12, which conflict with trl, so the reference is spelled out here;
    the implementation was also checked against irrCAC 0.4.4 once, to 1e-12, when it was written.)"""
    categories = sorted({c for u in units for c in u})
    rated = [u for u in units if len(u) >= 1]
    multi = [u for u in units if len(u) >= 2]
    p_a = 0.0
    for u in multi:
        r = len(u)
        p_a += sum(u.count(k) * (u.count(k) - 1) for k in categories) / (r * (r - 1))
    p_a /= len(multi)
    shares = {k: sum(u.count(k) / len(u) for u in rated) / len(rated) for k in categories}
    p_e = chance(shares, len(categories))
    return (p_a - p_e) / (1 - p_e)


def _ac1_chance(shares, q):
    return sum(p * (1 - p) for p in shares.values()) / (q - 1)


def _fleiss_chance(shares, q):
    return sum(p * p for p in shares.values())


def test_ac1_and_fleiss_against_loop_reference():
    rng = random.Random(3)
    for trial in range(6):
        units = [[rng.choice("abcd"[:2 + trial % 3]) for _ in range(rng.choice([1, 2, 3, 4]))]
                 for _ in range(rng.randint(8, 40))]
        assert gwet_ac1_multi(units) == pytest.approx(_gwet_reference(units, _ac1_chance), abs=1e-12)
        assert fleiss_unequal(units).value == pytest.approx(_gwet_reference(units, _fleiss_chance), abs=1e-12)
    a, b = _paradox()
    assert gwet_ac1(a, b) == pytest.approx(_gwet_reference([[x, y] for x, y in zip(a, b)], _ac1_chance), abs=1e-12)


# --- Fleiss with unequal rater counts ------------------------------------------------------------------------------

def test_fleiss_unequal_equals_fleiss_with_equal_counts():
    res = fleiss_unequal(_fleiss_labels())
    assert res.value == pytest.approx(fleiss_from_ratings(_fleiss_labels()), abs=1e-12)
    assert res.value == pytest.approx(0.210, abs=5e-4)
    assert (res.items_used, res.items_dropped, res.dropped_reason) == (10, 0, None)


def test_fleiss_unequal_reports_dropped_items():
    res = fleiss_unequal(HAND + [[]])
    assert res.value == pytest.approx(43 / 418, abs=1e-12)
    assert (res.items_used, res.items_dropped) == (4, 2)
    assert "fewer than 2" in res.dropped_reason
    with pytest.raises(ValueError):  # the equal-count function is unchanged: it still refuses unequal counts
        fleiss_from_ratings(HAND)
    assert fleiss_unequal([["x", "x"], ["x", "x", "x"]]).value is None  # one category: p_e = 1
    assert fleiss_unequal([["x"]]).value is None


# --- bootstrap intervals -----------------------------------------------------------------------------------------

def test_bootstrap_contains_estimate_for_every_statistic():
    units = _simulated(200, seed=1)
    pairs = [(u[0], u[1]) for u in units]
    checks = [(paired(cohen_kappa), pairs), (paired(gwet_ac1), pairs), (paired(percent_agreement), pairs),
              (fleiss_from_ratings, units), (fleiss_unequal, units), (gwet_ac1_multi, units),
              (percent_agreement_multi, units)]
    checks += [(partial(krippendorff_alpha, level=lv), units) for lv in ("nominal", "ordinal", "interval")]
    for stat, data in checks:
        ci = bootstrap_ci(stat, data, resamples=200, seed=5)
        assert isinstance(ci, AgreementCI)
        assert ci.low is not None and ci.low <= ci.estimate <= ci.high, stat
        assert (ci.resamples, ci.n_units, ci.undefined_resamples, ci.confidence) == (200, 200, 0, 0.95)


def test_bootstrap_is_deterministic_with_a_seed():
    units = _simulated(80, seed=2, raters=(2, 4))
    stat = partial(krippendorff_alpha, level="ordinal")
    assert bootstrap_ci(stat, units, 200, seed=11) == bootstrap_ci(stat, units, 200, seed=11)
    assert bootstrap_ci(stat, units, 200, seed=11) != bootstrap_ci(stat, units, 200, seed=12)
    narrower = bootstrap_ci(stat, units, 200, confidence=0.5, seed=11)
    wider = bootstrap_ci(stat, units, 200, confidence=0.99, seed=11)
    assert wider.low < narrower.low < narrower.high < wider.high


def test_bootstrap_narrows_as_n_grows():
    def width(n):
        ci = bootstrap_ci(gwet_ac1_multi, _simulated(n, seed=3), resamples=200, seed=0)
        return ci.high - ci.low
    assert width(800) < 0.6 * width(50)


def test_bootstrap_none_safe_on_degenerate_data():
    approve = [["approve"] * 3 for _ in range(30)]  # everyone always approves
    pairs = [("approve", "approve")] * 30
    for stat, data in [(paired(cohen_kappa), pairs), (fleiss_from_ratings, approve), (fleiss_unequal, approve),
                       (partial(krippendorff_alpha, level="nominal"), approve), (gwet_ac1_multi, approve)]:
        ci = bootstrap_ci(stat, data, resamples=100)
        assert (ci.estimate, ci.low, ci.high, ci.undefined_resamples) == (None, None, None, 100), stat
    for stat, data in [(percent_agreement_multi, approve), (paired(percent_agreement), pairs)]:
        ci = bootstrap_ci(stat, data, resamples=100)
        assert (ci.estimate, ci.low, ci.high, ci.undefined_resamples) == (1.0, 1.0, 1.0, 0)
    ci = bootstrap_ci(partial(gwet_ac1_multi, categories=("approve", "reject")), approve, resamples=100)
    assert ci.estimate == pytest.approx(1.0) and ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.0)
    empty = bootstrap_ci(percent_agreement_multi, [], resamples=50)
    assert (empty.estimate, empty.low, empty.high, empty.n_units, empty.undefined_resamples) == (None, None, None,
                                                                                                    0, 50)


def test_bootstrap_interval_needs_half_the_resamples_defined():
    units = [1] + [0] * 9  # the statistic is defined only on draws holding the single 1 at least twice (~26 %)
    ci = bootstrap_ci(lambda u: 1.0 if u.count(1) >= 2 else None, units, resamples=400, seed=0)
    assert ci.estimate is None and ci.low is None and ci.high is None
    assert 0.5 * 400 < ci.undefined_resamples < 400
    ci = bootstrap_ci(lambda u: float(sum(u)) if u.count(1) >= 1 else None, units, resamples=400, seed=0)
    assert ci.undefined_resamples < 200 and ci.low is not None  # defined on ~65 % of the draws


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci(percent_agreement_multi, HAND, resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ci(percent_agreement_multi, HAND, confidence=1.0)


# --- vectorised path ---------------------------------------------------------------------------------------------

def _random_units(rng):
    labels = rng.choice([[0, 1], [0, 1, 2], [1, 2, 3, 4, 5], [0.5, 2.0, 7.25]])
    return [[rng.choice(labels) for _ in range(rng.choice([0, 1, 2, 2, 3, 4]))] for _ in range(rng.randint(1, 25))]


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_vectorised_alpha_equals_krippendorff_alpha(level):
    rng = random.Random(17)
    compared = 0
    for trial in range(60):
        units = _random_units(rng)
        counts, values = count_matrix(units)
        rows = np.random.default_rng(trial).integers(0, len(units), size=(4, len(units))).tolist()
        weights = np.vstack([np.ones(len(units)), resample_weights(len(units), 4, seed=trial)])
        batch = krippendorff_alpha_batch(counts, weights, values, level)
        for sample, got in zip([units] + [[units[i] for i in r] for r in rows], batch):
            want = krippendorff_alpha(sample, level)
            assert (want is None) == bool(np.isnan(got)), (sample, want, got)
            if want is not None:
                assert abs(got - want) <= 1e-12
                compared += 1
    assert compared > 100


def test_vectorised_nominal_statistics_equal_the_plain_functions():
    rng = random.Random(23)
    declared = (0, 1, "never used")
    for trial in range(60):
        units = _random_units(rng)
        counts, values = count_matrix(units, declared)
        mask = np.array([v in declared for v in values])
        rows = np.random.default_rng(trial).integers(0, len(units), size=(4, len(units))).tolist()
        weights = np.vstack([np.ones(len(units)), resample_weights(len(units), 4, seed=trial)])
        batch = nominal_batch(counts, weights, mask)
        for j, sample in enumerate([units] + [[units[i] for i in r] for r in rows]):
            for name, want in [("percent_agreement", percent_agreement_multi(sample).value),
                               ("fleiss_kappa", fleiss_unequal(sample).value),
                               ("gwet_ac1", gwet_ac1_multi(sample, declared))]:
                got = batch[name][j]
                assert (want is None) == bool(np.isnan(got)), (name, sample)
                if want is not None:
                    assert abs(got - want) <= 1e-12


def test_alpha_against_krippendorff_package():
    kd = pytest.importorskip("krippendorff")
    rng = random.Random(29)
    compared = 0
    for _ in range(10):
        units = [u for u in _random_units(rng) if u]
        width = max(len(u) for u in units)
        data = np.array([u + [np.nan] * (width - len(u)) for u in units], dtype=float).T  # raters x units
        for level in ("nominal", "ordinal", "interval"):
            ours = krippendorff_alpha(units, level)
            if ours is None or not any(len(u) >= 2 for u in units):
                continue
            theirs = kd.alpha(reliability_data=data, level_of_measurement=level)
            assert ours == pytest.approx(theirs, abs=1e-9)
            compared += 1
    assert compared >= 10


# --- summary -----------------------------------------------------------------------------------------------------

def test_summary_shape_and_json():
    ratings = _simulated(120, seed=4, raters=(1, 4)) + [[None, None]]
    s = agreement_summary(ratings, level="ordinal", resamples=300)
    json.dumps(s, allow_nan=False)
    assert s["n_items"] == 121
    dropped = sum(1 for r in ratings if len([x for x in r if x is not None]) < 2)
    assert s["items_dropped"] == s["fleiss_kappa"]["items_dropped"] == dropped > 0
    assert s["n_items_used"] == 121 - dropped
    assert s["raters_per_item"] == {"min": 0, "median": float(np.median([len([x for x in r if x is not None])
                                                                           for r in ratings])), "max": 4}
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1"):
        iv = s[key]
        assert {"estimate", "low", "high", "confidence"} <= set(iv)
        assert iv["low"] <= iv["estimate"] <= iv["high"] and iv["confidence"] == 0.95
    # the point estimate is the vectorised estimator at unit weights: the reference function to rounding
    assert s["krippendorff_alpha"]["estimate"] == pytest.approx(krippendorff_alpha(
        [[x for x in r if x is not None] for r in ratings], "ordinal"), abs=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_summary_intervals_equal_the_generic_bootstrap(level):  # estimates and intervals alike
    units = _simulated(60, seed=6, raters=(1, 4))
    cats = (0, 1, 2, 3)
    s = agreement_summary(units, categories=cats, level=level, resamples=200, seed=9)
    generic = bootstrap_cis({"percent_agreement": percent_agreement_multi, "fleiss_kappa": fleiss_unequal,
                             "krippendorff_alpha": partial(krippendorff_alpha, level=level),
                             "gwet_ac1": partial(gwet_ac1_multi, categories=cats)}, units, 200, seed=9)
    for key, ci in generic.items():
        for field in ("estimate", "low", "high"):
            assert s[key][field] == pytest.approx(getattr(ci, field), abs=1e-12), (key, field)


def test_summary_degenerate_and_empty():
    s = agreement_summary([["approve"] * 3] * 20 + [["approve"]], categories=("approve", "reject"), resamples=100)
    json.dumps(s, allow_nan=False)
    assert s["percent_agreement"] == {"estimate": 1.0, "low": 1.0, "high": 1.0, "confidence": 0.95}
    assert s["fleiss_kappa"]["estimate"] is None and s["fleiss_kappa"]["low"] is None
    assert s["fleiss_kappa"]["items_dropped"] == 1
    assert s["krippendorff_alpha"]["estimate"] is None and s["krippendorff_alpha"]["high"] is None
    assert s["gwet_ac1"]["estimate"] == pytest.approx(1.0) and s["gwet_ac1"]["low"] == pytest.approx(1.0)
    assert s["n_categories"] == 2
    for ratings in ([], [[], [None]]):
        e = agreement_summary(ratings, resamples=20)
        json.dumps(e, allow_nan=False)
        assert e["n_items_used"] == 0
        assert all(e[k]["estimate"] is None and e[k]["low"] is None
                   for k in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1"))


def test_summary_paradox_many_raters():
    """Approval ~90 %: Fleiss and alpha low, raw agreement and AC1 high, intervals to match."""
    rng = random.Random(8)
    ratings = [["reject" if rng.random() < 0.05 else "approve" for _ in range(3)] for _ in range(300)]
    s = agreement_summary(ratings, categories=("approve", "reject"), resamples=300)
    assert s["percent_agreement"]["estimate"] > 0.85
    assert s["gwet_ac1"]["low"] > 0.8
    assert abs(s["fleiss_kappa"]["estimate"]) < 0.15 and abs(s["krippendorff_alpha"]["estimate"]) < 0.15
    assert all(math.isfinite(s[k]["low"]) for k in ("fleiss_kappa", "krippendorff_alpha"))


def test_summaries_of_several_sets_equal_each_summary_alone():
    """Shared draws change nothing: each set's summary is the one `agreement_summary` gives it alone."""
    sets = {"a": _simulated(80, seed=1, raters=(1, 3)), "b": _simulated(80, seed=2, raters=(2, 4)),
            "c": _simulated(50, seed=3, raters=(1, 4)), "empty": []}
    together = agreement_summaries(sets, categories=(0, 1, 2, 3), level="ordinal", resamples=150, seed=4)
    for name, ratings in sets.items():
        assert together[name] == agreement_summary(ratings, categories=(0, 1, 2, 3), level="ordinal",
                                                   resamples=150, seed=4), name


def test_cohen_kappa_intervals_equal_the_generic_bootstrap():
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = int(rng.integers(5, 80))
        a = rng.integers(0, 3, n).tolist()
        b = [x if rng.random() < 0.7 else int(rng.integers(0, 3)) for x in a]
        ours = cohen_kappa_ci([[(x, y)] for x, y in zip(a, b)], resamples=200, seed=trial)
        generic = bootstrap_ci(paired(cohen_kappa), list(zip(a, b)), resamples=200, seed=trial)
        for field in ("estimate", "low", "high"):
            assert getattr(ours, field) == pytest.approx(getattr(generic, field), abs=1e-12), (trial, field)
        assert ours.undefined_resamples == generic.undefined_resamples


def test_cohen_kappa_pooled_units_keep_an_items_judgements_together_and_degenerate_cases():
    units = [[(1, 1), (0, 0), (1, 0)], [(0, 0), (1, 1), (1, 1)], [(1, 0), (0, 1), (0, 0)]] * 5
    pooled = cohen_kappa_cis({"pooled": units, "first": [[u[0]] for u in units]}, resamples=300, seed=1)
    flat = [p for u in units for p in u]
    assert pooled["pooled"].estimate == pytest.approx(cohen_kappa([p[0] for p in flat], [p[1] for p in flat]))
    assert pooled["first"] == cohen_kappa_ci([[u[0]] for u in units], resamples=300, seed=1)
    assert pooled["pooled"].n_units == 15  # items are resampled, not their judgements
    everyone_approves = cohen_kappa_ci([[(1, 1)]] * 10, resamples=50)
    assert everyone_approves.estimate is None and everyone_approves.low is None
    empty = cohen_kappa_ci([], resamples=50)
    assert empty.estimate is None and empty.n_units == 0

"""Eval statistics against independently computed values (scipy, hand computation) and the evaluate modules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from eval.scoring import METRICS_DIR, load_metric
from eval.stats import (
    binom_two_sided,
    bootstrap_mean,
    mcnemar_exact,
    paired_bootstrap_diff,
    quadratic_weighted_kappa,
    sign_test,
)


@pytest.fixture(autouse=True)
def _hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_bootstrap_ci_matches_scipy_percentile() -> None:
    x = [1.0] * 37 + [0.0] * 23
    ours = bootstrap_mean(x, resamples=20000, seed=1)
    ref = sps.bootstrap((np.array(x),), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        rng=np.random.default_rng(7)).confidence_interval
    assert ours.value == pytest.approx(37 / 60)
    assert ours.low == pytest.approx(ref.low, abs=0.02)
    assert ours.high == pytest.approx(ref.high, abs=0.02)
    assert ours.low < ours.value < ours.high and ours.n == 60


def test_bootstrap_ci_is_the_percentile_of_the_resampled_means() -> None:
    x = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    rng = np.random.default_rng(3)  # the same stream bootstrap_mean uses with seed=3
    means = x[rng.integers(0, x.size, size=(500, x.size))].mean(axis=1)
    est = bootstrap_mean(x, resamples=500, seed=3, confidence=0.9)
    assert (est.low, est.high) == (pytest.approx(np.quantile(means, 0.05)), pytest.approx(np.quantile(means, 0.95)))


def test_bootstrap_degenerate_and_empty() -> None:
    est = bootstrap_mean([1, 1, 1, 1])
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)
    assert math.isnan(bootstrap_mean([]).value)


@pytest.mark.parametrize("k,n", [(0, 0), (0, 5), (1, 9), (3, 10), (7, 10), (12, 30), (40, 100), (50, 100),
                                 (980, 2000), (2400, 5000), (9950, 20000), (10000, 20000), (9000, 20000)])
def test_binomial_p_matches_scipy(k: int, n: int) -> None:
    expected = 1.0 if n == 0 else sps.binomtest(k, n, 0.5).pvalue
    assert binom_two_sided(k, n) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_by_hand() -> None:
    a = [True] * 5 + [False] * 1 + [True] * 10 + [False] * 4   # b = 5 (only A right), c = 1 (only B right)
    b = [False] * 5 + [True] * 1 + [True] * 10 + [False] * 4
    res = mcnemar_exact(a, b)
    assert (res.b, res.c, res.both, res.neither) == (5, 1, 10, 4)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(6, 0.5) = 2 * (1 + 6) / 64
    assert res.p_value == pytest.approx(14 / 64)
    assert res.p_value == pytest.approx(sps.binomtest(1, 6, 0.5).pvalue)


def test_mcnemar_no_discordant_pairs_is_p_one() -> None:
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_sign_test_drops_ties() -> None:
    res = sign_test([3, 5, 2, 2, 8], [1, 5, 4, 2, 0])
    assert (res.b, res.c, res.both) == (2, 1, 2)
    assert res.p_value == pytest.approx(sps.binomtest(2, 3, 0.5).pvalue)


def test_paired_difference_and_its_ci() -> None:
    a = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1] * 4
    b = [1, 0, 1, 0, 0, 1, 0, 0, 1, 1] * 4
    est = paired_bootstrap_diff(a, b, resamples=5000, seed=0)
    assert est.value == pytest.approx(0.3)
    d = np.array(a, float) - np.array(b, float)
    ref = sps.bootstrap((d,), np.mean, n_resamples=5000, method="percentile", rng=np.random.default_rng(1))
    assert est.low == pytest.approx(ref.confidence_interval.low, abs=0.04)
    assert est.high == pytest.approx(ref.confidence_interval.high, abs=0.04)


def test_cluster_bootstrap_resamples_whole_items() -> None:
    # two seeds per item with identical outcomes: clustering must widen nothing it should not, and keep the mean
    a, b = [1, 0, 1, 1] * 2, [0, 0, 1, 0] * 2
    clusters = ["i1", "i2", "i3", "i4"] * 2
    est = paired_bootstrap_diff(a, b, clusters=clusters, resamples=3000, seed=0)
    per_item = paired_bootstrap_diff(a[:4], b[:4], resamples=3000, seed=0)
    assert est.value == pytest.approx(0.5)
    assert (est.low, est.high) == (pytest.approx(per_item.low), pytest.approx(per_item.high))


def test_quadratic_weighted_kappa_by_hand() -> None:
    # O: (0,0) (1,1) (2,1) (2,2); sum w*O = 1/4; sum w*E = 5/4 (hand-computed) -> 1 - 0.25/1.25
    assert quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.8)
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([0, 2], [2, 0]) == pytest.approx(-1.0)
    assert math.isnan(quadratic_weighted_kappa([1, 1], [1, 1]))
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([3], [1])


def test_mcq_accuracy_evaluate_module_loads_by_path_offline() -> None:
    metric = load_metric("mcq_accuracy")
    preds, refs = ["A", None, "C", "B", "", "D"], ["A", "B", "C", "C", "A", "D"]
    res = metric.compute(predictions=preds, references=refs, resamples=1000, seed=4)
    assert res["n"] == 6 and res["accuracy"] == pytest.approx(3 / 6)
    assert res["no_answer_rate"] == pytest.approx(2 / 6)           # None and "" are no answer, not a letter
    assert res["answered_accuracy"] == pytest.approx(3 / 4)
    ref = bootstrap_mean([1, 0, 1, 0, 0, 1], resamples=1000, seed=4)
    assert (res["accuracy_ci_low"], res["accuracy_ci_high"]) == (ref.low, ref.high)
    assert (METRICS_DIR / "mcq_accuracy" / "mcq_accuracy.py").is_file()


def test_rubric_kappa_evaluate_module() -> None:
    res = load_metric("rubric_kappa").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    assert res == {"n": 4, "qwk": pytest.approx(0.8), "exact_agreement": 0.75}

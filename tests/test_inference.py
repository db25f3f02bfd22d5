"""Tests for eval.inference: Wilson, the two-level arm comparison, validation, edge cases, calibration."""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # tests may run with --noconftest (the conftest normally does this)
    sys.path.insert(0, _ROOT)

from eval.inference import InferenceError, Outcome, compare_arms, per_run_mcnemar, wilson  # noqa: E402

# ---------------------------------------------------------------- helpers

def _outcomes(arm: str, table: Mapping[str, Sequence[Any]], families: list[str]) -> list[Outcome]:
    """table: run id -> correctness per item (item j belongs to families[j])."""
    return [Outcome(arm, run, f"item{j}", families[j], bool(c))
            for run, row in table.items() for j, c in enumerate(row)]


def _simulate(rng: np.random.Generator, *, families: int = 40, runs: int = 3, shift: float = 0.0,
              run_sd: float = 0.1) -> list[Outcome]:
    sizes = rng.integers(1, 7, families)
    fam = np.repeat(np.arange(families), sizes)
    eta = 0.2 + rng.normal(0, 0.9, families)[fam] + rng.normal(0, 1.0, fam.size)
    out: list[Outcome] = []
    for arm, s in (("A", shift), ("B", 0.0)):
        p = 1 / (1 + np.exp(-(eta + s + rng.normal(0, run_sd, (runs, 1)))))
        y = rng.random(p.shape) < p
        out += [Outcome(arm, f"r{r}", f"i{j}", f"f{fam[j]}", bool(y[r, j]))
                for r in range(runs) for j in range(fam.size)]
    return out


FAMS = [f"f{j // 3}" for j in range(60)]  # 20 families of 3 items


def _clear_case() -> list[Outcome]:
    rng = np.random.default_rng(7)
    a = {f"s{r}": list(rng.random(60) < 0.85) for r in range(4)}
    b = {f"s{r}": list(rng.random(60) < 0.35) for r in range(4)}
    return _outcomes("validated", a, FAMS) + _outcomes("unvalidated", b, FAMS)


# ---------------------------------------------------------------- Wilson

@pytest.mark.parametrize("k,n", [(81, 263), (0, 10), (10, 10), (5, 20), (1, 3)])
@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_wilson_matches_statsmodels(k: int, n: int, confidence: float) -> None:
    sm = pytest.importorskip("statsmodels.stats.proportion")
    low, high = sm.proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    iv = wilson(k, n, confidence)
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(low, abs=1e-9)
    assert iv.high == pytest.approx(high, abs=1e-9)
    assert iv.confidence == confidence


def test_wilson_literature_value_and_errors() -> None:
    iv = wilson(81, 263)  # textbook example: 0.2553 to 0.3662
    assert (round(iv.low, 4), round(iv.high, 4)) == (0.2553, 0.3662)
    with pytest.raises(ValueError):
        wilson(0, 0)
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_wilson_bounds_always_hold_the_estimate() -> None:
    """The demo once crashed plotting error bars: wilson(0, 3).low was 5.6e-17 > 0 = the estimate."""
    for n in range(1, 120):
        for k in range(n + 1):
            iv = wilson(k, n)
            assert 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0, (k, n, iv)
    assert wilson(0, 3).low == 0.0 and wilson(10, 10).high == 1.0


def test_accuracy_plot_takes_every_wilson_interval(tmp_path) -> None:
    from eval.report import plot_accuracy
    rows = [(f"m{k}", *(lambda iv: (iv.estimate, iv.low, iv.high))(wilson(k, 7))) for k in range(8)]
    path = plot_accuracy(rows, tmp_path / "acc.png", "t")
    assert path.is_file() and path.stat().st_size > 1000


# ---------------------------------------------------------------- headline comparison

def test_clearly_better_arm() -> None:
    res = compare_arms(_clear_case(), "validated", "unvalidated")
    assert res.difference.estimate > 0.3
    assert 0 < res.difference.low <= res.difference.estimate <= res.difference.high
    assert res.p_value < 1e-3
    assert res.a.n_items == 60 and res.a.n_families == 20 and len(res.a.run_accuracy) == 4
    assert res.a.mean == pytest.approx(np.mean(list(res.a.run_accuracy.values())))
    assert res.a.sd == pytest.approx(np.std(list(res.a.run_accuracy.values()), ddof=1))
    assert "validated is better than unvalidated" in res.interpretation
    assert "95%" in res.method and "Welch-Satterthwaite" in res.method
    d = res.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["difference"]["low"] == res.difference.low and d["p_value"] == res.p_value
    # reversing the arms flips the sign and keeps the p-value
    rev = compare_arms(_clear_case(), "unvalidated", "validated")
    assert rev.difference.estimate == pytest.approx(-res.difference.estimate)
    assert rev.difference.low == pytest.approx(-res.difference.high)
    assert rev.p_value == pytest.approx(res.p_value)


def test_identical_arms() -> None:
    rng = np.random.default_rng(3)
    table = {f"s{r}": list(rng.random(60) < 0.6) for r in range(3)}
    res = compare_arms(_outcomes("a", table, FAMS) + _outcomes("b", table, FAMS), "a", "b")
    assert res.difference.estimate == 0.0
    assert res.p_value == pytest.approx(1.0)
    assert res.difference.low < 0 < res.difference.high  # run-to-run spread still counts
    assert "consistent with no difference" in res.interpretation


def test_p_value_agrees_with_interval() -> None:
    rng = np.random.default_rng(11)
    for k in range(30):
        res = compare_arms(_simulate(rng, shift=0.25 * (k % 3)), "A", "B", resamples=0)
        excludes = res.difference.low > 0 or res.difference.high < 0
        assert excludes == (res.p_value < 0.05)
        assert res.bootstrap is None


def test_variance_matches_textbook_pieces() -> None:
    """Run part = s_a^2/R_a; family part = cluster variance of paired diffs minus run noise, >= 0."""
    res = compare_arms(_simulate(np.random.default_rng(5), runs=4), "A", "B", resamples=0)
    v = res.variance
    sd_a, sd_b = res.a.sd, res.b.sd
    assert sd_a is not None and sd_b is not None
    assert v["runs_a"] == pytest.approx(sd_a ** 2 / 4) and v["runs_b"] == pytest.approx(sd_b ** 2 / 4)
    assert 0.0 <= v["families"] <= v["families_raw"]
    assert v["total"] == pytest.approx(v["runs_a"] + v["runs_b"] + v["families"])
    se = math.sqrt(v["total"])
    q = stats.t.ppf(0.975, res.df)
    assert res.difference.high - res.difference.estimate == pytest.approx(q * se)


def test_family_component_by_hand() -> None:
    """Family piece recomputed with plain loops: paired family sums, centred, minus across-run noise."""
    fams = ["f0", "f0", "f1", "f2", "f2", "f2", "f3"]
    a = {"r0": [1, 1, 0, 1, 0, 1, 1], "r1": [1, 0, 0, 1, 1, 1, 1], "r2": [1, 1, 1, 1, 0, 1, 0]}
    b = {"r0": [0, 0, 1, 0, 0, 1, 1], "r1": [1, 0, 1, 0, 0, 0, 1]}
    res = compare_arms(_outcomes("a", a, fams) + _outcomes("b", b, fams), "a", "b", resamples=0)
    groups = {f: [j for j, g in enumerate(fams) if g == f] for f in sorted(set(fams))}
    n, nf = len(fams), len(groups)

    def centred(table: dict[str, list[int]]) -> list[list[float]]:  # per run, per family
        return [[sum(row[j] for j in idx) - len(idx) * sum(row) / n for idx in groups.values()]
                for row in table.values()]

    ca, cb = centred(a), centred(b)
    raw = noise = 0.0
    for k in range(nf):
        za, zb = [r[k] for r in ca], [r[k] for r in cb]
        raw += float(np.mean(za) - np.mean(zb)) ** 2
        noise += float(np.var(za, ddof=1)) / len(za) + float(np.var(zb, ddof=1)) / len(zb)
    scale = nf / (nf - 1) / n ** 2
    assert res.variance["families_raw"] == pytest.approx(scale * raw)
    assert res.variance["families"] == pytest.approx(max(0.0, scale * (raw - noise)))


def test_secondary_bootstrap_is_seeded() -> None:
    data = _clear_case()
    one = compare_arms(data, "validated", "unvalidated", resamples=300, seed=1)
    two = compare_arms(data, "validated", "unvalidated", resamples=300, seed=1)
    assert one.bootstrap is not None and one.bootstrap == two.bootstrap
    assert one.bootstrap.low < one.bootstrap.estimate < one.bootstrap.high
    assert one.difference == two.difference  # the headline does not depend on the seed


# ---------------------------------------------------------------- validation

def test_unknown_arm_and_same_arm() -> None:
    data = _clear_case()
    with pytest.raises(InferenceError, match="unknown arm 'nope'"):
        compare_arms(data, "validated", "nope")
    with pytest.raises(InferenceError, match="different arms"):
        compare_arms(data, "validated", "validated")
    with pytest.raises(InferenceError, match="no runs"):
        compare_arms([], "validated", "unvalidated")


def test_mismatched_item_sets() -> None:
    data = _clear_case()
    dropped = [o for o in data if not (o.arm == "unvalidated" and o.run == "s2" and o.item_id == "item5")]
    with pytest.raises(InferenceError, match="different item sets.*'s2'.*item5"):
        compare_arms(dropped, "validated", "unvalidated")


def test_conflicting_family_ids() -> None:
    data = _clear_case()
    bad = data[:-1] + [Outcome(data[-1].arm, data[-1].run, data[-1].item_id, "elsewhere", True)]
    with pytest.raises(InferenceError, match="conflicting family_id"):
        compare_arms(bad, "validated", "unvalidated")


def test_duplicated_outcome() -> None:
    data = _clear_case()
    with pytest.raises(InferenceError, match="duplicated outcome.*'validated'.*'s0'.*'item0'"):
        compare_arms(data + [data[0]], "validated", "unvalidated")
    assert issubclass(InferenceError, ValueError)


# ---------------------------------------------------------------- edge cases

def test_single_run_per_arm() -> None:
    data = [o for o in _clear_case() if o.run == "s0"]
    res = compare_arms(data, "validated", "unvalidated")
    assert res.a.sd is None and res.b.sd is None
    assert "Single run for 'validated' and 'unvalidated'" in res.method
    assert "test-family sampling only" in res.method
    assert res.difference.low < res.difference.estimate < res.difference.high
    assert res.df == pytest.approx(19.0)  # families - 1
    assert "retraining variance is NOT covered" in res.interpretation
    json.dumps(res.as_dict(), allow_nan=False)


def test_single_run_in_one_arm_only() -> None:
    data = [o for o in _clear_case() if o.arm == "validated" or o.run == "s0"]
    res = compare_arms(data, "validated", "unvalidated")
    assert res.a.sd is not None and res.b.sd is None
    assert "Single run for 'unvalidated':" in res.method and "runs_b" not in res.variance


def test_single_family() -> None:
    fams = ["only"] * 8
    a = {"r0": [True] * 6 + [False] * 2, "r1": [True] * 5 + [False] * 3}
    b = {"r0": [True] * 3 + [False] * 5, "r1": [True] * 4 + [False] * 4}
    res = compare_arms(_outcomes("a", a, fams) + _outcomes("b", b, fams), "a", "b")
    assert res.a.n_families == 1 and "one test family" in res.method
    assert "new test families are NOT covered" in res.interpretation
    assert "families" not in res.variance
    assert res.difference.estimate == pytest.approx(0.25)
    assert math.isfinite(res.p_value)
    single = compare_arms([o for o in _outcomes("a", a, fams) + _outcomes("b", b, fams) if o.run == "r0"],
                          "a", "b")
    assert single.difference.low == single.difference.high == pytest.approx(0.375)
    assert "Degenerate" in single.method and math.isnan(single.p_value)
    assert single.as_dict()["p_value"] is None
    json.dumps(single.as_dict(), allow_nan=False)


def test_all_correct() -> None:
    table = {f"s{r}": [True] * 60 for r in range(3)}
    res = compare_arms(_outcomes("a", table, FAMS) + _outcomes("b", table, FAMS), "a", "b")
    assert res.a.mean == res.b.mean == 1.0 and res.a.sd == 0.0
    assert (res.difference.low, res.difference.estimate, res.difference.high) == (0.0, 0.0, 0.0)
    assert res.p_value == 1.0 and "Degenerate" in res.method


# ---------------------------------------------------------------- secondary McNemar table

def test_per_run_mcnemar() -> None:
    fams = ["f0", "f0", "f1", "f2", "f2"]
    a = {"r0": [True, True, True, False, True], "r1": [True, False, False, False, False]}
    b = {"x": [False, True, False, False, True]}
    rows = per_run_mcnemar(_outcomes("a", a, fams) + _outcomes("b", b, fams), "a", "b")
    assert [(r.run_a, r.run_b, r.a_only, r.b_only) for r in rows] == [("r0", "x", 2, 0), ("r1", "x", 1, 2)]
    assert rows[0].p_value == pytest.approx(stats.binomtest(2, 2, 0.5).pvalue)
    assert rows[1].p_value == pytest.approx(1.0)


# ---------------------------------------------------------------- calibration (small, seeded)

def test_null_simulation_is_calibrated() -> None:
    rng = np.random.default_rng(2024)
    results = [compare_arms(_simulate(rng), "A", "B", resamples=0) for _ in range(100)]
    rejections = sum(r.p_value < 0.05 for r in results)
    assert rejections / len(results) <= 0.12
    coverage = np.mean([r.difference.low <= 0.0 <= r.difference.high for r in results])
    assert coverage >= 0.88
    # the estimated variance of D tracks its actual spread across studies (no gross over/under-count)
    est = np.array([r.difference.estimate for r in results])
    mean_var = np.mean([r.variance["total"] for r in results])
    assert 0.6 < mean_var / est.var(ddof=1) < 1.6


def test_numeric_scores_and_their_wording() -> None:
    """A bounded score (e.g. a rubric total) goes through the same two levels; the wording follows its unit."""
    scores = {("A", "r0"): [8, 7, 9, 6, 8, 7, 9, 8], ("A", "r1"): [7, 7, 8, 6, 9, 7, 8, 8],
              ("B", "r0"): [5, 6, 4, 6, 5, 5, 6, 4], ("B", "r1"): [6, 5, 5, 6, 4, 5, 6, 5]}
    outcomes = [Outcome(arm, run, f"item{j}", f"f{j // 2}", float(v))
                for (arm, run), row in scores.items() for j, v in enumerate(row)]
    res = compare_arms(outcomes, "A", "B", resamples=0, measure="rubric total", scale=1.0, unit="rubric points")
    assert res.a.run_accuracy == {"r0": pytest.approx(62 / 8), "r1": pytest.approx(60 / 8)}
    assert res.difference.estimate == pytest.approx((62 + 60) / 16 - (41 + 42) / 16)
    assert res.difference.low > 0 and res.p_value < 0.05
    assert "rubric total" in res.interpretation
    assert f"{res.difference.estimate:+.1f} rubric points" in res.interpretation

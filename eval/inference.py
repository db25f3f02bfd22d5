"""Inference for the two-arm comparison ("validated" vs "unvalidated"): the ONE place it lives.

Design: each arm is fine-tuned R times (training seed and data-subsample seed both vary) and every run is
scored on the SAME test set, whose items come in families (an item and its paraphrases share a
``family_id``). The estimate is D = mean_r acc(A, r) - mean_r acc(B, r). Two sources of uncertainty:
which families were sampled, and which training runs happened. By the law of total variance

    Var(D) = E[Var(D | test set)] + Var(E[D | test set])

* run level: s_A^2/R_A + s_B^2/R_B, the sample variance of per-run accuracies on the fixed test set
  (it already contains the item-by-run Bernoulli noise and any run-by-family interaction);
* family level: the cluster (family) variance of the run-averaged paired item differences MINUS the
  part of it that is run noise (each family's across-run spread of its centred sum), so that the
  item-by-run noise is counted once, not twice.

CI = D +/- t(df) * sqrt(V) with Welch-Satterthwaite df (R - 1 per run piece; for the family piece a
df estimated from the spread of the per-family terms, at most F - 1, since unequal family sizes make
it less stable than F clusters suggest); the p-value comes from the same t statistic,
so p < 1 - confidence exactly when the CI excludes 0. ``benchmarks/inference_calibration.py`` checks
type-I error and coverage on simulated null and effect worlds.

Secondary (never the headline): a two-level percentile bootstrap (families, then runs within arm),
whose calibration depends on the world (it counts item-by-run noise at both levels, so it is conservative
when run noise is small, 0.95-0.996 coverage in the benchmark, while resampling R runs shrinks the run
variance by (R-1)/R), and ``per_run_mcnemar``. Pooling (item, seed) pairs into a single
McNemar test ignores both levels and has false-positive rates of 0.14-0.58: do not do it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special, stats


class InferenceError(ValueError):
    """The outcomes cannot support the requested comparison (the message names the problem)."""


@dataclass(frozen=True)
class Outcome:
    arm: str
    run: str  # run id, unique within an arm
    item_id: str
    family_id: str
    correct: bool | float  # 1/0 for accuracy; any bounded per-item score (e.g. a rubric total) works too


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float

    def as_dict(self) -> dict[str, float | None]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ArmRuns:
    arm: str
    run_accuracy: dict[str, float]  # run id -> accuracy on the test set
    mean: float
    sd: float | None  # sample sd over runs; None for a single run
    n_items: int
    n_families: int

    def as_dict(self) -> dict:
        return {"arm": self.arm, "run_accuracy": dict(self.run_accuracy), "mean": self.mean,
                "sd": self.sd, "n_runs": len(self.run_accuracy), "n_items": self.n_items,
                "n_families": self.n_families}


@dataclass(frozen=True)
class ArmComparison:
    arm_a: str
    arm_b: str
    a: ArmRuns
    b: ArmRuns
    difference: Interval  # mean accuracy of a minus b, headline CI
    p_value: float  # headline test of "no difference" (NaN when not estimable)
    method: str
    interpretation: str
    df: float | None = None  # Welch-Satterthwaite degrees of freedom of the t reference
    variance: dict[str, float] = field(default_factory=dict)  # components of Var(D)
    bootstrap: Interval | None = None  # secondary two-level percentile bootstrap, not the headline

    def as_dict(self) -> dict:
        return {"arm_a": self.arm_a, "arm_b": self.arm_b, "a": self.a.as_dict(), "b": self.b.as_dict(),
                "difference": self.difference.as_dict(), "p_value": _clean(self.p_value),
                "method": self.method, "interpretation": self.interpretation, "df": _clean(self.df),
                "variance": {k: _clean(v) for k, v in self.variance.items()},
                "bootstrap_secondary": None if self.bootstrap is None else self.bootstrap.as_dict()}


@dataclass(frozen=True)
class RunPairMcNemar:
    """Exact McNemar for one (run of A, run of B) pair: descriptive only, ignores both levels."""

    run_a: str
    run_b: str
    a_only: int  # items only A's run got right
    b_only: int
    p_value: float


def _clean(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf -> None."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise InferenceError(f"confidence must be in (0, 1), got {confidence}")
    return float(special.ndtri(0.5 + confidence / 2.0))


def wilson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for one proportion k/n."""
    if n <= 0:
        raise ValueError(f"wilson needs n > 0, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    z = _z(confidence)
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the bounds hold p exactly (0 at k = 0, 1 at k = n), which rounding can break by ~1e-17
    return Interval(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)), confidence)


# ---------------------------------------------------------------- data: outcomes -> run x item matrices

@dataclass(frozen=True)
class _Arm:
    name: str
    runs: tuple[str, ...]
    y: np.ndarray  # (R, N) 0/1, columns in _Data.items order


@dataclass(frozen=True)
class _Data:
    a: _Arm
    b: _Arm
    items: tuple[str, ...]  # sorted by (family, item): families are contiguous
    sizes: np.ndarray  # (F,) items per family
    starts: np.ndarray  # (F,) first column of each family


Cells = dict[str, dict[str, dict[str, float]]]  # arm -> run -> item -> correct (1/0) or score


def _collect(outcomes: Sequence[Outcome]) -> tuple[Cells, dict[str, str]]:
    cells: Cells = {}
    family_of: dict[str, str] = {}
    arm: str | None = None
    run_id: str | None = None
    run: dict[str, float] = {}
    for o in outcomes:
        fam = family_of.setdefault(o.item_id, o.family_id)
        if fam != o.family_id:
            raise InferenceError(f"item {o.item_id!r} has conflicting family_id values {fam!r} and "
                                 f"{o.family_id!r}")
        if o.arm != arm or o.run != run_id:  # outcomes usually arrive grouped by run
            arm, run_id = o.arm, o.run
            run = cells.setdefault(arm, {}).setdefault(run_id, {})
        if o.item_id in run:
            raise InferenceError(f"duplicated outcome for arm {o.arm!r}, run {o.run!r}, item {o.item_id!r}")
        run[o.item_id] = float(o.correct)
    return cells, family_of


def _check_items(cells: Cells, arms: tuple[str, str]) -> frozenset[str]:
    ref_arm, ref_run = arms[0], next(iter(cells[arms[0]]))
    ref = frozenset(cells[ref_arm][ref_run])
    for arm in arms:
        for run, got in cells[arm].items():
            if got.keys() != ref:
                missing = sorted(ref - got.keys())[:3]
                extra = sorted(got.keys() - ref)[:3]
                raise InferenceError(
                    f"runs were evaluated on different item sets: arm {arm!r} run {run!r} vs arm "
                    f"{ref_arm!r} run {ref_run!r} (missing e.g. {missing}, extra e.g. {extra})")
    return ref


def _arm(name: str, runs: dict[str, dict[str, float]], items: tuple[str, ...]) -> _Arm:
    ids = tuple(sorted(runs))
    y = np.array([[runs[r][i] for i in items] for r in ids], dtype=float)
    return _Arm(name, ids, y)


def _load(outcomes: Sequence[Outcome], arm_a: str, arm_b: str) -> _Data:
    if arm_a == arm_b:
        raise InferenceError(f"compare two different arms, got {arm_a!r} twice")
    cells, family_of = _collect(outcomes)
    for arm in (arm_a, arm_b):
        if not cells.get(arm):
            raise InferenceError(f"unknown arm {arm!r}: it has no runs in the outcomes "
                                 f"(arms present: {sorted(cells)})")
    items = tuple(sorted(_check_items(cells, (arm_a, arm_b)), key=lambda i: (family_of[i], i)))
    fams = [family_of[i] for i in items]
    starts = np.array([j for j in range(len(fams)) if j == 0 or fams[j] != fams[j - 1]], dtype=int)
    sizes = np.diff(np.append(starts, len(fams)))
    return _Data(_arm(arm_a, cells[arm_a], items), _arm(arm_b, cells[arm_b], items), items, sizes, starts)


# ---------------------------------------------------------------- variance decomposition

@dataclass(frozen=True)
class _Level:
    acc: np.ndarray  # (R,) per-run accuracy
    sums: np.ndarray  # (R, F) correct answers per family and run
    centred: np.ndarray  # (R, F) family sums minus size * run accuracy


def _level(arm: _Arm, data: _Data) -> _Level:
    acc = arm.y.mean(axis=1)
    sums = np.add.reduceat(arm.y, data.starts, axis=1)
    return _Level(acc, sums, sums - np.outer(acc, data.sizes))


def _components(data: _Data, la: _Level, lb: _Level) -> tuple[dict[str, float], dict[str, float]]:
    """Unbiased pieces of Var(D) and their degrees of freedom; a run piece needs >= 2 runs."""
    n, f = float(data.sizes.sum()), len(data.sizes)
    var: dict[str, float] = {}
    dfs: dict[str, float] = {}
    noise = np.zeros(f)  # per family: run-noise part of the squared centred paired difference
    for key, lv in (("runs_a", la), ("runs_b", lb)):
        r = lv.acc.size
        if r >= 2:
            var[key], dfs[key] = float(lv.acc.var(ddof=1) / r), float(r - 1)
            noise += lv.centred.var(axis=0, ddof=1) / r
    if f >= 2:
        z = la.centred.mean(axis=0) - lb.centred.mean(axis=0)
        scale = f / (f - 1) / (n * n)
        g = scale * (z * z - noise)  # family f's contribution to the family-level variance
        var["families_raw"] = float(scale * (z * z).sum())
        var["families"] = max(0.0, float(g.sum()))
        dfs["families"] = _family_df(g)
    return var, dfs


def _family_df(g: np.ndarray) -> float:
    """Satterthwaite df of sum(g) from the spread of the per-family terms (= F for equal normal
    families, fewer for unequal sizes or heavy tails), kept within [1, F - 1]."""
    f = g.size
    spread = f / (f - 1) * float(((g - g.mean()) ** 2).sum())
    total = float(g.sum())
    if total <= 0.0 or spread <= 0.0:
        return float(f - 1)
    return float(min(f - 1, max(1.0, 2.0 * total * total / spread)))


def _satterthwaite(var: dict[str, float], dfs: dict[str, float]) -> float | None:
    parts = [(var[k], d) for k, d in dfs.items() if var.get(k, 0.0) > 0.0]
    total = sum(v for v, _ in parts)
    if total <= 0.0:
        return None
    return total * total / sum(v * v / d for v, d in parts)


def _t_interval(est: float, var: float, df: float | None, confidence: float) -> tuple[Interval, float]:
    if df is None or var <= 0.0:
        return Interval(est, est, est, confidence), (1.0 if est == 0.0 else float("nan"))
    se = math.sqrt(var)
    q = float(special.stdtrit(df, 0.5 + confidence / 2.0))
    p = float(2.0 * special.stdtr(df, -abs(est) / se))
    return Interval(est, est - q * se, est + q * se, confidence), p


def _draw_counts(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """(rows, k) multiplicities of k draws with replacement from k units, one row per resample."""
    flat = rng.integers(0, k, size=(rows, k)) + (k * np.arange(rows))[:, None]
    return np.bincount(flat.ravel(), minlength=rows * k).reshape(rows, k).astype(float)


def _bootstrap(data: _Data, la: _Level, lb: _Level, confidence: float, resamples: int,
               seed: int) -> Interval:
    """Two-level percentile bootstrap: families with replacement, then runs within each arm."""
    rng = np.random.default_rng(seed)
    f = len(data.sizes)
    w = _draw_counts(rng, resamples, f)  # (B, F) family multiplicities
    m = np.zeros((resamples, f))
    for sign, lv in ((1.0, la), (-1.0, lb)):
        r = lv.acc.size
        m += sign * (_draw_counts(rng, resamples, r) @ lv.sums) / r
    diffs = (w * m).sum(axis=1) / (w @ data.sizes)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha])
    return Interval(float(la.acc.mean() - lb.acc.mean()), float(low), float(high), confidence)


# ---------------------------------------------------------------- reporting

def _arm_runs(arm: _Arm, n_families: int) -> ArmRuns:
    acc = arm.y.mean(axis=1)
    sd = float(acc.std(ddof=1)) if acc.size >= 2 else None
    return ArmRuns(arm.name, {r: float(v) for r, v in zip(arm.runs, acc)}, float(acc.mean()), sd,
                   int(arm.y.shape[1]), n_families)


def _method(a: ArmRuns, b: ArmRuns, df: float | None, confidence: float) -> str:
    pct = f"{confidence:.0%}"
    if df is None:
        text = (f"Degenerate: the estimated variance of the difference is zero, so the {pct} CI collapses "
                "to the estimate and the p-value is 1 for a zero difference, otherwise not estimable.")
    else:
        text = (f"{pct} CI and p-value from one t statistic whose variance adds run-to-run variance (s^2/R "
                "per arm) and test-family cluster variance (item-by-run noise counted once), "
                f"Welch-Satterthwaite df = {df:.1f}.")
    single = [repr(arm.arm) for arm in (a, b) if arm.sd is None]
    if single:
        text += (f" Single run for {' and '.join(single)}: run-to-run training variance cannot be "
                 "estimated there, so the CI reflects test-family sampling only and is too narrow "
                 "for new training runs.")
    if a.n_families < 2:
        text += (" Only one test family: family-sampling variance cannot be estimated (degenerate), "
                 "so the CI reflects run-to-run variance only.")
    return text


def _repeat_clause(a: ArmRuns, b: ArmRuns) -> str:
    if a.sd is None or b.sd is None:
        return ("If the test set were redrawn (new test families) for these same trained models (a "
                "single run means retraining variance is NOT covered)")
    if a.n_families < 2:
        return ("If the study were repeated with new training runs on this same single test family "
                "(new test families are NOT covered)")
    return "If the study were repeated with new test families and new training runs"


def _interpretation(a: ArmRuns, b: ArmRuns, iv: Interval, p: float, measure: str = "accuracy",
                    scale: float = 100.0, unit: str = "points") -> str:
    pts = lambda x: f"{scale * x:+.1f}"  # noqa: E731
    cmp_a, cmp_b = a.arm, b.arm
    text = (f"{_repeat_clause(a, b)}, intervals built this way would contain the true difference "
            f"{iv.confidence:.0%} of the time. Here the difference in {measure} ({cmp_a} minus {cmp_b}) "
            f"is {pts(iv.estimate)} {unit}, interval {pts(iv.low)} to {pts(iv.high)} {unit}")
    if iv.low == iv.high:
        return text + "; the interval is degenerate, so it carries no information about uncertainty."
    if iv.low > 0 or iv.high < 0:
        better, worse = (cmp_a, cmp_b) if iv.low > 0 else (cmp_b, cmp_a)
        lo, hi = sorted((abs(iv.low), abs(iv.high)))
        return text + (f": {better} is better than {worse}, plausibly by {scale * lo:.1f} to "
                       f"{scale * hi:.1f} {unit} (p = {p:.3g}).")
    return text + (f": it includes 0, so the data are consistent with no difference (p = {p:.3g}); "
                   "differences anywhere in the interval cannot be ruled out.")


def compare_arms(outcomes: Sequence[Outcome], arm_a: str, arm_b: str, *, confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0, measure: str = "accuracy", scale: float = 100.0,
                 unit: str = "points") -> ArmComparison:
    """Headline comparison of arm_a vs arm_b: difference of mean run accuracies, calibrated CI and p.

    ``resamples``/``seed`` drive only the secondary two-level bootstrap (``resamples=0`` skips it);
    the headline interval and p-value are deterministic. ``measure``/``scale``/``unit`` only word the
    interpretation (accuracy in percentage points by default; e.g. a rubric total: scale 1, "rubric points").
    """
    _z(confidence)
    data = _load(outcomes, arm_a, arm_b)
    f = len(data.sizes)
    a, b = _arm_runs(data.a, f), _arm_runs(data.b, f)
    la, lb = _level(data.a, data), _level(data.b, data)
    comp, dfs = _components(data, la, lb)
    var = sum(comp.get(k, 0.0) for k in ("runs_a", "runs_b", "families"))
    df = _satterthwaite(comp, dfs)
    iv, p = _t_interval(a.mean - b.mean, var, df, confidence)
    boot = _bootstrap(data, la, lb, confidence, resamples, seed) if resamples > 0 else None
    comp["total"] = var
    return ArmComparison(arm_a, arm_b, a, b, iv, p, _method(a, b, df, confidence),
                         _interpretation(a, b, iv, p, measure, scale, unit), df, comp, boot)


def per_run_mcnemar(outcomes: Sequence[Outcome], arm_a: str, arm_b: str) -> list[RunPairMcNemar]:
    """Exact McNemar for every (run of A, run of B) pair: a secondary, descriptive table only.

    Each p-value treats items as independent and the two runs as fixed, i.e. it ignores family
    clustering and run-to-run variance; do not count or combine them into a verdict.
    """
    data = _load(outcomes, arm_a, arm_b)
    rows: list[RunPairMcNemar] = []
    for ra, ya in zip(data.a.runs, data.a.y):
        for rb, yb in zip(data.b.runs, data.b.y):
            a_only, b_only = int(((ya > 0) & (yb == 0)).sum()), int(((ya == 0) & (yb > 0)).sum())
            n = a_only + b_only
            p = float(stats.binomtest(a_only, n, 0.5).pvalue) if n else 1.0
            rows.append(RunPairMcNemar(ra, rb, a_only, b_only, p))
    return rows

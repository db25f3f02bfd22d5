"""Statistics for the eval harness: bootstrap CIs, the exact McNemar (sign) test, weighted kappa.

Everything is plain numpy/math so the numbers can be checked against scipy in the tests. A no-answer
counts as wrong in accuracy; callers report the no-answer rate next to it, never hidden inside it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its bootstrap (percentile) confidence interval."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True, slots=True)
class McNemar:
    """Exact McNemar test: b = only A right, c = only B right; p is the two-sided binomial p (0.5)."""

    b: int
    c: int
    both: int
    neither: int
    p_value: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap CI (items resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, confidence)
    low, high = _percentiles(_resampled_means(x, np.random.default_rng(seed), resamples), confidence)
    return Estimate(float(x.mean()), low, high, int(x.size), confidence)


_CHUNK = 4_000_000  # resampled indices held in memory at once (32 MB): a 36k-item test set stays cheap


def _resampled_means(x: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of x, drawn in chunks of rows to bound memory."""
    rows = max(1, _CHUNK // x.size)
    out = [x[rng.integers(0, x.size, size=(min(rows, resamples - done), x.size))].mean(axis=1)
           for done in range(0, resamples, rows)]
    return np.concatenate(out)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                          confidence: float = 0.95, clusters: Sequence[str] | None = None) -> Estimate:
    """mean(a) - mean(b) over paired items, CI by resampling items jointly. With ``clusters`` (e.g. the
    item id when pairs from several seeds share an item) whole clusters are resampled."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, confidence)
    d = x - y
    rng = np.random.default_rng(seed)
    if clusters is None:
        stats = _resampled_means(d, rng, resamples)
    else:
        stats = _cluster_means(d, list(clusters), rng, resamples)
    low, high = _percentiles(stats, confidence)
    return Estimate(float(d.mean()), low, high, int(d.size), confidence)


def _cluster_means(d: np.ndarray, clusters: list[str], rng: np.random.Generator, resamples: int) -> np.ndarray:
    names = sorted(set(clusters))
    pos = {n: i for i, n in enumerate(names)}
    sums, counts = np.zeros(len(names)), np.zeros(len(names))
    for value, name in zip(d, clusters):
        sums[pos[name]] += value
        counts[pos[name]] += 1
    rows = max(1, _CHUNK // len(names))
    out = []
    for done in range(0, resamples, rows):
        idx = rng.integers(0, len(names), size=(min(rows, resamples - done), len(names)))
        out.append(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    return np.concatenate(out)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p-value for k successes in n trials at p = 0.5 (symmetric case)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    if n <= 2000:  # exact integer arithmetic
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        return min(1.0, 2.0 * tail)
    # large n: the same sum in log space (big-integer binomials get slow: n = 20,000 took seconds)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2.0 * math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test on paired outcomes (a conditional binomial test on the discordant pairs)."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired samples differ in length: {len(a_correct)} vs {len(b_correct)}")
    pairs = list(zip(map(bool, a_correct), map(bool, b_correct)))
    b = sum(1 for x, y in pairs if x and not y)
    c = sum(1 for x, y in pairs if y and not x)
    both = sum(1 for x, y in pairs if x and y)
    return McNemar(b=b, c=c, both=both, neither=len(pairs) - b - c - both, p_value=binom_two_sided(b, b + c))


def sign_test(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """Exact sign test on paired scores (ties dropped): McNemar's test generalised to ordinal scores."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    wins = sum(1 for x, y in zip(a, b) if x > y)
    losses = sum(1 for x, y in zip(a, b) if x < y)
    ties = len(a) - wins - losses
    return McNemar(b=wins, c=losses, both=ties, neither=0, p_value=binom_two_sided(wins, wins + losses))


def quadratic_weighted_kappa(r1: Sequence[int], r2: Sequence[int], categories: Sequence[int] = (0, 1, 2)) -> float:
    """Cohen's kappa with quadratic weights between two raters on ordinal ``categories``.
    NaN when it is undefined (no pairs, or both raters constant on the same category)."""
    if len(r1) != len(r2):
        raise ValueError(f"ratings differ in length: {len(r1)} vs {len(r2)}")
    k = len(categories)
    pos = {c: i for i, c in enumerate(categories)}
    observed = np.zeros((k, k))
    for x, y in zip(r1, r2):
        if x not in pos or y not in pos:
            raise ValueError(f"rating outside {list(categories)}: {x!r}, {y!r}")
        observed[pos[x], pos[y]] += 1
    n = observed.sum()
    if n == 0:
        return float("nan")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / (k - 1) ** 2
    denom = (weights * expected).sum()
    if denom == 0:
        return float("nan")
    return float(1.0 - (weights * observed).sum() / denom)

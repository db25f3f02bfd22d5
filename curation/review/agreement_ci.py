"""Bootstrap confidence intervals for the agreement statistics of `curation.review.agreement`, and the summary
that the review stats page and the dataset card show.

The bootstrap resamples ITEMS (units) with replacement, the raters' labels within an item staying together, and
recomputes the statistic on each resample with the very function that gives the point estimate; the interval is
the percentile interval of the defined resamples. A resample on which the statistic is undefined (None: no
variation, nothing pairable) is skipped and counted; when fewer than half of the resamples are defined the
interval itself is undefined (low = high = None).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from curation.review.agreement import (
    AgreementValue,
    fleiss_unequal,
    gwet_ac1_multi,
    krippendorff_alpha,
    percent_agreement_multi,
)

U = TypeVar("U")
Statistic = Callable[[list[U]], "float | AgreementValue | None"]


@dataclass(frozen=True)
class AgreementCI:
    """A point estimate on all units and its bootstrap percentile interval (None where undefined)."""
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    resamples: int
    n_units: int
    undefined_resamples: int

    def as_dict(self) -> dict[str, float | None]:
        """The JSON shape the stats page and the dataset card show."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence}


def _value(x: float | AgreementValue | None) -> float | None:
    if isinstance(x, AgreementValue):
        x = x.value
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _check(resamples: int, confidence: float) -> None:
    if int(resamples) != resamples or resamples < 1:
        raise ValueError("resamples must be a positive integer")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be strictly between 0 and 1")


def _interval(estimate: float | None, draws: np.ndarray, confidence: float, n_units: int) -> AgreementCI:
    """Percentile interval of the defined resample values (NaN = undefined), None with fewer than half defined."""
    vals = draws[~np.isnan(draws)]
    low = high = None
    if len(vals) and 2 * len(vals) >= len(draws):  # fewer than half defined: no interval
        low, high = float(np.quantile(vals, (1 - confidence) / 2)), float(np.quantile(vals, (1 + confidence) / 2))
    return AgreementCI(estimate, low, high, confidence, len(draws), n_units, int(len(draws) - len(vals)))


def bootstrap_cis(stats: dict[str, Statistic], units: Iterable[U], resamples: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, AgreementCI]:
    """`bootstrap_ci` for several statistics on the SAME resamples (one draw of item indices, shared)."""
    _check(resamples, confidence)
    units = list(units)
    n = len(units)
    estimates = {name: _value(f(units)) for name, f in stats.items()}
    draws = {name: np.full(resamples, np.nan) for name in stats}  # NaN: undefined on that resample
    if n:
        for b, row in enumerate(_draws(n, resamples, seed).tolist()):
            sample = [units[i] for i in row]
            for name, f in stats.items():
                v = _value(f(sample))
                if v is not None:
                    draws[name][b] = v
    return {name: _interval(estimates[name], draws[name], confidence, n) for name in stats}


def bootstrap_ci(statistic: Statistic, units: Iterable[U], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> AgreementCI:
    """Percentile bootstrap interval of `statistic(list_of_units)`, resampling units with replacement.

    `statistic` returns a float, None (undefined) or an `AgreementValue` (its `.value` is used). Units are
    whatever the statistic takes a list of: per-item label lists for `fleiss_unequal`, `gwet_ac1_multi`,
    `percent_agreement_multi` and `krippendorff_alpha` (e.g. `partial(krippendorff_alpha, level="ordinal")`);
    (label_a, label_b) pairs for a two-rater statistic wrapped by `paired` (e.g. `paired(cohen_kappa)`).
    Deterministic for a given seed."""
    return bootstrap_cis({"s": statistic}, units, resamples, confidence, seed)["s"]


def paired(two_rater: Callable[..., float | None], **kwargs: Any) -> Callable[[list[tuple[Hashable, Hashable]]],
                                                                              float | None]:
    """Turn a two-rater statistic f(a, b) into one over a list of (a_i, b_i) units, for `bootstrap_ci`."""
    def statistic(pairs: list[tuple[Hashable, Hashable]]) -> float | None:
        return two_rater([p[0] for p in pairs], [p[1] for p in pairs], **kwargs)
    return statistic


def count_matrix(ratings: Sequence[Sequence[Hashable]], categories: Iterable[Hashable] | None = None
                 ) -> tuple[np.ndarray, list[Hashable]]:
    """(counts, cats): counts[i, j] = how many ratings of item i are cats[j]; cats = observed labels plus
    `categories`, sorted (by repr when the labels do not sort)."""
    labels = {x for r in ratings for x in r} | set(categories or ())
    try:
        cats = sorted(labels)  # type: ignore[type-var]
    except TypeError:
        cats = sorted(labels, key=repr)
    col = {c: j for j, c in enumerate(cats)}
    counts = np.zeros((len(ratings), len(cats)))
    for i, r in enumerate(ratings):
        for x in r:
            counts[i, col[x]] += 1
    return counts, cats


def _draws(n_units: int, resamples: int, seed: int) -> np.ndarray:
    """rows[b] = the unit indices of resample b (the one draw every bootstrap here uses)."""
    return np.random.default_rng(seed).integers(0, n_units, size=(resamples, n_units))


def _multiplicities(rows: np.ndarray, n_units: int) -> np.ndarray:
    flat = (rows + n_units * np.arange(len(rows))[:, None]).ravel()
    return np.bincount(flat, minlength=len(rows) * n_units).reshape(len(rows), n_units).astype(float)


def resample_weights(n_units: int, resamples: int, seed: int = 0) -> np.ndarray:
    """weights[b, i] = how many times unit i is drawn in resample b: the same draws as `bootstrap_ci` (same seed)."""
    return _multiplicities(_draws(n_units, resamples, seed), n_units)


def _delta2_batch(level: str, values: Sequence[Hashable], n_c: np.ndarray) -> np.ndarray:
    """delta^2 per resample (B, K, K), as `agreement._delta2`, categories in `values` (sorted) order."""
    k = len(values)
    if level == "nominal":
        return np.broadcast_to(1.0 - np.eye(k), (len(n_c), k, k))
    if level == "interval":
        v = np.asarray(values, dtype=float)
        return np.broadcast_to((v[:, None] - v[None, :]) ** 2, (len(n_c), k, k))
    if level == "ordinal":
        cum = np.concatenate([np.zeros((len(n_c), 1)), np.cumsum(n_c, axis=1)], axis=1)  # cum[:, j] = sum_{g<j}
        lo, hi = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
        between = cum[:, hi + 1] - cum[:, lo]
        return (between - (n_c[:, :, None] + n_c[:, None, :]) / 2) ** 2
    raise ValueError(f"unknown level of measurement {level!r}")


def krippendorff_alpha_batch(counts: np.ndarray, weights: np.ndarray, values: Sequence[Hashable],
                             level: str = "ordinal") -> np.ndarray:
    """Krippendorff's alpha (vectorised, same definition as `agreement.krippendorff_alpha`) for each row of
    `weights` (B, n_units: unit multiplicities), from `counts` (n_units, K) over the sorted `values`; NaN where
    undefined. With weights of ones it is `krippendorff_alpha` on the units themselves."""
    m = counts.sum(axis=1)
    pairable = m >= 2
    o_unit = (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(counts.shape[1]))
    o_unit = np.where(pairable[:, None, None], o_unit / np.where(pairable, m - 1, 1)[:, None, None], 0.0)
    o = (weights @ o_unit.reshape(len(counts), -1)).reshape(len(weights), counts.shape[1], counts.shape[1])
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    d2 = _delta2_batch(level, values, n_c)
    observed = (o * d2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * d2).sum(axis=(1, 2)) / np.where(n > 1, n - 1, 1)
    defined = (n_c > 0).sum(axis=1) >= 2  # D_e = 0 exactly when fewer than 2 categories are pairable
    return np.where(defined, 1.0 - observed / np.where(defined, expected, 1.0), np.nan)


def nominal_batch(counts: np.ndarray, weights: np.ndarray, declared: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Percent agreement, Fleiss' generalised kappa and Gwet's AC1 (as in `agreement`) for each row of `weights`;
    `declared[j]`: column j is a declared category (counts toward AC1's K even when unobserved). NaN = undefined."""
    r = counts.sum(axis=1)
    pairable, rated = (r >= 2).astype(float), (r >= 1).astype(float)
    agree = (counts * (counts - 1)).sum(axis=1) / np.where(r >= 2, r * (r - 1), 1)
    share = counts / np.where(r >= 1, r, 1)[:, None]
    w_pair, w_rated = weights @ pairable, weights @ rated
    with np.errstate(invalid="ignore", divide="ignore"):
        p_a = np.where(w_pair > 0, (weights @ (agree * pairable)) / w_pair, np.nan)
        pi = (weights @ share) / np.where(w_rated > 0, w_rated, 1)[:, None]
        present = (weights @ counts) > 0
        k_ac1 = (present | (np.zeros(counts.shape[1], bool) if declared is None else declared)).sum(axis=1)
        pe_f = (pi * pi).sum(axis=1)
        fleiss = np.where(present.sum(axis=1) >= 2, (p_a - pe_f) / (1 - pe_f), np.nan)
        pe_g = (pi * (1 - pi)).sum(axis=1) / np.where(k_ac1 >= 2, k_ac1 - 1, 1)
        ac1 = np.where(k_ac1 >= 2, (p_a - pe_g) / (1 - pe_g), np.nan)
    return {"percent_agreement": p_a, "fleiss_kappa": fleiss, "gwet_ac1": ac1}


def agreement_summary(ratings: Sequence[Sequence[Hashable]], categories: Iterable[Hashable] | None = None,
                      level: str = "nominal", resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """Agreement on per-item label lists (any number of ratings per item; None entries are treated as missing),
    JSON-serialisable: percent agreement, Fleiss' generalised kappa and Gwet's AC1 (nominal, over `categories`
    plus the observed labels), Krippendorff's alpha at `level`; each with a bootstrap interval over items."""
    units = [[x for x in r if x is not None] for r in ratings]
    cats = tuple(categories) if categories is not None else ()
    sizes = [len(u) for u in units]
    fl = fleiss_unequal(units)
    estimates = {"percent_agreement": percent_agreement_multi(units).value, "fleiss_kappa": fl.value,
                 "krippendorff_alpha": krippendorff_alpha(units, level), "gwet_ac1": gwet_ac1_multi(units, cats)}
    cis = _summary_intervals(units, cats, level, estimates, resamples, confidence, seed)
    return {
        "n_items": len(units),
        "n_items_used": fl.items_used,
        "items_dropped": fl.items_dropped,
        "dropped_reason": fl.dropped_reason,
        "raters_per_item": ({"min": min(sizes), "median": float(statistics.median(sizes)), "max": max(sizes)}
                            if sizes else {"min": None, "median": None, "max": None}),
        "n_categories": len({x for u in units for x in u} | set(cats)),
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "percent_agreement": cis["percent_agreement"].as_dict(),
        "fleiss_kappa": {**cis["fleiss_kappa"].as_dict(), "items_used": fl.items_used,
                         "items_dropped": fl.items_dropped, "dropped_reason": fl.dropped_reason},
        "krippendorff_alpha": {**cis["krippendorff_alpha"].as_dict(), "level": level},
        "gwet_ac1": cis["gwet_ac1"].as_dict(),
    }


def _summary_intervals(units: list[list[Hashable]], cats: tuple[Hashable, ...], level: str,
                       estimates: dict[str, float | None], resamples: int, confidence: float, seed: int
                       ) -> dict[str, AgreementCI]:
    """The summary's intervals, vectorised: the same resamples and values as `bootstrap_cis` with the functions of
    `agreement` (tested to 1e-12), in milliseconds rather than seconds. Resamples go in chunks to bound memory."""
    _check(resamples, confidence)
    n = len(units)
    if n == 0:
        return {k: _interval(_value(v), np.full(resamples, np.nan), confidence, 0) for k, v in estimates.items()}
    counts, values = count_matrix(units, cats)
    declared = np.array([v in set(cats) for v in values], dtype=bool)
    rows = _draws(n, resamples, seed)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in estimates}
    step = max(1, 4_000_000 // (n + len(values) ** 2 * 3))
    for start in range(0, resamples, step):
        w = _multiplicities(rows[start:start + step], n)
        for k, v in nominal_batch(counts, w, declared).items():
            draws[k].append(v)
        draws["krippendorff_alpha"].append(krippendorff_alpha_batch(counts, w, values, level))
    return {k: _interval(_value(estimates[k]), np.concatenate(draws[k]), confidence, n) for k in estimates}

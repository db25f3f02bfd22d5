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
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from curation.review.agreement import FEWER_THAN_TWO, AgreementValue

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


def _sorted_labels(labels: set[Hashable]) -> list[Hashable]:
    """Category order of every matrix here: sorted, or by repr when the labels do not sort."""
    try:
        return sorted(labels)  # type: ignore[type-var]
    except TypeError:
        return sorted(labels, key=repr)


def count_matrix(ratings: Sequence[Sequence[Hashable]], categories: Iterable[Hashable] | None = None
                 ) -> tuple[np.ndarray, list[Hashable]]:
    """(counts, cats): counts[i, j] = how many ratings of item i are cats[j]; cats = observed labels plus
    `categories`, sorted (by repr when the labels do not sort)."""
    cats = _sorted_labels({x for r in ratings for x in r} | set(categories or ()))
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


def unit_columns(counts: np.ndarray) -> np.ndarray:
    """Per-unit columns (n_units, 3 + 2K + K^2) whose weighted sums give every statistic here: pairable, rated,
    pair agreement (pairable units), category shares (K), counts (K), Krippendorff's coincidences (K x K)."""
    k = counts.shape[1]
    r = counts.sum(axis=1)
    pairable, rated = (r >= 2).astype(float), (r >= 1).astype(float)
    agree = (counts * (counts - 1)).sum(axis=1) / np.where(r >= 2, r * (r - 1), 1)
    share = counts / np.where(r >= 1, r, 1)[:, None]
    o_unit = (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(k))
    o_unit = np.where(pairable.astype(bool)[:, None, None], o_unit / np.where(r >= 2, r - 1, 1)[:, None, None], 0.0)
    return np.hstack([pairable[:, None], rated[:, None], (agree * pairable)[:, None], share, counts,
                      o_unit.reshape(len(counts), k * k)])


def _alpha_from_sums(o: np.ndarray, values: Sequence[Hashable], level: str) -> np.ndarray:
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    d2 = _delta2_batch(level, values, n_c)
    observed = (o * d2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * d2).sum(axis=(1, 2)) / np.where(n > 1, n - 1, 1)
    defined = (n_c > 0).sum(axis=1) >= 2  # D_e = 0 exactly when fewer than 2 categories are pairable
    return np.where(defined, 1.0 - observed / np.where(defined, expected, 1.0), np.nan)


def _nominal_from_sums(sums: np.ndarray, k: int, declared: np.ndarray | None) -> dict[str, np.ndarray]:
    w_pair, w_rated, w_agree = sums[:, 0], sums[:, 1], sums[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        p_a = np.where(w_pair > 0, w_agree / w_pair, np.nan)
        pi = sums[:, 3:3 + k] / np.where(w_rated > 0, w_rated, 1)[:, None]
        present = sums[:, 3 + k:3 + 2 * k] > 0
        k_ac1 = (present | (np.zeros(k, bool) if declared is None else declared)).sum(axis=1)
        pe_f = (pi * pi).sum(axis=1)
        fleiss = np.where(present.sum(axis=1) >= 2, (p_a - pe_f) / (1 - pe_f), np.nan)
        pe_g = (pi * (1 - pi)).sum(axis=1) / np.where(k_ac1 >= 2, k_ac1 - 1, 1)
        ac1 = np.where(k_ac1 >= 2, (p_a - pe_g) / (1 - pe_g), np.nan)
    return {"percent_agreement": p_a, "fleiss_kappa": fleiss, "gwet_ac1": ac1}


def statistics_from_sums(sums: np.ndarray, values: Sequence[Hashable], declared: np.ndarray | None,
                         level: str) -> dict[str, np.ndarray]:
    """All four statistics per resample from `weights @ unit_columns(counts)` (B, 3 + 2K + K^2)."""
    k = len(values)
    o = sums[:, 3 + 2 * k:].reshape(len(sums), k, k)
    return {**_nominal_from_sums(sums, k, declared), "krippendorff_alpha": _alpha_from_sums(o, values, level)}


def krippendorff_alpha_batch(counts: np.ndarray, weights: np.ndarray, values: Sequence[Hashable],
                             level: str = "ordinal") -> np.ndarray:
    """Krippendorff's alpha (vectorised, same definition as `agreement.krippendorff_alpha`) for each row of
    `weights` (B, n_units: unit multiplicities), from `counts` (n_units, K) over the sorted `values`; NaN where
    undefined. With weights of ones it is `krippendorff_alpha` on the units themselves."""
    return statistics_from_sums(weights @ unit_columns(counts), values, None, level)["krippendorff_alpha"]


def nominal_batch(counts: np.ndarray, weights: np.ndarray, declared: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Percent agreement, Fleiss' generalised kappa and Gwet's AC1 (as in `agreement`) for each row of `weights`;
    `declared[j]`: column j is a declared category (counts toward AC1's K even when unobserved). NaN = undefined."""
    return _nominal_from_sums(weights @ unit_columns(counts), counts.shape[1], declared)


def agreement_summary(ratings: Sequence[Sequence[Hashable]], categories: Iterable[Hashable] | None = None,
                      level: str = "nominal", resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """Agreement on per-item label lists (any number of ratings per item; None entries are treated as missing),
    JSON-serialisable: percent agreement, Fleiss' generalised kappa and Gwet's AC1 (nominal, over `categories`
    plus the observed labels), Krippendorff's alpha at `level`; each with a bootstrap interval over items."""
    return agreement_summaries({"s": ratings}, categories, level, resamples, seed, confidence)["s"]


def agreement_summaries(named: Mapping[str, Sequence[Sequence[Hashable]]], categories: Iterable[Hashable] | None = None,
                        level: str = "nominal", resamples: int = 1000, seed: int = 0,
                        confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """`agreement_summary` of several rating sets (e.g. the binary judgements of one review), each exactly as if
    computed alone: sets with the same number of items share the same resamples anyway (same seed), so each
    chunk of unit multiplicities is drawn once for all of them. Point estimates are the vectorised estimators at
    unit weights (equal to the functions of `agreement` to 1e-12, tested)."""
    _check(resamples, confidence)
    cats = tuple(categories) if categories is not None else ()
    prepared = {name: _Prepared.of(ratings, cats) for name, ratings in named.items()}
    draws: dict[str, dict[str, list[np.ndarray]]] = {name: {k: [] for k in _STATS} for name in prepared}
    for n in sorted({p.n for p in prepared.values() if p.n}):
        group = [(name, p) for name, p in prepared.items() if p.n == n]
        columns = np.hstack([p.columns for _, p in group])  # one product per chunk for the whole group
        edges = np.cumsum([0] + [p.columns.shape[1] for _, p in group])
        rows = _draws(n, resamples, seed)
        step = max(1, 4_000_000 // (n + columns.shape[1]))
        for start in range(0, resamples, step):
            sums = _multiplicities(rows[start:start + step], n) @ columns
            for (name, p), lo, hi in zip(group, edges[:-1], edges[1:]):
                for k, v in p.from_sums(sums[:, lo:hi], level).items():
                    draws[name][k].append(v)
    return {name: p.summary(draws[name], level, resamples, seed, confidence) for name, p in prepared.items()}


_STATS = ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1")


@dataclass(frozen=True)
class _Prepared:
    """One rating set: its units, their columns (`unit_columns`) over the sorted categories (declared flagged)."""
    units: list[list[Hashable]]
    columns: np.ndarray
    values: list[Hashable]
    declared: np.ndarray

    @classmethod
    def of(cls, ratings: Sequence[Sequence[Hashable]], cats: tuple[Hashable, ...]) -> _Prepared:
        units = [[x for x in r if x is not None] for r in ratings]
        counts, values = count_matrix(units, cats)
        declared = set(cats)
        return cls(units, unit_columns(counts), values, np.array([v in declared for v in values], dtype=bool))

    @property
    def n(self) -> int:
        return len(self.units)

    def from_sums(self, sums: np.ndarray, level: str) -> dict[str, np.ndarray]:
        return statistics_from_sums(sums, self.values, self.declared, level)

    def summary(self, draws: dict[str, list[np.ndarray]], level: str, resamples: int, seed: int,
                confidence: float) -> dict[str, Any]:
        n = self.n
        point = (self.from_sums(self.columns.sum(axis=0, keepdims=True), level) if n
                 else {k: np.array([np.nan]) for k in _STATS})
        cis = {k: _interval(_value(float(point[k][0])),
                            np.concatenate(draws[k]) if draws[k] else np.full(resamples, np.nan), confidence, n)
               for k in _STATS}
        sizes = [len(u) for u in self.units]
        used = sum(1 for m in sizes if m >= 2)
        dropped = n - used
        reason = FEWER_THAN_TWO if dropped else None
        return {
            "n_items": n,
            "n_items_used": used,
            "items_dropped": dropped,
            "dropped_reason": reason,
            "raters_per_item": ({"min": min(sizes), "median": float(statistics.median(sizes)), "max": max(sizes)}
                                if sizes else {"min": None, "median": None, "max": None}),
            "n_categories": len(self.values),
            "level": level,
            "resamples": resamples,
            "seed": seed,
            "percent_agreement": cis["percent_agreement"].as_dict(),
            "fleiss_kappa": {**cis["fleiss_kappa"].as_dict(), "items_used": used, "items_dropped": dropped,
                             "dropped_reason": reason},
            "krippendorff_alpha": {**cis["krippendorff_alpha"].as_dict(), "level": level},
            "gwet_ac1": cis["gwet_ac1"].as_dict(),
        }


def cohen_kappa_ci(units: Sequence[Sequence[tuple[Hashable, Hashable]]], resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 0) -> AgreementCI:
    """Cohen's kappa of two raters with a percentile bootstrap interval over UNITS (items), vectorised.

    A unit is the list of (label_a, label_b) pairs of one item: one pair for a single judgement, several for a
    kappa pooled over judgements (an item's judgements stay together in a resample). Same draws and values as
    `bootstrap_ci(paired(cohen_kappa), ...)` on one-pair units (tested to 1e-12); undefined (None) when both
    raters put everything in one category."""
    return cohen_kappa_cis({"k": units}, resamples, confidence, seed)["k"]


def cohen_kappa_cis(named: Mapping[str, Sequence[Sequence[tuple[Hashable, Hashable]]]], resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict[str, AgreementCI]:
    """`cohen_kappa_ci` of several unit lists over the same items (e.g. one pair's judgements): one draw of
    multiplicities and one product per chunk for all of them (each equals its own `cohen_kappa_ci`)."""
    _check(resamples, confidence)
    cells = {name: _pair_cells(units) for name, units in named.items()}
    out: dict[str, AgreementCI] = {}
    for n in sorted({c.shape[0] for c, _ in cells.values()}):
        group = [(name, c, k) for name, (c, k) in cells.items() if c.shape[0] == n]
        draws = {name: np.full(resamples, np.nan) for name, _, _ in group}
        if n:
            stacked = np.hstack([c for _, c, _ in group])
            edges = np.cumsum([0] + [c.shape[1] for _, c, _ in group])
            rows = _draws(n, resamples, seed)
            step = max(1, 4_000_000 // (n + stacked.shape[1]))
            for start in range(0, resamples, step):
                sums = _multiplicities(rows[start:start + step], n) @ stacked
                for (name, _, k), lo, hi in zip(group, edges[:-1], edges[1:]):
                    draws[name][start:start + step] = _kappa_from_cells(sums[:, lo:hi], k)
        for name, c, k in group:
            point = float(_kappa_from_cells(c.sum(axis=0, keepdims=True), k)[0]) if n else None
            out[name] = _interval(_value(point), draws[name], confidence, n)
    return {name: out[name] for name in named}


def _pair_cells(units: Sequence[Sequence[tuple[Hashable, Hashable]]]) -> tuple[np.ndarray, int]:
    """(cells, K): cells[i, a * K + b] = how many of unit i's pairs are (category a, category b)."""
    cats = _sorted_labels({x for u in units for pair in u for x in pair})
    k = len(cats)
    col = {c: j for j, c in enumerate(cats)}
    cells = np.zeros((len(units), k * k))
    for i, u in enumerate(units):
        for a, b in u:
            cells[i, col[a] * k + col[b]] += 1
    return cells, k


def _kappa_from_cells(sums: np.ndarray, k: int) -> np.ndarray:
    """Cohen's kappa per row of `sums` (B, K*K): the weighted a x b contingency table, row-major."""
    table = sums.reshape(len(sums), k, k)
    total = table.sum(axis=(1, 2))
    rows, cols = table.sum(axis=2), table.sum(axis=1)
    safe = np.where(total > 0, total, 1)
    p_o = np.trace(table, axis1=1, axis2=2) / safe
    p_e = (rows * cols).sum(axis=1) / (safe * safe)
    # undefined exactly when both raters used one and the same category only (p_e = 1), or nothing was drawn
    one_category = ((rows == total[:, None]) & (cols == total[:, None])).any(axis=1)
    defined = (total > 0) & ~one_category
    return np.where(defined, (p_o - p_e) / np.where(defined, 1 - p_e, 1), np.nan)

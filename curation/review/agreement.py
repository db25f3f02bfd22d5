"""Inter-annotator agreement, implemented from the definitions (no scipy/sklearn/krippendorff dependency).

- Cohen's kappa (two raters, nominal):  k = (p_o - p_e) / (1 - p_e), p_e from each rater's own marginals.
- Fleiss' kappa (n raters per item, nominal):  k = (P_bar - P_e) / (1 - P_e)  (Fleiss 1971).
- Krippendorff's alpha (any number of raters, missing values, nominal / ordinal / interval):
  alpha = 1 - D_o / D_e over the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
  alpha-reliability"); ordinal distance delta^2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2.

- Percent agreement: two raters, the fraction of items on which they agree; many raters, the mean over items
  (with >= 2 ratings) of the fraction of agreeing rater pairs, sum_k r_ik (r_ik - 1) / (r_i (r_i - 1)).
- Gwet's AC1 (nominal, any number of raters, r_i raters on item i; Gwet 2008, "Computing inter-rater reliability
  and its variance in the presence of high agreement", Br. J. Math. Stat. Psychol. 61:29-48):
  AC1 = (p_a - p_e) / (1 - p_e), p_a the multi-rater percent agreement above,
  p_e = 1/(K-1) * sum_k pi_k (1 - pi_k), pi_k = mean over rated items of r_ik / r_i, K the number of categories
  (observed ones plus any declared). Unlike kappa it stays high when one category dominates (the "kappa paradox").
- Fleiss' kappa with unequal rater counts (`fleiss_unequal`): Fleiss' generalised kappa as given by Gwet
  (Handbook of Inter-Rater Reliability, 4th ed., 2014; the `fleiss` coefficient of Gwet's irrCAC package):
  p_a as above, p_e = sum_k pi_k^2 with the same pi_k. With equal rater counts it is exactly Fleiss (1971).

Undefined values (no variation at all: p_e = 1, D_e = 0; too few pairable values) are None, never 0 or 1:
callers show them as "n/a". Bootstrap confidence intervals live in `agreement_ci` (numpy).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import permutations


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """`table[i][j]`: how many raters put item i in category j; every row must sum to the same n >= 2."""
    rows = [list(r) for r in table]
    if not rows:
        return None
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    items = len(rows)
    p_j = [sum(r[j] for r in rows) / (items * n) for j in range(len(rows[0]))]
    p_bar = sum((sum(c * c for c in r) - n) / (n * (n - 1)) for r in rows) / items
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1 - p_e)


def fleiss_from_ratings(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa from per-item lists of labels (each list the same length)."""
    cats = sorted({x for r in ratings for x in r}, key=repr)
    return fleiss_kappa([[Counter(r)[c] for c in cats] for r in ratings]) if ratings else None


def _delta2(level: str, values: list[Hashable], n_c: dict[Hashable, float]) -> dict[tuple[Hashable, Hashable], float]:
    out = {}
    order = sorted(values) if level in ("ordinal", "interval") else values
    rank = {v: i for i, v in enumerate(order)}
    for c in order:
        for k in order:
            if level == "nominal":
                d = 0.0 if c == k else 1.0
            elif level == "interval":
                d = float(c - k) ** 2  # type: ignore[operator]
            elif level == "ordinal":
                lo, hi = sorted((rank[c], rank[k]))
                d = (sum(n_c[order[g]] for g in range(lo, hi + 1)) - (n_c[c] + n_c[k]) / 2) ** 2
            else:
                raise ValueError(f"unknown level of measurement {level!r}")
            out[(c, k)] = d
    return out


def krippendorff_alpha(units: Sequence[Sequence[Hashable]], level: str = "ordinal") -> float | None:
    """`units[u]`: the values the raters gave unit u (missing ratings simply left out)."""
    o: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue  # a unit with one value is not pairable
        for i, j in permutations(range(m), 2):
            o[(values[i], values[j])] += 1.0 / (m - 1)
    if not o:
        return None
    n_c: dict[Hashable, float] = defaultdict(float)
    for (c, _k), w in o.items():
        n_c[c] += w
    n = sum(n_c.values())
    d2 = _delta2(level, list(n_c), n_c)
    observed = sum(w * d2[(c, k)] for (c, k), w in o.items())
    expected = sum(n_c[c] * n_c[k] * d2[(c, k)] for c in n_c for k in n_c) / (n - 1)
    if expected == 0:
        return None
    return 1.0 - observed / expected


@dataclass(frozen=True)
class AgreementValue:
    """A multi-rater statistic with the items it could use: `items_dropped` items were left out for `dropped_reason`."""
    value: float | None
    items_used: int
    items_dropped: int
    dropped_reason: str | None = None


FEWER_THAN_TWO = "fewer than 2 ratings (no rater pair)"


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Two raters: the fraction of items on which they gave the same label (None with no items)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    return sum(x == y for x, y in zip(a, b)) / len(a) if len(a) else None


def _pair_agreement(values: Sequence[Hashable]) -> float:
    """Fraction of the r (r - 1) ordered rater pairs of one item (r >= 2) that agree."""
    r = len(values)
    return sum(c * (c - 1) for c in Counter(values).values()) / (r * (r - 1))


def percent_agreement_multi(ratings: Sequence[Sequence[Hashable]]) -> AgreementValue:
    """Many raters, any number per item: mean over items with >= 2 ratings of the fraction of agreeing rater
    pairs; the other items are skipped and counted in `items_dropped`."""
    used = [_pair_agreement(r) for r in ratings if len(r) >= 2]
    dropped = len(ratings) - len(used)
    return AgreementValue(sum(used) / len(used) if used else None, len(used), dropped,
                          FEWER_THAN_TWO if dropped else None)


def _category_shares(ratings: Sequence[Sequence[Hashable]]) -> dict[Hashable, float]:
    """pi_k: mean over the items with >= 1 rating of the share r_ik / r_i of the item's ratings in category k."""
    rated = [r for r in ratings if len(r) >= 1]
    share: dict[Hashable, float] = defaultdict(float)
    for r in rated:
        for k, c in Counter(r).items():
            share[k] += c / len(r)
    return {k: s / len(rated) for k, s in share.items()}


def gwet_ac1_multi(ratings: Sequence[Sequence[Hashable]],
                   categories: Iterable[Hashable] | None = None) -> float | None:
    """Gwet's AC1 (nominal) from per-item label lists of any length (missing ratings left out). K counts the
    observed labels plus `categories` (declare both labels of a binary scale: with everyone approving, K is still
    2). None when no item has 2 ratings or K < 2."""
    p_a = percent_agreement_multi(ratings).value
    if p_a is None:
        return None
    pi = _category_shares(ratings)
    n_cat = len(set(pi) | set(categories or ()))
    if n_cat < 2:
        return None
    p_e = sum(p * (1 - p) for p in pi.values()) / (n_cat - 1)  # <= 1/K <= 1/2, so 1 - p_e > 0
    return (p_a - p_e) / (1 - p_e)


def gwet_ac1(a: Sequence[Hashable], b: Sequence[Hashable],
             categories: Iterable[Hashable] | None = None) -> float | None:
    """Gwet's AC1 for two raters (Gwet 2008): p_e = 1/(K-1) sum_k pi_k (1 - pi_k), pi_k = (p_k+ + p_+k) / 2."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    return gwet_ac1_multi([[x, y] for x, y in zip(a, b)], categories)


def fleiss_unequal(ratings: Sequence[Sequence[Hashable]]) -> AgreementValue:
    """Fleiss' generalised kappa for a varying number of raters per item (Gwet 2014; see the module docstring).
    Items with fewer than 2 ratings cannot enter p_a and are counted in `items_dropped` (a single rating still
    enters the category shares pi_k, as in Gwet's formula); `value` is None when nothing is pairable or every
    rating is in one category."""
    pa = percent_agreement_multi(ratings)
    value = None
    pi = _category_shares(ratings)
    if pa.value is not None and len(pi) >= 2:  # one category only: p_e = 1, undefined (tested exactly, not by floats)
        p_e = sum(p * p for p in pi.values())
        value = (pa.value - p_e) / (1 - p_e)
    return AgreementValue(value, pa.items_used, pa.items_dropped, pa.dropped_reason)

"""Inter-annotator agreement, implemented from the definitions (no scipy/sklearn/krippendorff dependency).

- Cohen's kappa (two raters, nominal):  k = (p_o - p_e) / (1 - p_e), p_e from each rater's own marginals.
- Fleiss' kappa (n raters per item, nominal):  k = (P_bar - P_e) / (1 - P_e)  (Fleiss 1971).
- Krippendorff's alpha (any number of raters, missing values, nominal / ordinal / interval):
  alpha = 1 - D_o / D_e over the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
  alpha-reliability"); ordinal distance delta^2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2.

Undefined values (no variation at all: p_e = 1, D_e = 0; too few pairable values) are None, never 0 or 1:
callers show them as "n/a".
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
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

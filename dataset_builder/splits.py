"""Train/validation/test by seed family, the same assignment for every config.

Families are ordered by a seeded hash of their id (a fixed pseudo-random permutation that does not move a
family when other families are added), then cut by the configured fractions of the family count.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from dataset_builder.features import SPLITS


def family_order(families: Iterable[str], seed: int) -> list[str]:
    return sorted(set(families), key=lambda f: (hashlib.sha256(f"{seed}:{f}".encode()).digest(), f))


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Family counts per split: rounded fractions; every split with a positive fraction gets at least one
    family when there are enough families to go round; train takes the remainder."""
    counts = {s: int(round(n * fractions[s])) for s in ("validation", "test")}
    for s in ("validation", "test"):
        if fractions[s] > 0 and counts[s] == 0 and n >= 3:
            counts[s] = 1
    while counts["validation"] + counts["test"] > max(n - 1, 0):  # train keeps at least one family
        bigger = max(("validation", "test"), key=lambda s: counts[s])
        counts[bigger] -= 1
    counts["train"] = n - counts["validation"] - counts["test"]
    return counts


def assign_families(families: Iterable[str], seed: int, fractions: Mapping[str, float]) -> dict[str, str]:
    """family id -> split name."""
    order = family_order(families, seed)
    counts = split_counts(len(order), fractions)
    out: dict[str, str] = {}
    start = 0
    for split in SPLITS:
        for fam in order[start:start + counts[split]]:
            out[fam] = split
        start += counts[split]
    return out

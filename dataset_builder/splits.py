"""Train/validation/test by seed family, the same assignment for every config.

A family's split depends only on its id and the release seed: sha256(f"{seed}:{family_id}") read as a number
u, uniform in [0, 1), falls into one of the consecutive intervals train [0, f_train), validation
[f_train, f_train + f_validation), test [.., 1). Adding or removing families never moves another family, and
the fractions hold in expectation (a small release can leave a split empty; the card then says so).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from dataset_builder.features import SPLITS

SPLIT_RULE = ("split-by-hash@1: a family goes to the split whose interval of consecutive fractions "
              "(train, validation, test) holds u = sha256(\"{seed}:{family_id}\")[:8] / 2^64, so its split depends "
              "only on its id and the release seed and adding families never moves an existing one")
_SCALE = float(1 << 64)


def family_position(family_id: str, seed: int) -> float:
    """u in [0, 1): the first 8 bytes of sha256(f"{seed}:{family_id}") as a big-endian integer over 2^64."""
    digest = hashlib.sha256(f"{seed}:{family_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def split_of(family_id: str, seed: int, fractions: Mapping[str, float]) -> str:
    """The split whose cumulative-fraction interval holds the family's position (splits with fraction 0 never
    get a family; rounding slack at the top goes to the last split with a positive fraction)."""
    u = family_position(family_id, seed)
    positive = [s for s in SPLITS if fractions[s] > 0]
    if not positive:
        raise ValueError(f"split fractions give no split a positive share: {dict(fractions)}")
    upper = 0.0
    for split in positive:
        upper += fractions[split]
        if u < upper:
            return split
    return positive[-1]


def assign_families(families: Iterable[str], seed: int, fractions: Mapping[str, float]) -> dict[str, str]:
    """family id -> split name (see SPLIT_RULE)."""
    return {fam: split_of(fam, seed, fractions) for fam in sorted(set(families))}

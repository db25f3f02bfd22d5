"""Near-duplicates between evaluation and training items: Jaccard similarity of character 5-gram sets
(NFKC, lower case, no whitespace: works for Chinese and English alike).

Candidates come from one-permutation MinHash + LSH over ALL texts at once (numpy, one hash per gram),
then every candidate is verified with the exact Jaccard similarity, so a reported pair really is at or
above the threshold. 36,000 items take about a second.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medcot.store import normalize_text

NGRAM = 5
PERMS = 64
ESTIMATE_MARGIN = 0.15  # candidates whose MinHash estimate is this far below the threshold are not verified
_BIN_BITS = 6  # 2**6 = PERMS bins
_VALUE_MASK = np.uint64((1 << (64 - _BIN_BITS)) - 1)
_EMPTY = np.uint64(np.iinfo(np.uint64).max)
_RNG = np.random.default_rng(20250510)
_POW = np.array([pow(0x100000001B3, k, 1 << 64) for k in range(NGRAM)], dtype=np.uint64)
_BAND_MIX = _RNG.integers(1, np.iinfo(np.int64).max, size=PERMS, dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    eval_id: str
    train_id: str
    similarity: float


class GramIndex:
    """The hashed character 5-grams of many texts in one flat array, with per-text offsets."""

    def __init__(self, texts: Sequence[str]):
        norm = [normalize_text(t) for t in texts]
        norm = [n + "\x00" * (NGRAM - len(n)) if len(n) < NGRAM else n for n in norm]
        lengths = np.array([len(n) for n in norm], dtype=np.int64)
        cps = np.frombuffer("".join(norm).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        counts = lengths - NGRAM + 1
        docid = np.repeat(np.arange(len(norm), dtype=np.int32), lengths)
        within = docid[:len(docid) - NGRAM + 1] == docid[NGRAM - 1:]  # windows that stay inside one text
        last = len(cps) - NGRAM + 1
        with np.errstate(over="ignore"):
            h = cps[:last] * _POW[0]
            for k in range(1, NGRAM):
                h += cps[k:last + k] * _POW[k]
            h = h[within]
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        self.hashes = h
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def grams(self, i: int) -> np.ndarray:
        return np.unique(self.hashes[self.offsets[i]:self.offsets[i + 1]])

    def signatures(self) -> np.ndarray:
        """One-permutation MinHash (texts x PERMS): each gram's hash picks a bin (top 6 bits) and the bin keeps
        the minimum of the rest; an empty bin borrows the next non-empty bin's value (rotation densification),
        offset by the distance so borrowed values never equal native ones. One hash per gram, not 64."""
        n = len(self)
        doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.offsets))
        key = doc * PERMS + (self.hashes >> np.uint64(64 - _BIN_BITS)).astype(np.int64)
        flat = np.full(n * PERMS, _EMPTY, dtype=np.uint64)
        np.minimum.at(flat, key, self.hashes & _VALUE_MASK)
        sig = flat.reshape(n, PERMS)
        cols = np.arange(2 * PERMS)
        filled = np.where(np.tile(sig != _EMPTY, 2), cols, 4 * PERMS)
        nxt = np.minimum.accumulate(filled[:, ::-1], axis=1)[:, ::-1][:, :PERMS]  # next non-empty bin, circular
        dist = (nxt - cols[:PERMS]).astype(np.uint64)
        return np.take_along_axis(sig, nxt % PERMS, axis=1) + (dist << np.uint64(64 - _BIN_BITS))


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated arange(c) for every c in counts."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.arange(total) - np.repeat(ends - counts, counts)


def rows_per_band(threshold: float) -> int:
    """LSH band width: a pair AT the threshold becomes a candidate with probability >= 0.99 for thresholds
    >= 0.4 (1 - (1 - t^r)^(64/r)), while dissimilar pairs rarely do."""
    return 4 if threshold >= 0.8 else 3 if threshold >= 0.6 else 2


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def _band_keys(sig: np.ndarray, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: each band's rows hashed into one number."""
    bands = PERMS // rows
    with np.errstate(over="ignore"):
        mixed = sig[:, :bands * rows] * _BAND_MIX[:bands * rows]
        return mixed.reshape(len(sig), bands, rows).sum(axis=2, dtype=np.uint64)


def _candidate_pairs(train_sig: np.ndarray, eval_sig: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(eval index, train index) pairs that share at least one LSH band."""
    tk, ek = _band_keys(train_sig, rows), _band_keys(eval_sig, rows)
    e_idx, t_idx = [], []
    for b in range(tk.shape[1]):
        order = np.argsort(tk[:, b], kind="stable")
        keys = tk[order, b]
        lo, hi = np.searchsorted(keys, ek[:, b], "left"), np.searchsorted(keys, ek[:, b], "right")
        counts = hi - lo
        e_idx.append(np.repeat(np.arange(len(ek)), counts))
        t_idx.append(order[np.repeat(lo, counts) + _ranges(counts)])
    pairs = np.unique(np.stack([np.concatenate(e_idx), np.concatenate(t_idx)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def find_near_duplicates(train: Sequence[tuple[str, str]], evaluation: Sequence[tuple[str, str]],
                         threshold: float) -> list[NearDuplicate]:
    """(id, text) pairs -> for each evaluation item, its most similar train item at >= threshold."""
    if not train or not evaluation:
        return []
    index = GramIndex([t for _, t in train] + [t for _, t in evaluation])
    sig = index.signatures()
    n_train = len(train)
    e_idx, t_idx = _candidate_pairs(sig[:n_train], sig[n_train:], rows_per_band(threshold))
    keep = (sig[n_train:][e_idx] == sig[:n_train][t_idx]).mean(axis=1) >= threshold - ESTIMATE_MARGIN
    best: dict[int, tuple[float, str]] = {}
    grams: dict[int, np.ndarray] = {}
    for ei, ti in zip(e_idx[keep].tolist(), t_idx[keep].tolist()):
        a = grams.setdefault(n_train + ei, index.grams(n_train + ei))
        b = grams.setdefault(ti, index.grams(ti))
        sim = jaccard(a, b)
        if sim >= threshold and (ei not in best or (sim, train[ti][0]) > best[ei]):
            best[ei] = (sim, train[ti][0])
    found = [NearDuplicate(evaluation[i][0], tid, round(sim, 4)) for i, (sim, tid) in best.items()]
    return sorted(found, key=lambda d: d.eval_id)

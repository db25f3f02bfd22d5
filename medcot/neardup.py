"""The near-duplicate rule for multiple-choice questions, Chinese and English (RULE_VERSION "neardup@1").

One rule for every user: expansion (a candidate against its seed and siblings), the release builder
(duplicates inside a release) and the eval contamination check (eval items against training items).

What is compared
    An item is its stem (the question) and its options. Option letters are dropped and the options are
    compared as a SET, so shuffled and re-lettered options change nothing. Stem and options are scored
    apart and BOTH must match: two questions that share the same four drug names as options are not
    duplicates unless their stems match too, and neither are two items with the same generic stem
    ("下列哪项正确") but different options.

Normalisation (`normalize`)
    Unicode NFKC, casefold, traditional -> simplified Chinese (OpenCC "t2s"), then every punctuation,
    whitespace, control and format character (Unicode categories P*, Z*, C*) is removed; letters, digits
    and symbols (%, +, ±, °) stay. Option labels ("A.", "(B)", "C、") are stripped only when every option
    carries its own label in order (so "A. fumigatus" as the only such option is left alone).

Features (`features`)
    Language "zh" or "en": `DupText.language` if it starts with one of them, else detected (zh when at
    least CJK_RATIO of the letters are CJK ideographs). zh: character 2-grams and 3-grams; en: character
    5-grams of the normalised text (spaces are gone, so grams cross word borders). A text shorter than
    every n is its own single gram. The stem gives one set; each option gives its grams and the whole
    option, pooled into one option set (built per option, so order-free).

Similarity (`similarity`, `is_near_duplicate`)
    For each part, overlap(A, B) = Jaccard |A∩B| / |A∪B|, raised to the containment |A∩B| / min(|A|, |B|)
    when the smaller set has at least MIN_CONTAINMENT_GRAMS grams (a short text inside a longer one
    matches; a very short one is "contained" in too much to count). similarity = min(stem overlap,
    option overlap), 1.0 when the normalised texts are equal; near duplicate iff similarity >= THRESHOLD.
    Items without options on both sides are compared on the stem alone; options on one side only: 0.

Scale (`NearDupIndex`, `find_matches`, `find_pairs_within`)
    Candidates come from datasketch MinHash (NUM_PERM permutations, fixed MINHASH_SEED, deterministic)
    + MinHashLSH over the OPTION grams (the stem grams for items without options): a pair can only be a
    duplicate if its options match, and option sets are short and stable, while a stem may be contained
    in a much longer one (low stem Jaccard). Every candidate is then verified exactly on the gram sets,
    so a reported pair really is >= THRESHOLD; same id and equal normalised text are looked up exactly.

Known limits
    A one-character substitution is matched when the stem has >= 12 normalised CJK characters (below that
    5 changed grams weigh too much). The rule is textual: a one-character change that flips the meaning
    (左 -> 右) is still a near duplicate, and a paraphrase or translation is not one.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import opencc
from datasketch import MinHash, MinHashLSH

RULE_VERSION = "neardup@1"

# Decision threshold, the same for the stem and the options. A one-character substitution in a zh stem of
# L normalised characters changes at most 5 of its 2L - 3 grams (2 bigrams + 3 trigrams): containment
# (2L - 8) / (2L - 3) is 0.87 at L = 20 and >= 0.75 from L = 12. On the real seeds (1,000 CMExam,
# 500 MedMCQA) the most similar DISTINCT pair scores 0.67 (zh) and 0.52 (en), and the closest pair
# sharing a whole option list has stem overlap 0.60: 0.75 sits between the two populations.
# For options, 0.75 accepts one replaced distractor out of 4 (containment 3/4) or of 5.
THRESHOLD = 0.75
# Containment only counts when the smaller gram set is at least this big (zh: >= 8 characters, en: >= 16
# characters): "寒邪的性质为" (9 grams) is 0.78 contained in "寒邪的性质与致病特点是", a different question.
MIN_CONTAINMENT_GRAMS = 12
CJK_RATIO = 0.3  # share of CJK ideographs among the letters above which an unlabelled item is Chinese
NGRAMS: Mapping[str, tuple[int, ...]] = {"zh": (2, 3), "en": (5,)}
# MinHash + LSH: 42 bands of 3 rows (126 of 128 values used). P(candidate | Jaccard J) = 1 - (1 - J^3)^42:
# 0.9964 at J = 0.5, 0.9999 at J = 0.6, 0.94 at J = 0.4, 0.04 at J = 0.1. Option sets that pass the
# THRESHOLD have Jaccard >= 0.6 (identical sizes, containment 0.75) or >= 0.5 (4 options in 5), so the
# candidate stage (S-curve midpoint (1/42)^(1/3) = 0.29) sits well below the verification threshold.
NUM_PERM = 128
LSH_BANDS, LSH_ROWS = 42, 3
MINHASH_SEED = 20250510

KINDS = ("same_id", "exact", "near")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_LABEL = re.compile(r"^\s*[(\[（【]?\s*([A-Za-z])\s*[)\]）】.．、:：]\s*")
_WHOLE = "\x00"  # prefix of a whole-option token; control characters never survive `normalize`


@dataclass(frozen=True)
class DupText:
    """What the rule compares: a stem and its options (a letter -> text mapping or a list)."""

    id: str
    question: str
    options: Mapping[str, str] | Sequence[str]
    language: str | None = None


@dataclass(frozen=True)
class Match:
    query_id: str
    matched_id: str
    kind: str  # "same_id" | "exact" (same normalised text) | "near"
    similarity: float  # 1.0 for exact


@dataclass(frozen=True, slots=True)
class Features:
    """The rule's view of one item: its language, exact key and the two gram sets."""

    language: str
    key: str  # normalised stem + sorted normalised options: equal keys are "exact" duplicates
    stem: frozenset[str]
    options: frozenset[str]


# ---- normalisation -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


@lru_cache(maxsize=65536)
def _keep(ch: str) -> bool:
    return unicodedata.category(ch)[0] not in "PZC"


def normalize(text: str) -> str:
    """NFKC, casefold, traditional -> simplified, no punctuation, whitespace or control characters."""
    folded = _t2s().convert(unicodedata.normalize("NFKC", text).casefold())
    return "".join(filter(_keep, folded))


def _strip_labels(values: list[str], labels: list[str]) -> list[str]:
    """Drop leading option labels, but only if every option starts with its own label."""
    found = [_LABEL.match(v) for v in values]
    if values and all(m is not None and m.group(1).upper() == label.upper()
                      for m, label in zip(found, labels)):
        return [v[m.end():] for v, m in zip(values, found) if m is not None]
    return values


def option_texts(options: Mapping[str, str] | Sequence[str]) -> list[str]:
    """The normalised, non-empty option texts, sorted (their order and letters do not matter)."""
    if isinstance(options, Mapping):
        keys = [str(k) for k in options]
        values = _strip_labels([str(v) for v in options.values()], keys)
    elif isinstance(options, str):
        values = [options]
    else:
        values = [str(v) for v in options]
        values = _strip_labels(values, [chr(ord("A") + i) for i in range(len(values))])
    return sorted(n for n in map(normalize, values) if n)


def language_of(item: DupText) -> str:
    """"zh" or "en": the item's own language when it names one of them, else by the share of CJK letters."""
    given = (item.language or "").lower()
    for lang in NGRAMS:
        if given.startswith(lang):
            return lang
    opts = item.options.values() if isinstance(item.options, Mapping) else item.options
    text = item.question + "".join(str(o) for o in opts)
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if letters and len(_CJK.findall(text)) / letters >= CJK_RATIO else "en"


# ---- features and scores ---------------------------------------------------------------------------
def _grams(text: str, sizes: tuple[int, ...]) -> set[str]:
    grams = {text[i:i + n] for n in sizes for i in range(len(text) - n + 1)}
    return grams or ({text} if text else set())


def features(item: DupText) -> Features:
    """The gram sets the rule compares (stem and options apart) and the exact key."""
    lang = language_of(item)
    sizes = NGRAMS[lang]
    stem = normalize(item.question)
    opts = option_texts(item.options)
    option_grams: set[str] = set()
    for text in opts:
        option_grams |= _grams(text, sizes)
        option_grams.add(_WHOLE + text)
    key = stem + "\x1f" + "\x1e".join(opts)
    return Features(lang, key, frozenset(_grams(stem, sizes)), frozenset(option_grams))


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard, raised to containment when the smaller set has >= MIN_CONTAINMENT_GRAMS grams."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    if not inter:
        return 0.0
    jaccard = inter / (len(a) + len(b) - inter)
    smaller = min(len(a), len(b))
    return max(jaccard, inter / smaller) if smaller >= MIN_CONTAINMENT_GRAMS else jaccard


def part_scores(fa: Features, fb: Features) -> tuple[float, float]:
    """(stem overlap, option overlap); options missing on both sides count as equal, on one side as 0."""
    if not fa.options and not fb.options:
        options = 1.0
    elif not fa.options or not fb.options:
        options = 0.0
    else:
        options = overlap(fa.options, fb.options)
    return overlap(fa.stem, fb.stem), options


def score(fa: Features, fb: Features) -> float:
    """The verified similarity of two featurised items: 1.0 if exact, else the weaker part's overlap."""
    return 1.0 if fa.key == fb.key else min(part_scores(fa, fb))


def similarity(a: DupText, b: DupText) -> float:
    """The rule's score in [0, 1]: min(stem overlap, option overlap), 1.0 for the same normalised text."""
    return score(features(a), features(b))


def is_near_duplicate(a: DupText, b: DupText) -> bool:
    """Same normalised text, or similarity >= THRESHOLD (ids are not looked at)."""
    return similarity(a, b) >= THRESHOLD


# ---- candidate generation --------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _permutations() -> object:
    return MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED).permutations


def _lsh_tokens(f: Features) -> list[bytes]:
    """The set the LSH indexes: the option grams, or the stem grams for an item without options."""
    tag, grams = ("o", f.options) if f.options else ("s", f.stem)
    return sorted((tag + g).encode("utf-8") for g in grams)


def _minhash(tokens: list[bytes]) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, permutations=_permutations(), scheme="affine32")
    m.update_batch(tokens)
    return m


def _rank(m: Match) -> tuple[int, float, str]:
    return KINDS.index(m.kind), -m.similarity, m.matched_id


class NearDupIndex:
    """Items indexed for near-duplicate queries: exact lookups by id and normalised text, LSH for the rest."""

    def __init__(self, items: Iterable[DupText] = ()) -> None:
        self._lsh = MinHashLSH(num_perm=NUM_PERM, params=(LSH_BANDS, LSH_ROWS))
        self._ids: list[str] = []
        self._features: list[Features] = []
        self._by_id: dict[str, list[int]] = {}
        self._by_key: dict[str, list[int]] = {}
        for item in items:
            self.add(item)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: DupText) -> None:
        """Index one item (an id seen before is kept too: queries then report both as same_id)."""
        self._add(item.id, features(item))

    def query(self, item: DupText, *, exclude_id: str | None = None) -> list[Match]:
        """Every indexed item that has the item's id, its normalised text or a verified near-duplicate
        score, best first (same_id, exact, near; then by similarity). Items with id `exclude_id` are left out."""
        return self._query(item.id, features(item), exclude_id)

    def _add(self, item_id: str, f: Features) -> None:
        n = len(self._ids)
        self._ids.append(item_id)
        self._features.append(f)
        self._by_id.setdefault(item_id, []).append(n)
        self._by_key.setdefault(f.key, []).append(n)
        if tokens := _lsh_tokens(f):
            self._lsh.insert(n, _minhash(tokens), check_duplication=False)

    def _candidates(self, item_id: str, f: Features) -> set[int]:
        found = set(self._by_id.get(item_id, ())) | set(self._by_key.get(f.key, ()))
        if len(self._ids) and (tokens := _lsh_tokens(f)):
            found.update(self._lsh.query(_minhash(tokens)))
        return found

    def _query(self, item_id: str, f: Features, exclude_id: str | None) -> list[Match]:
        matches = []
        for n in self._candidates(item_id, f):
            other = self._ids[n]
            if other == exclude_id:
                continue
            sim = score(f, self._features[n])
            if other == item_id:
                matches.append(Match(item_id, other, "same_id", sim))
            elif f.key == self._features[n].key:
                matches.append(Match(item_id, other, "exact", 1.0))
            elif sim >= THRESHOLD:
                matches.append(Match(item_id, other, "near", sim))
        return sorted(matches, key=_rank)


def find_matches(reference: Sequence[DupText], queries: Sequence[DupText]) -> list[Match]:
    """Every (query, reference item) that matches, grouped by query in input order, best first per query."""
    index = NearDupIndex(reference)
    return [m for q in queries for m in index.query(q)]


def find_pairs_within(items: Sequence[DupText]) -> list[Match]:
    """Duplicates inside one collection, each pair once: query_id is the later item, matched_id the earlier."""
    index = NearDupIndex()
    found: list[Match] = []
    for item in items:
        f = features(item)
        found.extend(index._query(item.id, f, None))
        index._add(item.id, f)
    return found

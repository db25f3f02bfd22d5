"""The near-duplicate rule for multiple-choice questions, Chinese and English (RULE_VERSION "neardup@1").

One rule for every user: expansion (a candidate against its seed, its siblings and the store; its "copy of
the seed" check is `stem_similarity` >= THRESHOLD), the release builder (validation/test rows against train
rows) and the eval contamination check (eval items against training items).

What is compared
    An item is its stem (the question) and its options. Option letters are dropped and the options are
    compared as a SET, so shuffled and re-lettered options change nothing. Stem and options are scored
    apart and BOTH must match: two questions that share the same four drug names as options are not
    duplicates unless their stems match too, and neither are two items with the same generic stem
    ("下列哪项正确") but different options.

Normalisation (`normalize`)
    Unicode NFKC, casefold, traditional -> simplified Chinese (OpenCC "t2s"), then every punctuation,
    whitespace, control and format character (Unicode categories P*, Z*, C*) is removed; letters, digits,
    symbols (+, ±, °, ×), the percent signs (%, ‰) and a decimal point between two digits stay. Option
    labels ("A.", "(B)", "C、") are stripped only when every option carries its own label in order (so
    "A. fumigatus" as the only such option is left alone).

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
    Candidates come from MinHash + LSH banding over the OPTION grams (the stem grams for items without
    options): a pair can only be a duplicate if its options match, and option sets are short and stable,
    while a stem may be contained in a much longer one (low stem Jaccard). Every candidate is then verified
    exactly on the gram sets, so a reported pair really is >= THRESHOLD; same id and equal normalised text
    are looked up exactly. The MinHash is computed here with numpy, many items per pass (polynomial hashes of
    the grams' code points, splitmix64-mixed, NUM_PERM multiply-shift permutations from a fixed MINHASH_SEED:
    deterministic across processes; the LSH hashes the grams straight from the normalised text, the exact
    gram sets are only built for items that become candidates),
    not with datasketch: its per-token Python hashing and per-band inserts cost ~0.4 ms per item, 13 s for
    a 36k-item release, most of the builder's 15 s budget. The banding (LSH_BANDS x LSH_ROWS) is the same.

Known limits
    The index proposes a pair whose option-gram Jaccard is >= 0.5 with probability >= 0.996 (see the LSH
    constants); a pair that passes only by containment of a much smaller option set (2 options inside 5), or
    two option-less items whose stems match only by containment, can have a lower Jaccard and be missed by
    the index although `similarity` accepts it. A one-character substitution is matched when the stem has
    >= 12 normalised CJK characters (below that 5 changed grams weigh too much). The rule is textual: a one-character change that flips the meaning
    (左 -> 右) is still a near duplicate, and a paraphrase or translation is not one.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import opencc

RULE_VERSION = "neardup@1"
RULE_SUMMARY = (f"{RULE_VERSION}: two items are near-duplicates when, after NFKC, case folding, traditional -> "
                "simplified Chinese (OpenCC t2s) and removal of punctuation and option letters, both their stems "
                "and their option sets (order ignored) overlap by at least 0.75 in character 2-3-grams (Chinese) "
                "or 5-grams (English), Jaccard or containment of the smaller text, verified exactly after a "
                "MinHash/LSH candidate search")

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
_KEPT_PUNCTUATION = frozenset("%‰‱")  # punctuation (category P) that changes a quantity
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


class Features:
    """The rule's view of one item: its language, exact key and the two gram sets (the stem's is made on first
    use: most items are never verified against another, and stems are the long part)."""

    __slots__ = ("language", "key", "stem_text", "option_list", "_stem", "_options")

    def __init__(self, language: str, stem_text: str, option_list: list[str]) -> None:
        self.language = language
        self.stem_text = stem_text  # the normalised stem
        self.option_list = option_list  # the normalised, non-empty options, sorted
        self.key = stem_text + "\x1f" + "\x1e".join(option_list)  # equal keys are "exact" duplicates
        self._stem: frozenset[str] | None = None
        self._options: frozenset[str] | None = None

    @property
    def stem(self) -> frozenset[str]:
        """The stem's character n-grams."""
        if self._stem is None:
            self._stem = frozenset(_grams(self.stem_text, NGRAMS[self.language]))
        return self._stem

    @property
    def options(self) -> frozenset[str]:
        """Every option's n-grams and the whole option (as _WHOLE + text), pooled: order-free."""
        if self._options is None:
            grams: set[str] = set()
            for text in self.option_list:
                grams |= _grams(text, NGRAMS[self.language])
                grams.add(_WHOLE + text)
            self._options = frozenset(grams)
        return self._options


# ---- normalisation -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


class _DropTable(dict[int, str | None]):
    """str.translate table, filled on first sight of a code point: None (drop) for punctuation, separators and
    control/format characters, except the kept percent signs and "." (dots not between digits go earlier)."""

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        kept = ch == "." or ch in _KEPT_PUNCTUATION or unicodedata.category(ch)[0] not in "PZC"
        self[code] = ch if kept else None
        return self[code]


_SEP = "\x1f"  # joins the texts of one item for one pass of the converters (a control character: never kept)
_DROP = _DropTable({ord(_SEP): _SEP})
_LONE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a dot that is not a decimal point


def normalize_many(texts: Sequence[str]) -> list[str]:
    """`normalize` of each text, in one pass of NFKC, casefolding and OpenCC over the texts joined by _SEP
    (which blocks composition and phrase conversion across texts)."""
    joined = _SEP.join(t.replace(_SEP, " ") for t in texts)
    folded = _t2s().convert(unicodedata.normalize("NFKC", joined).casefold())
    if "." in folded:
        folded = _LONE_DOT.sub("", folded)
    return folded.translate(_DROP).split(_SEP)


def normalize(text: str) -> str:
    """NFKC, casefold, traditional -> simplified, no punctuation, whitespace or control characters
    (but %, ‰ and a decimal point between digits stay: 37.5% is not 375)."""
    return normalize_many([text])[0]


def _strip_labels(values: list[str], labels: list[str]) -> list[str]:
    """Drop leading option labels, but only if every option starts with its own label."""
    found = [_LABEL.match(v) for v in values]
    if values and all(m is not None and m.group(1).upper() == label.upper()
                      for m, label in zip(found, labels)):
        return [v[m.end():] for v, m in zip(values, found) if m is not None]
    return values


def _raw_options(options: Mapping[str, str] | Sequence[str]) -> list[str]:
    """The option texts without their labels, not normalised yet."""
    if isinstance(options, Mapping):
        return _strip_labels([str(v) for v in options.values()], [str(k) for k in options])
    if isinstance(options, str):
        return [options]
    values = [str(v) for v in options]
    return _strip_labels(values, [chr(ord("A") + i) for i in range(len(values))])


def option_texts(options: Mapping[str, str] | Sequence[str]) -> list[str]:
    """The normalised, non-empty option texts, sorted (their order and letters do not matter)."""
    return sorted(n for n in normalize_many(_raw_options(options)) if n)


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
    """The item's normalised stem and options, its exact key and (on first use) the gram sets the rule compares."""
    stem, *opts = normalize_many([item.question, *_raw_options(item.options)])
    return Features(language_of(item), stem, sorted(o for o in opts if o))


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
    if not fa.option_list and not fb.option_list:
        options = 1.0
    elif not fa.option_list or not fb.option_list:
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


def stem_similarity(a: DupText, b: DupText) -> float:
    """The rule's overlap of the two stems alone (1.0 for the same normalised stem), options ignored: how far
    one question's wording copies another's (expansion's "copy of the seed" check)."""
    fa, fb = features(a), features(b)
    return 1.0 if fa.stem_text == fb.stem_text else overlap(fa.stem, fb.stem)


def is_near_duplicate(a: DupText, b: DupText) -> bool:
    """Same normalised text, or similarity >= THRESHOLD (ids are not looked at)."""
    return similarity(a, b) >= THRESHOLD


# ---- candidate generation --------------------------------------------------------------------------
_U64 = np.uint64
_RNG = np.random.default_rng(MINHASH_SEED)
_PERM_A = _RNG.integers(0, np.iinfo(np.uint64).max, size=NUM_PERM, dtype=np.uint64, endpoint=True) | _U64(1)
_PERM_B = _RNG.integers(0, np.iinfo(np.uint64).max, size=NUM_PERM, dtype=np.uint64, endpoint=True)
_BAND_MIX = _RNG.integers(0, np.iinfo(np.uint64).max, size=LSH_ROWS, dtype=np.uint64, endpoint=True) | _U64(1)
_CHUNK = 1 << 15  # tokens per block of the (tokens x NUM_PERM) minimum


_POW = np.cumprod(np.full(4096, 0x100000001B3, dtype=np.uint64), dtype=np.uint64)  # P^1 .. P^4096 mod 2^64
_WHOLE_TAG, _STEM_TAG = np.uint64(0x5BD1E9955BD1E995), np.uint64(0xC2B2AE3D27D4EB4F)


def _powers(n: int) -> np.ndarray:
    global _POW
    while len(_POW) < n:
        with np.errstate(over="ignore"):
            _POW = np.concatenate([_POW, _POW * _POW[-1]])
    return _POW[:n]


def _text_token_hashes(texts: list[str], docs: list[int], sizes: tuple[int, ...], tag: np.uint64
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(hash, doc) of every character n-gram (n in sizes) inside each text and of each whole text, from the
    code points in one numpy pass: the LSH's view of the gram sets (duplicates do not change a minimum)."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    text_of = np.repeat(np.arange(len(texts)), lengths)
    pos = np.arange(len(cps)) - starts[text_of]  # position inside its text
    doc_arr = np.asarray(docs, dtype=np.int64)
    hashes, owners = [], []
    with np.errstate(over="ignore"):
        for n in sizes:
            last = len(cps) - n + 1
            if last <= 0:
                continue
            h = cps[:last] * _U64(n)
            for k in range(n):
                h = h + cps[k:last + k] * _POW[k]
            inside = pos[:last] <= (lengths[text_of[:last]] - n)
            hashes.append(h[inside])
            owners.append(doc_arr[text_of[:last][inside]])
        weighted = cps * _powers(int(lengths.max(initial=0)))[pos] if len(cps) else cps
        whole = np.add.reduceat(weighted, starts) if len(cps) else weighted
        hashes.append((whole + lengths.astype(np.uint64)) ^ _WHOLE_TAG)
        owners.append(doc_arr)
    return np.concatenate(hashes) ^ tag, np.concatenate(owners)


def _token_hashes(feats: Sequence[Features]) -> tuple[np.ndarray, np.ndarray]:
    """(hash, item index) of the tokens the LSH indexes: option grams and whole options, or for an item
    without options its stem's grams and whole stem, tagged apart."""
    groups: dict[tuple[tuple[int, ...], bool], tuple[list[str], list[int]]] = {}
    for i, f in enumerate(feats):
        texts = f.option_list or ([f.stem_text] if f.stem_text else [])
        texts_of, docs_of = groups.setdefault((NGRAMS[f.language], not f.option_list), ([], []))
        texts_of.extend(texts)
        docs_of.extend([i] * len(texts))
    parts = [_text_token_hashes(texts, docs, sizes, _STEM_TAG if stem else _U64(0))
             for (sizes, stem), (texts, docs) in groups.items() if texts]
    if not parts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    hashes = np.concatenate([h for h, _ in parts])
    owners = np.concatenate([d for _, d in parts])
    order = np.argsort(owners, kind="stable")
    return _mix64(hashes[order]), owners[order]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def signatures(feats: Sequence[Features]) -> list[np.ndarray | None]:
    """MinHash signatures (NUM_PERM values each; None for an item with nothing to index), computed for all items
    at once: permutation k of a token hash h is the top 32 bits of (a_k h + b_k) mod 2^64 (multiply-shift)."""
    hashes, owners = _token_hashes(feats)
    out: list[np.ndarray | None] = [None] * len(feats)
    if not len(hashes):
        return out
    docs, firsts = np.unique(owners, return_index=True)
    bounds = np.append(firsts, len(hashes))
    lo = 0
    while lo < len(docs):  # blocks of whole items, about _CHUNK tokens each
        hi = max(lo + 1, int(np.searchsorted(bounds, bounds[lo] + _CHUNK, side="right")) - 1)
        hi = min(hi, len(docs))
        block = hashes[bounds[lo]:bounds[hi]]
        with np.errstate(over="ignore"):
            values = np.multiply.outer(block, _PERM_A)
            values += _PERM_B
            values >>= _U64(32)
        for doc, sig in zip(docs[lo:hi].tolist(), np.minimum.reduceat(values, bounds[lo:hi] - bounds[lo], axis=0)):
            out[doc] = sig
        lo = hi
    return out


def band_keys(sig: np.ndarray | None) -> list[int]:
    """One hashed key per LSH band (LSH_BANDS bands of LSH_ROWS signature values)."""
    if sig is None:
        return []
    rows = sig[:LSH_BANDS * LSH_ROWS].reshape(LSH_BANDS, LSH_ROWS)
    with np.errstate(over="ignore"):
        return (rows * _BAND_MIX[None, :]).sum(axis=1, dtype=np.uint64).tolist()


def _keys_of(feats: Sequence[Features]) -> list[list[int]]:
    return [band_keys(sig) for sig in signatures(feats)]


def _rank(m: Match) -> tuple[int, float, str]:
    return KINDS.index(m.kind), -m.similarity, m.matched_id


class NearDupIndex:
    """Items indexed for near-duplicate queries: exact lookups by id and normalised text, LSH for the rest.
    Adding or querying many items at once (the constructor, `add_many`, `query_many`) is much faster than one
    by one: signatures are computed in one numpy pass."""

    def __init__(self, items: Iterable[DupText] = ()) -> None:
        # band key -> first item; later items with that key in _more (ints only: the garbage collector skips them)
        self._bands: list[dict[int, int]] = [{} for _ in range(LSH_BANDS)]
        self._more: dict[tuple[int, int], list[int]] = {}
        self._ids: list[str] = []
        self._features: list[Features] = []
        self._by_id: dict[str, list[int]] = {}
        self._by_key: dict[str, list[int]] = {}
        self.add_many(items)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: DupText) -> None:
        """Index one item (an id seen before is kept too: queries then report both as same_id)."""
        self.add_many([item])

    def add_many(self, items: Iterable[DupText]) -> None:
        items = list(items)
        feats = [features(x) for x in items]
        for item, f, keys in zip(items, feats, _keys_of(feats)):
            self._add(item.id, f, keys)

    def query(self, item: DupText, *, exclude_id: str | None = None) -> list[Match]:
        """Every indexed item that has the item's id, its normalised text or a verified near-duplicate
        score, best first (same_id, exact, near; then by similarity). Items with id `exclude_id` are left out."""
        return self.query_many([item], exclude_id=exclude_id)[0]

    def query_many(self, items: Sequence[DupText], *, exclude_id: str | None = None) -> list[list[Match]]:
        """`query` for each item, in order."""
        feats = [features(x) for x in items]
        return [self._query(x.id, f, keys, exclude_id) for x, f, keys in zip(items, feats, _keys_of(feats))]

    def _add(self, item_id: str, f: Features, keys: list[int]) -> None:
        n = len(self._ids)
        self._ids.append(item_id)
        self._features.append(f)
        self._by_id.setdefault(item_id, []).append(n)
        self._by_key.setdefault(f.key, []).append(n)
        for b, (band, key) in enumerate(zip(self._bands, keys)):
            if key in band:
                self._more.setdefault((b, key), []).append(n)
            else:
                band[key] = n

    def _candidates(self, item_id: str, f: Features, keys: list[int]) -> set[int]:
        found = set(self._by_id.get(item_id, ())) | set(self._by_key.get(f.key, ()))
        for b, (band, key) in enumerate(zip(self._bands, keys)):
            first = band.get(key)
            if first is not None:
                found.add(first)
                found.update(self._more.get((b, key), ()))
        return found

    def _query(self, item_id: str, f: Features, keys: list[int], exclude_id: str | None) -> list[Match]:
        matches = []
        for n in self._candidates(item_id, f, keys):
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
    return [m for found in NearDupIndex(reference).query_many(queries) for m in found]


def find_pairs_within(items: Sequence[DupText]) -> list[Match]:
    """Duplicates inside one collection, each pair once: query_id is the later item, matched_id the earlier."""
    index = NearDupIndex()
    feats = [features(x) for x in items]
    found: list[Match] = []
    for item, f, keys in zip(items, feats, _keys_of(feats)):
        found.extend(index._query(item.id, f, keys, None))
        index._add(item.id, f, keys)
    return found

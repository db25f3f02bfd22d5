"""Benchmark of the near-duplicate rule (medcot/neardup.py) on the REAL seed questions.

    python benchmarks/neardup.py [--quick]

Seeds: data/seeds/seed_{zh,en}.jsonl (1,000 CMExam, 500 MedMCQA, bundled).
Recall: the originals go into a NearDupIndex, perturbed copies (new ids) are the queries, so the LSH
candidate stage is exercised; a copy counts as found if its original is among its matches.
False positives: every pair of distinct seeds of one language, through find_pairs_within (the index),
cross-checked by brute force on all pairs (`lsh_missed_pairs`: pairs the index did not report) and by
`similarity` on a random sample. Pairs with the same normalised text are true duplicates in the source:
they are excluded and counted. Hard negatives: seeds that share an option list (real, and synthetic:
another seed's stem with this seed's options), which the rule must not flag.
Full mode adds `scale_36k_s`: find_pairs_within on 36,000 synthetic items (each option list shared by
24 items with different stems, each stem shared by 24 option lists: the candidate stage's worst case).
Prints ONE JSON line on stdout; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import opencc  # noqa: E402

from medcot.neardup import (  # noqa: E402
    RULE_VERSION,
    DupText,
    NearDupIndex,
    features,
    find_pairs_within,
    score,
    similarity,
)

SEED = 20250510
_S2T = opencc.OpenCC("s2t")


def log(msg: str) -> None:
    print(f"[neardup] {msg}", file=sys.stderr, flush=True)


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


# ---- data ----------------------------------------------------------------------------------------
def seed_path(lang: str) -> Path:
    return ROOT / "data" / "seeds" / f"seed_{lang}.jsonl"


def load(lang: str) -> list[DupText]:
    rows = [json.loads(line) for line in seed_path(lang).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [DupText(r["id"], r["question"], dict(r["options"]), r.get("language") or lang) for r in rows]


# ---- perturbations -------------------------------------------------------------------------------
def substitute_char(item: DupText, pool: list[str], rng: random.Random) -> DupText:
    """One CJK character of the stem replaced by another CJK character (from the seeds' own characters)."""
    q = item.question
    pos = rng.choice([i for i, ch in enumerate(q) if is_cjk(ch)])
    new = rng.choice(pool)
    while new == q[pos]:
        new = rng.choice(pool)
    return DupText(item.id + "~sub", q[:pos] + new + q[pos + 1:], item.options, item.language)


def reorder_options(item: DupText, rng: random.Random, as_list: bool) -> DupText:
    """Options shuffled (into a different order) and re-lettered; every other copy as a labelled list."""
    values = list(item.options.values())
    shuffled = values[:]
    while len(values) > 1 and shuffled == values:
        rng.shuffle(shuffled)
    letters = [chr(ord("A") + i) for i in range(len(shuffled))]
    opts = [f"{L}. {v}" for L, v in zip(letters, shuffled)] if as_list else dict(zip(letters, shuffled))
    return DupText(item.id + "~ord", item.question, opts, item.language)


def traditional(item: DupText) -> DupText:
    opts = {k: _S2T.convert(v) for k, v in item.options.items()}
    return DupText(item.id + "~trad", _S2T.convert(item.question), opts, item.language)


def prefixed(item: DupText, other: DupText) -> DupText:
    """The stem inside a longer one (another seed's stem before it), options unchanged."""
    return DupText(item.id + "~pre", other.question.rstrip("。？?") + "。" + item.question, item.options,
                   item.language)


def recall(originals: list[DupText], copies: list[DupText]) -> tuple[float, dict[str, int]]:
    """Share of copies whose original the index returns; and the kinds it was returned as."""
    index = NearDupIndex(originals)
    found, kinds = 0, {"exact": 0, "near": 0}
    for orig, copy in zip(originals, copies):
        hit = [m for m in index.query(copy) if m.matched_id == orig.id]
        found += bool(hit)
        for m in hit[:1]:
            kinds[m.kind] += 1
    return (found / len(copies) if copies else 1.0), kinds


# ---- false positives -----------------------------------------------------------------------------
def brute_force_pairs(items: list[DupText], feats: list) -> set[tuple[str, str]]:
    from medcot.neardup import THRESHOLD
    out = set()
    for i, j in itertools.combinations(range(len(items)), 2):
        if score(feats[i], feats[j]) >= THRESHOLD:
            out.add(tuple(sorted((items[i].id, items[j].id))))
    return out


def false_positives(seeds: dict[str, list[DupText]], samples: int, rng: random.Random) -> dict[str, object]:
    flagged, excluded, examined, missed, brute_total = [], 0, 0, 0, 0
    for lang, items in seeds.items():
        feats = [features(x) for x in items]
        t = time.perf_counter()
        found = find_pairs_within(items)
        log(f"{lang}: find_pairs_within on {len(items)} seeds: {len(found)} pairs, {time.perf_counter() - t:.2f}s")
        by_index = {tuple(sorted((m.query_id, m.matched_id))) for m in found if m.kind != "same_id"}
        t = time.perf_counter()
        brute = brute_force_pairs(items, feats)
        log(f"{lang}: brute force over all {len(items) * (len(items) - 1) // 2} pairs: {len(brute)} flagged, "
            f"{time.perf_counter() - t:.2f}s")
        missed += len(brute - by_index)
        brute_total += len(brute)
        exact = {tuple(sorted((m.query_id, m.matched_id))) for m in found if m.kind == "exact"}
        excluded += len(exact)
        examined += len(items) * (len(items) - 1) // 2 - len(exact)
        for m in found:
            if m.kind == "near":
                flagged.append(m)
                log(f"  flagged: {m.query_id} ~ {m.matched_id} ({m.similarity:.3f})")
    sample_flagged, sample_n = 0, 0
    pools = [v for v in seeds.values() if len(v) > 1]
    for _ in range(samples if pools else 0):
        items = rng.choice(pools)
        a, b = rng.sample(items, 2)
        if features(a).key == features(b).key:
            continue
        sample_n += 1
        sample_flagged += similarity(a, b) >= _threshold()
    return {"false_positive_rate": len(flagged) / examined if examined else 0.0, "pairs_examined": examined,
            "flagged_pairs": len(flagged), "excluded_identical_pairs": excluded,
            "excluded_reason": "same normalised text (stem + option set) in the source: true duplicates",
            "bruteforce_flagged_pairs": brute_total, "lsh_missed_pairs": missed,
            "false_positive_rate_sampled": sample_flagged / sample_n if sample_n else 0.0,
            "pairs_sampled": sample_n}


def _threshold() -> float:
    from medcot.neardup import THRESHOLD
    return THRESHOLD


def shared_option_negatives(seeds: dict[str, list[DupText]], rng: random.Random) -> dict[str, int]:
    """Distinct seeds with the same option list (real), and each seed's options under another seed's stem."""
    real = real_flagged = synth = synth_flagged = 0
    for items in seeds.values():
        groups: dict[str, list[DupText]] = {}
        for x in items:
            groups.setdefault(features(x).key.split("\x1f", 1)[1], []).append(x)
        for group in groups.values():
            for a, b in itertools.combinations(group, 2):
                if features(a).key != features(b).key:
                    real += 1
                    real_flagged += similarity(a, b) >= _threshold()
        for a in items:
            b = rng.choice([x for x in items if x.id != a.id])
            twin = DupText(a.id + "~stem-of-" + b.id, b.question, a.options, a.language)
            synth += 1
            synth_flagged += similarity(a, twin) >= _threshold()
    return {"shared_option_pairs": real, "shared_option_pairs_flagged": real_flagged,
            "shared_option_synthetic_pairs": synth, "shared_option_synthetic_flagged": synth_flagged}


# ---- scale ---------------------------------------------------------------------------------------
def synthetic_corpus(seeds: dict[str, list[DupText]], copies: int, rng: random.Random) -> list[DupText]:
    """copies x seeds items: round k pairs every seed's stem (one character substituted from round 1 on,
    for zh) with the shuffled options of another seed of its language (its own in round 0)."""
    pool = sorted({ch for x in seeds["zh"] for ch in x.question if is_cjk(ch)}) if "zh" in seeds else []
    out = []
    for k in range(copies):
        for items in seeds.values():
            donors = items[:] if k == 0 else rng.sample(items, len(items))
            for item, donor in zip(items, donors):
                stem = item
                if k and pool and sum(map(is_cjk, item.question)) >= 2:
                    stem = substitute_char(item, pool, rng)
                opts = reorder_options(donor, rng, as_list=False).options
                out.append(DupText(f"{item.id}#{k}", stem.question, opts, item.language))
    return out


def scale(seeds: dict[str, list[DupText]], target: int, rng: random.Random) -> dict[str, float]:
    n = sum(len(v) for v in seeds.values())
    corpus = synthetic_corpus(seeds, -(-target // n), rng)[:target]
    log(f"scale: find_pairs_within on {len(corpus)} synthetic items ...")
    t = time.perf_counter()
    pairs = find_pairs_within(corpus)
    seconds = time.perf_counter() - t
    log(f"scale: {len(pairs)} pairs in {seconds:.1f}s")
    return {f"scale_{target // 1000}k_s": round(seconds, 2), f"scale_{target // 1000}k_pairs": len(pairs)}


# ---- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, no 36k scale run (< 60 s)")
    args = parser.parse_args()
    start = time.perf_counter()
    rng = random.Random(SEED)
    seeds = {lang: load(lang) for lang in ("zh", "en")}
    zh, en = seeds["zh"], seeds["en"]
    log(f"seeds: {len(zh)} zh from {seed_path('zh')}, {len(en)} en from {seed_path('en')}")
    pool = sorted({ch for x in zh for ch in x.question if is_cjk(ch)})

    t = time.perf_counter()
    NearDupIndex(zh + en)
    index_rate = (len(zh) + len(en)) / (time.perf_counter() - t)

    mid = [x for x in zh if 20 <= len(x.question) <= 80]
    out: dict[str, object] = {"benchmark": "neardup", "quick": args.quick, "rule": RULE_VERSION}
    out["recall_zh_char_substitution"], kinds_sub = recall(mid, [substitute_char(x, pool, rng) for x in mid])
    out["recall_reordered_options_zh"], _ = recall(zh, [reorder_options(x, rng, i % 2 == 1) for i, x in enumerate(zh)])
    out["recall_reordered_options_en"], _ = recall(en, [reorder_options(x, rng, i % 2 == 1) for i, x in enumerate(en)])
    out["recall_traditional_zh"], kinds_trad = recall(zh, [traditional(x) for x in zh])
    longish = [x for x in zh if len(features(x).stem) >= 12]
    out["recall_prefixed_stem_zh"], _ = recall(longish, [prefixed(x, rng.choice(zh)) for x in longish])
    log(f"recall done: substitution kinds {kinds_sub}, traditional kinds {kinds_trad}")
    out.update(false_positives(seeds, 20_000 if args.quick else 200_000, rng))
    out.update(shared_option_negatives(seeds, rng))
    out.update({"items": len(zh) + len(en), "substitution_items": len(mid), "prefixed_items": len(longish),
                "index_items_per_s": round(index_rate, 1)})
    if not args.quick:
        out.update(scale(seeds, 36_000, rng))
    out["seconds"] = round(time.perf_counter() - start, 2)
    for key, value in out.items():
        if isinstance(value, float) and key.startswith(("recall", "false")):
            out[key] = round(value, 5)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()

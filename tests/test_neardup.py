"""The one near-duplicate rule (medcot/neardup.py) on real seed questions (data/seeds/demo_*.jsonl): what it
must find (one changed character, reordered or re-lettered options, traditional script, a stem inside a longer
one), what it must not (distinct seeds, the same stem with other options), determinism, index = brute force."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import opencc
import pytest

from medcot.neardup import (
    RULE_VERSION,
    THRESHOLD,
    DupText,
    NearDupIndex,
    features,
    find_matches,
    find_pairs_within,
    is_near_duplicate,
    language_of,
    normalize,
    option_texts,
    score,
    similarity,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "data" / "seeds"
_S2T = opencc.OpenCC("s2t")


def load_seeds(lang: str) -> list[DupText]:
    rows = [json.loads(line) for line in (SEEDS / f"demo_{lang}.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [DupText(r["id"], r["question"], dict(r["options"]), r["language"]) for r in rows]


@pytest.fixture(scope="module")
def zh() -> list[DupText]:
    return load_seeds("zh")


@pytest.fixture(scope="module")
def en() -> list[DupText]:
    return load_seeds("en")


def replace_char(item: DupText, pos: int, suffix: str = "~sub") -> DupText:
    """The stem with its pos-th CJK character replaced by one the stem does not contain."""
    q = item.question
    cjk = [i for i, ch in enumerate(q) if "\u4e00" <= ch <= "\u9fff"]
    at = cjk[pos]
    new = next(ch for ch in "甲乙丙丁戊己庚辛" if ch not in q)
    return DupText(item.id + suffix, q[:at] + new + q[at + 1:], item.options, item.language)


def relettered(item: DupText, as_list: bool) -> DupText:
    """Options reversed and re-lettered A.. (as a mapping, or as a list of "A. text" strings)."""
    values = list(item.options.values())[::-1]
    letters = [chr(ord("A") + i) for i in range(len(values))]
    opts = [f"{k}. {v}" for k, v in zip(letters, values)] if as_list else dict(zip(letters, values))
    return DupText(item.id + "~ord", item.question, opts, item.language)


def mid_length(items: list[DupText]) -> list[DupText]:
    return [x for x in items if 20 <= len(normalize(x.question)) <= 80]


def test_rule_version_and_threshold_are_published() -> None:
    assert RULE_VERSION == "neardup@1"
    assert 0.5 < THRESHOLD < 1.0


# ---- normalisation -------------------------------------------------------------------------------
def test_normalize_folds_width_case_script_and_punctuation() -> None:
    assert normalize("下列哪項屬於肝硬化的併發症？") == normalize("下列哪项属于肝硬化的并发症") == "下列哪项属于肝硬化的并发症"
    assert normalize("ＡＢＣ， Which drug?") == "abcwhichdrug"
    assert normalize("37.5 °C ± 0.5%。") == "37.5°c±0.5%"
    assert normalize("3.75") != normalize("37.5") and normalize("第3.题") == "第3题"


def test_option_labels_stripped_only_when_every_option_has_its_own() -> None:
    assert option_texts(["A. 肝", "B. 脾", "C、肾"]) == ["肝", "肾", "脾"]
    assert option_texts({"A": "(A) Aspirin", "B": "(B) Heparin"}) == ["aspirin", "heparin"]
    # one option that happens to start like a label is left alone
    assert option_texts(["A. fumigatus", "Candida"]) == sorted(["afumigatus", "candida"])
    assert option_texts({"A": "", "B": "  "}) == []


def test_language_given_or_detected() -> None:
    assert language_of(DupText("a", "Which drug?", {}, "zh-CN")) == "zh"
    assert language_of(DupText("a", "下列哪项正确", ["A", "B"])) == "zh"
    assert language_of(DupText("a", "Which drug is used in CPR?", ["Adrenaline", "Atropine"])) == "en"


# ---- what must be found --------------------------------------------------------------------------
def test_one_character_substitution_in_20_to_80_char_stems_is_found(zh: list[DupText]) -> None:
    mid = mid_length(zh)
    assert len(mid) >= 10
    for item in mid:
        n_cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in item.question)
        for pos in (0, n_cjk // 2, n_cjk - 1):
            copy = replace_char(item, pos)
            assert normalize(copy.question) != normalize(item.question)
            sim = similarity(item, copy)
            assert THRESHOLD <= sim < 1.0, (item.id, pos, sim)
            assert is_near_duplicate(copy, item)


def test_one_character_substitution_found_through_the_index(zh: list[DupText], en: list[DupText]) -> None:
    index = NearDupIndex(zh + en)
    for item in mid_length(zh):
        copy = replace_char(item, 3)
        matches = index.query(copy)
        assert [m.matched_id for m in matches] == [item.id], (item.id, matches)
        assert matches[0].kind == "near" and matches[0].query_id == copy.id


def test_one_character_substitution_in_a_20_char_stem() -> None:
    opts = {"A": "肝硬化", "B": "胃溃疡", "C": "胆囊炎", "D": "胰腺炎"}
    a = DupText("a", "患者男性五十岁，上腹部疼痛三天，最可能的诊断是", opts, "zh")
    b = DupText("b", "患者女性五十岁，上腹部疼痛三天，最可能的诊断是", opts, "zh")
    assert len(normalize(a.question)) >= 20
    assert is_near_duplicate(a, b)


@pytest.mark.parametrize("as_list", [False, True])
def test_reordered_relettered_options_are_the_same_item(zh: list[DupText], en: list[DupText], as_list: bool) -> None:
    index = NearDupIndex(zh + en)
    for item in zh + en:
        copy = relettered(item, as_list)
        assert similarity(item, copy) == 1.0
        best = index.query(copy)[0]
        assert (best.matched_id, best.kind, best.similarity) == (item.id, "exact", 1.0)


def test_traditional_script_copy_is_found(zh: list[DupText]) -> None:
    index = NearDupIndex(zh)
    converted = 0
    for item in zh:
        trad = DupText(item.id + "~trad", _S2T.convert(item.question),
                       {k: _S2T.convert(v) for k, v in item.options.items()}, "zh")
        converted += trad.question != item.question
        assert similarity(item, trad) == 1.0
        assert index.query(trad)[0].matched_id == item.id
    assert converted >= len(zh) // 2  # the copies really are in another script


def test_traditional_copy_with_a_changed_character_is_still_found(zh: list[DupText]) -> None:
    for item in mid_length(zh):
        changed = replace_char(item, 2)
        trad = DupText(item.id + "~t", _S2T.convert(changed.question),
                       {k: _S2T.convert(v) for k, v in item.options.items()}, "zh")
        assert is_near_duplicate(item, trad), item.id


def test_stem_inside_a_longer_stem_is_found_by_containment(zh: list[DupText]) -> None:
    longish = [x for x in zh if len(normalize(x.question)) >= 20]
    for item, other in zip(longish, longish[1:] + longish[:1]):
        longer = DupText(item.id + "~pre", other.question + "。" + item.question, item.options, "zh")
        assert is_near_duplicate(item, longer), item.id


def test_one_replaced_distractor_of_five_is_still_a_near_duplicate(zh: list[DupText]) -> None:
    item = next(x for x in mid_length(zh) if len(x.options) == 5)
    opts = dict(item.options)
    opts["E"] = "以上都不是"
    assert is_near_duplicate(item, DupText("x", item.question, opts, "zh"))


# ---- what must not be flagged --------------------------------------------------------------------
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_distinct_real_seeds_are_not_flagged(lang: str) -> None:
    items = load_seeds(lang)
    assert find_pairs_within(items) == []
    worst = max(similarity(a, b) for a, b in itertools.combinations(items, 2))
    assert worst < THRESHOLD


def test_same_stem_with_other_options_is_not_a_duplicate(zh: list[DupText], en: list[DupText]) -> None:
    generic = "下列哪项正确"
    a = DupText("a", generic, {"A": "阿司匹林抑制环氧酶", "B": "肝素口服有效", "C": "华法林起效快", "D": "维生素K促凝"}, "zh")
    b = DupText("b", generic, {"A": "心脏有四个腔", "B": "肺动脉含动脉血", "C": "主动脉起于右心室", "D": "冠状动脉供应心肌"}, "zh")
    assert similarity(a, b) < THRESHOLD
    for items in (zh, en):
        for item, donor in zip(items, items[1:] + items[:1]):
            twin = DupText(item.id + "~opts-of-" + donor.id, item.question, donor.options, item.language)
            assert not is_near_duplicate(item, twin), (item.id, donor.id, similarity(item, twin))


def test_other_stem_with_the_same_options_is_not_a_duplicate(zh: list[DupText], en: list[DupText]) -> None:
    for items in (zh, en):
        for item, donor in zip(items, items[1:] + items[:1]):
            twin = DupText(item.id + "~stem-of-" + donor.id, donor.question, item.options, item.language)
            assert not is_near_duplicate(item, twin), (item.id, donor.id, similarity(item, twin))


def test_short_stem_is_not_contained_in_a_different_longer_question() -> None:
    opts = {"A": "易袭阳位", "B": "性质重浊", "C": "其性黏滞", "D": "易伤阳气"}
    short = DupText("a", "寒邪的性质为", opts, "zh")
    longer = DupText("b", "寒邪的性质与致病特点是", opts, "zh")
    assert similarity(short, longer) < THRESHOLD


def test_options_on_one_side_only_never_match_and_stem_only_items_compare_stems() -> None:
    stem = "Which of the following drugs is not used in cardiopulmonary resuscitation?"
    assert similarity(DupText("a", stem, {"A": "Atropine"}), DupText("b", stem, {})) == 0.0
    assert similarity(DupText("a", stem, {}), DupText("b", stem.replace("drugs", "drug"), {})) >= THRESHOLD


# ---- ids, kinds, determinism, index = brute force ------------------------------------------------
def test_same_id_exact_and_exclude(zh: list[DupText]) -> None:
    item = zh[0]
    index = NearDupIndex([item, zh[1]])
    assert len(index) == 2
    assert [m.kind for m in index.query(item)] == ["same_id"]
    other_text = DupText(item.id, zh[5].question, zh[5].options, "zh")
    assert [(m.matched_id, m.kind) for m in index.query(other_text)] == [(item.id, "same_id")]
    assert index.query(item, exclude_id=item.id) == []
    copy = DupText("copy", item.question + "？", item.options, "zh")
    assert [(m.matched_id, m.kind, m.similarity) for m in index.query(copy)] == [(item.id, "exact", 1.0)]


def _corpus(zh: list[DupText], en: list[DupText]) -> list[DupText]:
    """Seeds plus copies of every kind, interleaved, so pairs of every kind and many non-pairs exist."""
    out: list[DupText] = []
    for i, item in enumerate(zh):
        out.append(item)
        if len(normalize(item.question)) >= 20:
            out.append(replace_char(item, i % 5))
        if i % 3 == 0:
            out.append(relettered(item, as_list=i % 2 == 0))
    for i, item in enumerate(en):
        out.append(item)
        if i % 2 == 0:
            out.append(relettered(item, as_list=True))
    return out


def _pairs(matches: list) -> set[tuple[str, str]]:
    return {tuple(sorted((m.query_id, m.matched_id))) for m in matches}


def test_index_agrees_with_brute_force(zh: list[DupText], en: list[DupText]) -> None:
    corpus = _corpus(zh, en)
    feats = [features(x) for x in corpus]
    brute = {tuple(sorted((corpus[i].id, corpus[j].id)))
             for i, j in itertools.combinations(range(len(corpus)), 2) if score(feats[i], feats[j]) >= THRESHOLD}
    assert len(brute) >= 30
    found = find_pairs_within(corpus)
    assert _pairs(found) == brute
    assert len(found) == len(brute)  # each pair once
    seeds = zh + en
    copies = [x for x in corpus if "~" in x.id]
    brute_cross = {(q.id, s.id) for q in copies for s in seeds if similarity(q, s) >= THRESHOLD}
    assert {(m.query_id, m.matched_id) for m in find_matches(seeds, copies)} == brute_cross
    for m in found:
        assert m.similarity == pytest.approx(score(features(next(x for x in corpus if x.id == m.query_id)),
                                                   features(next(x for x in corpus if x.id == m.matched_id))))


_DETERMINISM_SCRIPT = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from test_neardup import _corpus, load_seeds
from medcot.neardup import find_pairs_within
print(json.dumps([[m.query_id, m.matched_id, m.kind, m.similarity]
                  for m in find_pairs_within(_corpus(load_seeds("zh"), load_seeds("en")))]))
"""


def test_results_are_deterministic_across_processes_and_hash_seeds(zh: list[DupText], en: list[DupText]) -> None:
    here = [[m.query_id, m.matched_id, m.kind, m.similarity] for m in find_pairs_within(_corpus(zh, en))]
    assert here == [[m.query_id, m.matched_id, m.kind, m.similarity] for m in find_pairs_within(_corpus(zh, en))]
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, str(Path(__file__).parent), str(ROOT)],
                             env=env, capture_output=True, text=True, check=True, timeout=120)
        assert json.loads(out.stdout) == here

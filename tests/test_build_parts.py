"""The builder's parts: family split assignment, near-duplicate detection, row checks, the lm-eval task files."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from dataset_builder import lmeval_utils as U
from dataset_builder.features import ReleaseRow, empty_consensus, empty_five_strike
from dataset_builder.integrity import check_row_schema
from dataset_builder.lmeval import write_task_folder
from dataset_builder.neardup import GramIndex, find_near_duplicates, jaccard
from dataset_builder.rows import original_texts
from dataset_builder.splits import assign_families, split_counts


def test_split_counts_respect_fractions_and_keep_every_split() -> None:
    fr = {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert split_counts(1000, fr) == {"validation": 100, "test": 100, "train": 800}
    assert split_counts(8, fr) == {"validation": 1, "test": 1, "train": 6}
    assert split_counts(2, fr) == {"validation": 0, "test": 0, "train": 2}
    assert split_counts(3, {"train": 0.5, "validation": 0.0, "test": 0.5})["validation"] == 0


def test_family_assignment_is_seeded_and_stable_when_families_are_added() -> None:
    fr = {"train": 0.8, "validation": 0.1, "test": 0.1}
    fams = [f"fam-{i}" for i in range(500)]
    a = assign_families(fams, 1, fr)
    assert a == assign_families(list(reversed(fams)), 1, fr)
    assert a != assign_families(fams, 2, fr)
    more = assign_families(fams + [f"new-{i}" for i in range(50)], 1, fr)
    moved = sum(1 for f in fams if a[f] != more[f])
    assert moved < 0.1 * len(fams)


def _noise(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(n))


def test_near_duplicates_found_verified_and_not_invented() -> None:
    rng = random.Random(0)
    train = [(f"t{i}", _noise(rng, 60)) for i in range(2000)]
    base = train[17][1]
    edited = base.replace(base.split()[5], "changed", 1)
    zh = ("患者，男，45岁。发热三天伴咳嗽咳痰，体温39.2℃，查体右下肺可闻及湿啰音，血白细胞计数升高，"
          "胸部X线片示右下肺大片状阴影，既往体健，无药物过敏史。最可能的诊断是")
    train.append(("tzh", zh))
    evaluation = [("near", edited), ("far", _noise(rng, 60)), ("zh", zh.replace("最可能的诊断是", "最可能的诊断为")),
                  ("tiny", "ab")]
    found = {d.eval_id: d for d in find_near_duplicates(train, evaluation, 0.8)}
    assert set(found) == {"near", "zh"}
    assert found["near"].train_id == "t17" and 0.8 <= found["near"].similarity < 1.0
    idx = GramIndex([edited, base])
    assert found["near"].similarity == round(jaccard(idx.grams(0), idx.grams(1)), 4)
    assert find_near_duplicates(train, evaluation, 0.999) == []


def test_minhash_candidates_do_not_miss_pairs_above_the_threshold() -> None:
    rng = random.Random(1)
    train, evaluation, expected = [], [], set()
    for i in range(200):
        words = _noise(rng, 50).split()
        train.append((f"t{i}", " ".join(words)))
        k = rng.randint(0, 6)  # edit k words: similarity spread around the threshold
        for j in rng.sample(range(50), k):
            words[j] = "x" * 5
        evaluation.append((f"e{i}", " ".join(words)))
    idx = GramIndex([t for _, t in train] + [t for _, t in evaluation])
    for i in range(200):
        if jaccard(idx.grams(i), idx.grams(200 + i)) >= 0.8:
            expected.add(f"e{i}")
    found = {d.eval_id for d in find_near_duplicates(train, evaluation, 0.8)}
    assert expected and found == expected


def _row(**kw) -> ReleaseRow:
    base = dict(id="i1", family_id="f1", parent_id=None, origin="seed", language="en", question="Q?",
                options={"A": "a", "B": "b", "C": "c", "D": "d", "E": None}, answer="B", cot="... Answer: B",
                cot_answer="B", specialty=None, subject=None, aspect=None, source="src", licence="MIT",
                five_strike=empty_five_strike(), reviews=[], rubric=[], consensus=empty_consensus(),
                validation="none", validation_note="", revision_status="unchanged", provenance={})
    base.update(kw)
    return ReleaseRow(**base)


def test_row_checks_name_the_problem() -> None:
    assert check_row_schema("validated", _row()) == []
    gap = check_row_schema("x", _row(options={"A": "a", "B": "b", "C": None, "D": "d", "E": None}))
    assert [v.check for v in gap] == ["schema"] and "without gaps" in gap[0].reason
    bad = check_row_schema("x", _row(answer="E"))
    assert [v.check for v in bad] == ["answer_in_options"] and bad[0].item_id == "i1"
    assert [v.check for v in check_row_schema("x", _row(cot="  "))] == ["schema"]


def test_original_texts_come_from_the_first_revision() -> None:
    class Rev:
        def __init__(self, field, old):
            self.field, self.old = field, old
    from medcot.records import Item
    item = Item(id="i", family_id="i", language="en", question="new q", options={"A": "x", "B": "y"}, answer="B")
    q, o, a = original_texts(item, [Rev("question", "old q"), Rev("question", "mid q"), Rev("answer", "A")])
    assert (q, o, a) == ("old q", {"A": "x", "B": "y"}, "A")


def test_lm_eval_task_files_and_the_final_answer_filter(tmp_path: Path) -> None:
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter
    folder = write_task_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "medcot_cot.yaml", "medcot_mc.yaml", "utils.py"]

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: f"<fn {loader.construct_scalar(node)}>")
    cot = yaml.load((folder / "medcot_cot.yaml").read_text(encoding="utf-8"), Loader=Loader)
    assert cot["output_type"] == "generate_until" and cot["generation_kwargs"]["until"] == []
    steps = cot["filter_list"][0]["filter"]
    rx = RegexFilter(**{k: v for k, v in steps[0].items() if k != "function"})
    assert steps[1]["function"] == "take_first"
    responses = [["分析……\nA. 错误\nB. 正确\n答案：B"], ["Reasoning... Answer: A\nOn reflection.\nAnswer: C"],
                 ["Answer: **D**"], ["I think it is B or C."], ["Answer: A patient with fever"],
                 ["Answer: C. difficile is the cause"], ["答案：（E）。\n"], ["answer: b"]]
    got = list(TakeFirstFilter().apply(rx.apply(responses, [{}] * 8), [{}] * 8))
    assert got == ["B", "C", "D", U.NO_ANSWER, U.NO_ANSWER, U.NO_ANSWER, "E", U.NO_ANSWER]
    mc = yaml.load((folder / "medcot_mc.yaml").read_text(encoding="utf-8"), Loader=Loader)
    assert mc["output_type"] == "multiple_choice"


def test_lm_eval_doc_helpers() -> None:
    doc = {"language": "zh", "question": "题干", "options": {"A": "甲", "B": "乙", "C": "丙", "D": "丁", "E": None},
           "answer": 2}
    assert U.doc_to_choice(doc) == ["A", "B", "C", "D"] and U.doc_to_target_index(doc) == 2
    assert U.doc_to_target_letter(doc) == "C"
    assert "答案：X" in U.doc_to_text_cot(doc) and U.doc_to_text_mc(doc).endswith("D. 丁\n答案：")
    assert "E." not in U.doc_to_text_mc(doc)
    assert U.process_results_cot(doc, ["C"]) == {"exact_match": 1.0, "no_answer": 0.0}
    assert U.process_results_cot(doc, [U.NO_ANSWER]) == {"exact_match": 0.0, "no_answer": 1.0}
    assert U.process_results_cot(doc, ["E"]) == {"exact_match": 0.0, "no_answer": 1.0}  # not an option here
    with pytest.raises(KeyError):
        U.doc_to_text_cot({**doc, "language": "fr"})

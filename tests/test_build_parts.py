"""The builder's parts: family split assignment, near-duplicate detection, row checks, the lm-eval task files."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import opencc
import pytest
import yaml

from dataset_builder import lmeval_utils as U
from dataset_builder.build import near_duplicate_pairs
from dataset_builder.features import CONFIGS, ReleaseRow, empty_consensus, empty_five_strike
from dataset_builder.integrity import check_row_schema
from dataset_builder.lmeval import write_task_folder
from dataset_builder.rows import original_texts
from dataset_builder.splits import SPLIT_RULE, assign_families, family_position, split_of
from medcot.neardup import THRESHOLD

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_family_split_depends_only_on_id_and_seed() -> None:
    fams = [f"fam-{i}" for i in range(150)]
    a = assign_families(fams, 1, FRACTIONS)
    assert a == assign_families(list(reversed(fams)) + fams[:3], 1, FRACTIONS)
    assert a != assign_families(fams, 2, FRACTIONS)
    more = assign_families(fams + [f"new-{i}" for i in range(15)], 1, FRACTIONS)
    assert {f: more[f] for f in fams} == a  # adding 15 families to 150 moves none
    fewer = assign_families(fams[::2], 1, FRACTIONS)
    assert all(fewer[f] == a[f] for f in fams[::2])  # neither does removing some
    assert all(split_of(f, 1, FRACTIONS) == a[f] for f in fams)
    assert "sha256" in SPLIT_RULE and "never moves" in SPLIT_RULE


def test_split_fractions_hold_on_many_families_and_zero_fractions_stay_empty() -> None:
    fams = [f"cmexam-{i}" for i in range(10_000)]
    counts = Counter(assign_families(fams, 20250510, FRACTIONS).values())
    for split, fraction in FRACTIONS.items():  # binomial sd is 0.003 for 0.1 of 10k
        assert abs(counts[split] / len(fams) - fraction) < 0.015, counts
    no_validation = Counter(assign_families(fams[:2000], 3, {"train": 0.5, "validation": 0.0, "test": 0.5}).values())
    assert set(no_validation) == {"train", "test"} and abs(no_validation["test"] - 1000) < 100
    assert set(assign_families(fams[:50], 3, {"train": 1.0, "validation": 0.0, "test": 0.0}).values()) == {"train"}
    assert 0.0 <= family_position("x", 1) < 1.0


def test_builder_near_duplicates_use_the_one_rule() -> None:
    base = ("患者，男，45岁。发热三天伴咳嗽咳痰，查体右下肺可闻及湿啰音，胸部X线片示右下肺大片状阴影。最可能的诊断是")
    opts = {"A": "大叶性肺炎", "B": "肺结核", "C": "肺癌", "D": "支气管扩张", "E": "肺脓肿"}
    flipped = {k: v for k, v in zip("ABCDE", reversed(list(opts.values())))}
    en_opts = {"A": "Metoprolol", "B": "Amlodipine", "C": "Digoxin", "D": "Warfarin", "E": None}
    train = [_row(id="t-zh", family_id="f1", language="zh", question=base, options=opts),
             _row(id="t-en", family_id="f2", question="Which drug is a cardioselective beta blocker?", options=en_opts)]
    evaluation = [
        _row(id="e-sub", family_id="f3", language="zh", question=base.replace("三天", "五天"), options=flipped),
        _row(id="e-trad", family_id="f4", language="zh", question=opencc.OpenCC("s2t").convert(base),
             options={k: opencc.OpenCC("s2t").convert(v) for k, v in opts.items()}),
        _row(id="e-far", family_id="f5", language="zh", question="寒邪的性质与致病特点是",
             options={"A": "易袭阳位", "B": "性质重浊", "C": "其性黏滞", "D": "易伤阳气", "E": "凝滞收引"}),
        _row(id="e-en", family_id="f6", question="Which drug is a cardioselective beta-blocker?",
             options={"A": "Warfarin", "B": "Digoxin", "C": "Metoprolol", "D": "Amlodipine", "E": None})]
    split_rows = {c: {"train": [], "validation": [], "test": []} for c in CONFIGS}
    split_rows["validated"]["train"] = train
    split_rows["validated"]["test"] = evaluation[:2]
    split_rows["unvalidated"]["validation"] = evaluation[2:]
    # one item in two wordings (edited in review: only the raw one copies a train item): both are checked
    split_rows["validated"]["validation"] = [_row(id="e-two", family_id="f7", question="Which antiarrhythmic "
                                                  "drug prolongs the QT interval most?", options=en_opts)]
    split_rows["unvalidated"]["validation"].append(_row(id="e-two", family_id="f7", question="Which drug is a "
                                                        "cardioselective beta blocker ?", options=en_opts))
    pairs = near_duplicate_pairs(split_rows)
    found = {(p.eval_id.split("\x00")[0], p.train_id) for p in pairs}
    assert found == {("e-sub", "t-zh"), ("e-trad", "t-zh"), ("e-en", "t-en"), ("e-two", "t-en")}
    assert len(pairs) == 4 and all(THRESHOLD <= p.similarity <= 1.0 for p in pairs)
    assert pairs == near_duplicate_pairs(split_rows)


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


def test_lm_eval_task_files_and_the_extractor_filter(tmp_path: Path) -> None:
    """The shipped task reads answers with the shipped copy of medcot's extractor, through lm-eval's own
    `custom` filter: the letters are exactly medcot.extract's."""
    import importlib.util

    from lm_eval.filters.custom import CustomFilter
    from lm_eval.filters.selection import TakeFirstFilter

    from medcot.extract import extract_answer
    folder = write_task_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "medcot_cot.yaml", "medcot_extract.py",
                                                        "medcot_mc.yaml", "utils.py"]

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: f"<fn {loader.construct_scalar(node)}>")
    cot = yaml.load((folder / "medcot_cot.yaml").read_text(encoding="utf-8"), Loader=Loader)
    assert cot["output_type"] == "generate_until" and cot["generation_kwargs"]["until"] == []
    steps = cot["filter_list"][0]["filter"]
    assert steps[0] == {"function": "custom", "filter_fn": "<fn utils.extract_filter>"}
    assert steps[1]["function"] == "take_first"
    spec = importlib.util.spec_from_file_location("shipped_utils", folder / "utils.py")  # the release's copy
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    responses = [["分析……\nA. 错误\nB. 正确\n答案：B"], ["Reasoning... Answer: A\nOn reflection.\nAnswer: C"],
                 ["Answer: **D**"], ["I think it is B or C."], ["Answer: A patient with fever"],
                 ["Answer: C. difficile is the cause"], ["答案：（E）。\n"], ['{"answer": "C"}'],
                 ["<think>long thought, never closed"]]
    docs = [{"options": {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}}] * len(responses)
    got = list(TakeFirstFilter().apply(CustomFilter(filter_fn=shipped.extract_filter).apply(responses, docs), docs))
    want = [extract_answer(r[0], docs[0]["options"]).letter or U.NO_ANSWER for r in responses]
    assert got == want and got[7] == "C" and got[3] == U.NO_ANSWER and got[8] == U.NO_ANSWER
    assert shipped._extractor().__file__ == str(folder / "medcot_extract.py")
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

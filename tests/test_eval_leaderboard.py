"""Leaderboard sets: an external file without answers is a submission-only set (no accuracy, never a made-up
score), its upstream fields come back unchanged in the submission, files keep their source names."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest
from eval_helpers import make_manifest, prediction

from eval.compare import CompareError, compare
from eval.config import BootstrapConfig, ExternalSet
from eval.external import load_external, split_embedded_options
from eval.records import read_records, write_jsonl
from eval.run import to_prediction
from eval.scoring import metrics_markdown, model_metrics
from eval.submit import build_submission
from medcot.config import ConfigError
from medcot.records import ChatResult
from medcot.seeds import SeedError

UPSTREAM = [
    {"question": "患者男，65岁，突发胸痛2小时。最可能的诊断是\nA. 急性心肌梗死\nB. 气胸\nC. 胃炎\nD. 肋软骨炎",
     "answer": "", "other": {"id": 17, "source": "MedExam", "type": "single"}},
    {"question": "缺铁性贫血的典型表现是\nA. 大细胞性贫血\nB. 小细胞低色素性贫血\nC. 溶血\nD. 巨幼细胞",
     "answer": "", "other": {"id": 18, "source": "MedExam"}, "extra_upstream_field": [1, 2]},
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _result(text: str) -> ChatResult:
    return ChatResult(content=text, reasoning=None, finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                      latency_s=0.0)


def test_unlabelled_set_loads_with_its_upstream_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "MedExam.jsonl", UPSTREAM)
    items = load_external(ExternalSet(name="medbench-exam", path=str(path), language="zh"))
    assert [i.answer for i in items] == [None, None]
    assert [i.id for i in items] == ["17", "18"]                 # the upstream id, from `other`
    assert items[0].question == "患者男，65岁，突发胸痛2小时。最可能的诊断是"
    assert items[0].options == {"A": "急性心肌梗死", "B": "气胸", "C": "胃炎", "D": "肋软骨炎"}
    assert items[1].upstream == UPSTREAM[1] and items[0].source == "MedExam.jsonl"


def test_partly_labelled_set_and_missing_language_are_errors(tmp_path: Path) -> None:
    rows = [dict(UPSTREAM[0], answer="A"), UPSTREAM[1]]
    path = _write(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(SeedError, match=r"mixed.jsonl:2: field 'answer': missing on 1 of 2 lines"):
        load_external(ExternalSet(name="x", path=str(path), language="zh"))
    with pytest.raises(SeedError, match=r"mixed.jsonl:1: field 'language': missing"):
        load_external(ExternalSet(name="x", path=str(path)))
    with pytest.raises(ConfigError, match="language"):
        ExternalSet(name="x", path=str(path), language="fr")
    bad = _write(tmp_path / "bad.jsonl", [dict(UPSTREAM[0], answer="F")])
    with pytest.raises(SeedError, match=r"bad.jsonl:1: field 'answer'"):
        load_external(ExternalSet(name="x", path=str(bad), language="zh"))


@pytest.mark.parametrize("question", [
    "Which?\nA. one\nB. two\nThen a trailing sentence.",   # text after the options
    "Which?\nA. one\nC. three",                              # letters out of order
    "Which? A. one B. two",                                  # not on lines of their own
])
def test_embedded_options_only_from_a_plain_list(question: str) -> None:
    assert split_embedded_options(question) == (question, {})


def test_labelled_seed_schema_file_is_scored_as_before(tmp_path: Path) -> None:
    row = {"id": "medmcqa-1", "question": "Which vitamin deficiency causes scurvy?", "language": "en",
           "options": {"A": "Vitamin C", "B": "Vitamin D", "C": "Vitamin K", "D": "Vitamin A"}, "answer": "a"}
    path = _write(tmp_path / "mcq.jsonl", [row])
    (item,) = load_external(ExternalSet(name="ext", path=str(path)))
    assert item.answer == "A" and item.id == "medmcqa-1"
    p = to_prediction(item, "m", _result("Vitamin C prevents scurvy.\nAnswer: A"), "eval_cot@1")
    assert p.correct is True and p.gold == "A"


def test_no_accuracy_for_an_unlabelled_set_and_a_faithful_submission(tmp_path: Path) -> None:
    path = _write(tmp_path / "MedExam.jsonl", UPSTREAM)
    items = load_external(ExternalSet(name="medbench-exam", path=str(path), language="zh"))
    preds = [to_prediction(items[0], "m", _result("分析……\n答案：A"), "eval_cot@1"),
             to_prediction(items[1], "m", _result("无法确定"), "eval_cot@1")]
    assert [p.prediction for p in preds] == ["A", None] and [p.correct for p in preds] == [None, None]
    # predictions survive their JSONL round trip (eval run writes them, eval submit reads them)
    preds = read_records(write_jsonl(tmp_path / "pred.jsonl", preds), type(preds[0]))
    metrics = model_metrics(preds, BootstrapConfig(resamples=100))["medbench-exam"]
    assert metrics["labelled"] is False and "accuracy" not in metrics and metrics["no_answer"] == 1
    table = metrics_markdown({"models": {"m": {"sets": {"medbench-exam": metrics}}}})
    assert "submission only" in table

    res = build_submission(preds, "medbench", tmp_path / "out" / "sub.zip")
    assert res["files"] == {"MedExam.jsonl": 2} and (tmp_path / "out" / "sub.zip").is_file()
    with zipfile.ZipFile(tmp_path / "out" / "sub.zip") as zf:
        assert zf.namelist() == ["MedExam.jsonl"]
        lines = [json.loads(x) for x in zf.read("MedExam.jsonl").decode().splitlines()]
    for got, up in zip(lines, UPSTREAM, strict=True):
        ours = got["other"].pop("medcot")
        assert got["other"] == up["other"]                           # upstream `other` as it was
        assert {k: v for k, v in got.items() if k != "answer"} == {k: v for k, v in up.items() if k != "answer"}
        assert ours["source"] == "MedExam.jsonl" and ours["model"] == "m"
    assert [x["answer"] for x in lines] == ["A", ""]


def test_two_sets_from_files_of_one_name_are_refused(tmp_path: Path) -> None:
    a = dataclasses.replace(prediction("m", "1", True, set_name="a"), source="test.jsonl")
    b = dataclasses.replace(prediction("m", "2", True, set_name="b"), source="test.jsonl")
    with pytest.raises(ValueError, match="share a file name"):
        build_submission([a, b], "medbench", tmp_path / "s.zip")
    assert not list(tmp_path.iterdir())


def test_an_upstream_medcot_key_is_never_overwritten(tmp_path: Path) -> None:
    p = dataclasses.replace(prediction("m", "1", True), source="x.jsonl",
                            upstream={"question": "Q?", "answer": "", "other": {"medcot": "theirs"}})
    with pytest.raises(ValueError, match="other.medcot"):
        build_submission([p], "medbench", tmp_path / "s.zip")


def test_compare_leaves_unlabelled_sets_out(tmp_path: Path) -> None:
    edir = tmp_path / "eval"
    names = [f"{arm}-s0" for arm in ("validated", "unvalidated")]
    for name, right in zip(names, (True, False), strict=True):
        labelled = [prediction(name, f"i{i}", right if i % 3 else not right) for i in range(12)]
        blind = [dataclasses.replace(prediction(name, f"u{i}", True, set_name="board"), gold=None, correct=None)
                 for i in range(5)]
        write_jsonl(edir / "predictions" / f"{name}.jsonl", labelled + blind)
    manifest = make_manifest(tmp_path / "manifest.json", "unused", {n: "unused" for n in names})
    r = compare(str(manifest), str(edir), str(tmp_path / "report"), BootstrapConfig(resamples=100))
    assert [s["set"] for s in r["sets"]] == ["test"] and r["unlabelled_sets"] == ["board"]
    assert all(v["n"] == 12 for v in r["models"].values() if not v["pooled_runs"])
    assert "board" in r["markdown"]
    for name in names:  # only unlabelled predictions: nothing to compare, said so
        preds = read_records(edir / "predictions" / f"{name}.jsonl", type(prediction("m", "x", True)))
        write_jsonl(edir / "predictions" / f"{name}.jsonl", [p for p in preds if p.gold is None])
    with pytest.raises(CompareError, match="submission only"):
        compare(str(manifest), str(edir), str(tmp_path / "report2"))

"""`medcot eval compare` on synthetic predictions: per-run accuracies, the two-level CI (families and runs),
Wilson intervals, per-run McNemar as a secondary table only, judge totals, the report's wording."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import make_manifest, prediction, write_predictions
from scipy import stats as sps

from eval.compare import CompareError, compare, headline_lines
from eval.config import BootstrapConfig
from eval.inference import Outcome, compare_arms, wilson
from eval.records import RUBRIC_DIMENSIONS, JudgeScore, write_jsonl
from medcot.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
# 20 items in 10 families of 2; run s0/s1 per arm. True = right, None = no answer (counts as wrong)
OUTCOMES = {
    "validated-s0": [True] * 8 + [False] + [True] * 6 + [False] * 5,
    "unvalidated-s0": [False] * 8 + [True] + [True] * 6 + [False] * 5,
    "validated-s1": [True] * 3 + [False] * 3 + [True] * 10 + [None] * 4,
    "unvalidated-s1": [False] * 3 + [True] * 3 + [True] * 10 + [False] * 4,
}
JUDGE = {"validated-s0": [2] * 10 + [1] * 10, "unvalidated-s0": [1] * 20, "validated-s1": [2] * 20,
         "unvalidated-s1": [2] * 5 + [0] * 15}


def _family(i: int) -> str:
    return f"fam{i // 2}"


def _write(edir: Path, model: str, outcomes: list[bool | None], judge: list[int] | None = None,
           families: bool = True) -> None:
    preds = [prediction(model, f"i{i}", c, specialty=("cardio", "neuro")[i % 2]) for i, c in enumerate(outcomes)]
    if families:
        preds = [dataclasses.replace(p, family_id=_family(i)) for i, p in enumerate(preds)]
    write_jsonl(edir / "predictions" / f"{model}.jsonl", preds)
    if judge is not None:
        write_jsonl(edir / "judge" / f"{model}.jsonl",
                    [JudgeScore(set="test", id=f"i{i}", model=model, judge="j", prompt_version="eval_judge@1",
                                scores=dict.fromkeys(RUBRIC_DIMENSIONS, s)) for i, s in enumerate(judge)])


def _manifest(tmp_path: Path) -> Path:
    adapters = {f"{a}-s{s}": "unused" for a in ("validated", "unvalidated") for s in (0, 1)}
    path = make_manifest(tmp_path / "train" / "manifest.json", "unused", adapters, seeds=[0, 1])
    data = json.loads(path.read_text())
    for run in data["runs"]:
        run["data_seed"] = 10 + run["seed"]
    data["design"] = "matched"
    data["arms"] = {arm: {"n": 20, "selections": [
        {"data_seed": 10 + s, "n": 20, "families": 10, "shared_ids": 20, "identical_examples": 7,
         "own_answer": {"agree": 20 if arm == "validated" else 17, "disagree": 3 if arm == "unvalidated" else 0,
                        "none": 0, "rate": 1.0 if arm == "validated" else 0.85}} for s in (0, 1)]}
        for arm in ("validated", "unvalidated")}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    edir = tmp_path / "eval"
    for model, outcomes in OUTCOMES.items():
        _write(edir, model, outcomes, JUDGE[model])
    write_predictions(edir, "base", [True, False] * 10)  # a reference model, no family ids
    return _manifest(tmp_path), edir


def _expected_outcomes() -> list[Outcome]:
    return [Outcome(model.rsplit("-", 1)[0], model, f"i{i}", _family(i), bool(c))
            for model, row in OUTCOMES.items() for i, c in enumerate(row)]


def test_headline_is_the_two_level_comparison(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"), BootstrapConfig(resamples=500, seed=3))
    (test,) = r["sets"]
    h = test["headline"]
    assert h["a"]["run_accuracy"] == {"validated-s0": pytest.approx(14 / 20), "validated-s1": pytest.approx(13 / 20)}
    assert h["b"]["run_accuracy"] == {"unvalidated-s0": pytest.approx(7 / 20), "unvalidated-s1": pytest.approx(13 / 20)}
    assert h["a"]["mean"] == pytest.approx(13.5 / 20) and h["b"]["sd"] == pytest.approx(sps.tstd([0.35, 0.65]))
    assert h["a"]["n_families"] == 10 and h["a"]["n_items"] == 20
    assert h["difference"]["estimate"] == pytest.approx(13.5 / 20 - 10 / 20)
    ref = compare_arms(_expected_outcomes(), "validated", "unvalidated", resamples=500, seed=3)
    assert h == ref.as_dict()
    assert h["variance"]["runs_a"] > 0 and h["variance"]["runs_b"] > 0 and "families" in h["variance"]
    assert h["difference"]["low"] < h["difference"]["estimate"] < h["difference"]["high"]
    assert 0 < h["p_value"] < 1 and h["bootstrap_secondary"] is not None
    # per-run Wilson intervals and no-answer rates
    runs = {x["run"]: x for x in test["runs"]}
    assert runs["validated-s1"]["accuracy_wilson"] == wilson(13, 20).as_dict()
    assert runs["validated-s1"]["no_answer"] == pytest.approx(4 / 20) and runs["unvalidated-s1"]["no_answer"] == 0
    assert runs["validated-s1"]["data_seed"] == 11 and runs["validated-s1"]["seed"] == 1
    assert test["items_without_family"] == 0


def test_mcnemar_only_per_run_never_pooled(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"))
    (test,) = r["sets"]
    table = {(m["run_a"], m["run_b"]): m for m in test["per_run_mcnemar"]}
    assert len(table) == 4  # every (validated run, unvalidated run) pair
    s0 = table[("validated-s0", "unvalidated-s0")]
    assert (s0["a_only"], s0["b_only"]) == (8, 1)
    assert s0["p_value"] == pytest.approx(sps.binomtest(8, 9, 0.5).pvalue)
    assert (table[("validated-s1", "unvalidated-s1")]["a_only"], table[("validated-s1", "unvalidated-s1")]["b_only"]) \
        == (3, 3)
    text = json.dumps(r)
    assert "pooled" not in (tmp_path / "report" / "comparison.md").read_text().lower()
    assert '"mcnemar"' not in text and "accuracy" not in test  # no pooled (item, seed) rows anywhere


def test_families_enter_the_interval(setup, tmp_path: Path) -> None:
    """Without family ids every item is its own family: a different family variance, and the count is told."""
    manifest, edir = setup
    with_fam = compare(str(manifest), str(edir), str(tmp_path / "a"))["sets"][0]["headline"]
    for model, outcomes in OUTCOMES.items():
        _write(edir, model, outcomes, JUDGE[model], families=False)
    no_fam = compare(str(manifest), str(edir), str(tmp_path / "b"))
    h = no_fam["sets"][0]["headline"]
    assert h["a"]["n_families"] == 20 and no_fam["sets"][0]["items_without_family"] == 20
    assert h["difference"]["estimate"] == pytest.approx(with_fam["difference"]["estimate"])
    assert h["variance"]["families"] != pytest.approx(with_fam["variance"]["families"])
    assert "20 items carry no family_id" in no_fam["markdown"]


def test_judge_total_is_compared_the_same_way(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    j = compare(str(manifest), str(edir), str(tmp_path / "report"))["sets"][0]["judge"]
    assert j["n_items"] == 20
    # totals: v-s0 mean 7.5, v-s1 10; u-s0 5, u-s1 (5*10 + 15*0) / 20 = 2.5
    assert j["total"]["a"]["mean"] == pytest.approx(8.75) and j["total"]["b"]["mean"] == pytest.approx(3.75)
    assert j["total"]["difference"]["estimate"] == pytest.approx(5.0)
    assert "rubric points" in j["total"]["interpretation"]
    assert j["dimension_means"]["validated"]["medical_correctness"] == pytest.approx((1.5 + 2) / 2)


def test_report_words_plots_and_arm_manifest(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"))
    out = tmp_path / "report"
    md, html = (out / "comparison.md").read_text(), (out / "comparison.html").read_text()
    reading = ("if the study were repeated with new test families and new training runs, 95% of intervals "
               "built this way would contain the true difference")
    assert reading in md and reading in html
    assert "per-run accuracy" in md and "validated-s0: 0.700" in md and "Wilson" in md
    assert "Secondary: per-run McNemar" in md and "Do not count or combine them" in md
    assert "Training arms (from the manifest)" in md and "17/20 (85.0%)" in md and "matched" in md
    assert "Contamination check: no record" in md and r["contamination"] is None
    assert "<table>" in html and "rubric_radar.png" in html and "<img" in html
    for name in ("accuracy_ci.png", "specialty.png", "rubric_radar.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in md
    assert set(r["models"]) >= {"base", "validated (all runs)", "unvalidated (all runs)", "validated-s0"}
    assert r["models"]["base"]["accuracy"] == wilson(10, 20).as_dict()
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["sets"][0]["headline"]["difference"] == r["sets"][0]["headline"]["difference"]
    assert saved["training"]["design"] == "matched"
    (line,) = headline_lines(r)
    assert "validated - unvalidated = +17.5 [" in line and "2 vs 2 runs" in line and "10 families" in line


def test_missing_predictions_and_unpaired_items_are_errors(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    (edir / "predictions" / "unvalidated-s1.jsonl").unlink()
    with pytest.raises(CompareError, match="unvalidated-s1"):
        compare(str(manifest), str(edir), str(tmp_path / "r"))
    _write(edir, "unvalidated-s1", [True] * 5)
    with pytest.raises(CompareError, match="different item sets"):
        compare(str(manifest), str(edir), str(tmp_path / "r"))


def test_compare_command(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    res = CliRunner().invoke(main, ["eval", "compare", "--manifest", str(manifest), "--eval-dir", str(edir),
                                    "--set", "bootstrap.resamples=500"])
    assert res.exit_code == 0, res.output
    assert (edir / "comparison" / "comparison.html").is_file() and "Headline: accuracy validated" in res.output


def test_predictions_carry_the_family_id() -> None:
    """`eval run` writes the item's family_id; an item without one (an external set) is its own family."""
    from eval.records import EvalItem
    from eval.run import to_prediction
    from medcot.records import ChatResult
    result = ChatResult(content="Reasoning.\nAnswer: A", reasoning=None, finish_reason="stop", prompt_tokens=1,
                        completion_tokens=1, latency_s=0.0)
    item = EvalItem(set="test", id="q1", language="en", question="Q?", options={"A": "x", "B": "y"}, answer="A",
                    family_id="fam-7")
    assert to_prediction(item, "m", result, "eval_cot@1").family_id == "fam-7"
    alone = dataclasses.replace(item, family_id=None)
    assert to_prediction(alone, "m", result, "eval_cot@1").family_id == "q1"


def test_report_shows_the_recorded_contamination_check(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    record = {"checked": True, "rule": "neardup@2", "sources": ["store", "release"], "overlaps": [],
              "overlapping_eval_ids": [], "clean": True, "allow_overlap": False}
    (edir / "results.json").write_text(json.dumps({"contamination": record}), encoding="utf-8")
    r = compare(str(manifest), str(edir), str(tmp_path / "report"))
    assert r["contamination"] == record
    assert "Contamination check (neardup@2): 0 eval items overlap store, release." in r["markdown"]

"""Helpers for the eval tests: a tiny release folder (Parquet + README configs), a training manifest and
synthetic predictions, made here so the eval tests depend on no other package's code."""
from __future__ import annotations

import json
from pathlib import Path

import datasets

from eval.records import RUBRIC_DIMENSIONS, JudgeScore, Prediction, write_jsonl

FEATURES = datasets.Features({
    "id": datasets.Value("string"), "family_id": datasets.Value("string"), "language": datasets.Value("string"),
    "question": datasets.Value("string"), "options": {k: datasets.Value("string") for k in "ABCDE"},
    "answer": datasets.ClassLabel(names=list("ABCDE")), "cot": datasets.Value("string"),
    "specialty": datasets.Value("string"),
    "rubric": datasets.List({"round": datasets.Value("int32"), "dimension": datasets.Value("string"),
                             "score": datasets.Value("int32"),
                             "rater_kind": datasets.Value("string"), "rater": datasets.Value("string")}),
})

ITEMS = [
    ("q1", "en", "Which drug is first-line for anaphylaxis?", {"A": "Epinephrine", "B": "Diphenhydramine",
                                                                "C": "Prednisone", "D": "Salbutamol"}, "A", "emergency"),
    ("q2", "en", "Which vitamin deficiency causes scurvy?", {"A": "Vitamin A", "B": "Vitamin B12",
                                                              "C": "Vitamin C", "D": "Vitamin D"}, "C", "nutrition"),
    ("q3", "zh", "缺铁性贫血最常见的原因是", {"A": "慢性失血", "B": "摄入过多", "C": "溶血", "D": "骨髓增生",
                                              "E": "维生素过量"}, "A", "hematology"),
    ("q4", "zh", "急性心肌梗死最早升高的标志物是", {"A": "肌钙蛋白", "B": "肌红蛋白", "C": "乳酸脱氢酶",
                                                  "D": "碱性磷酸酶"}, "B", "cardiology"),
]


def _row(i: int, item: tuple, rubric: list[dict] | None = None) -> dict:
    rid, lang, q, opts, ans, spec = item
    return {"id": rid, "family_id": f"fam-{rid}", "language": lang, "question": q,
            "options": {k: opts.get(k) for k in "ABCDE"}, "answer": "ABCDE".index(ans),
            "cot": f"Reasoning about {q}\nAnswer: {ans}" if lang == "en" else f"分析：{q}\n答案：{ans}",
            "specialty": spec, "rubric": rubric or []}


def expert_rubric(scores: list[int], experts: int = 2) -> list[dict]:
    """Round 2 (the last): `experts` humans give `scores`; round 1 (a CoT since revised) and an automated
    rater give other scores, which judge-expert agreement must ignore."""
    return [{"round": 2, "dimension": d, "score": s, "rater_kind": "human", "rater": f"e{k}"}
            for k in range(experts) for d, s in zip(RUBRIC_DIMENSIONS, scores)] + \
           [{"round": 1, "dimension": d, "score": 0, "rater_kind": "human", "rater": "e0"} for d in RUBRIC_DIMENSIONS] + \
           [{"round": 2, "dimension": d, "score": 2, "rater_kind": "automated", "rater": "llm"} for d in RUBRIC_DIMENSIONS]


def make_release(root: Path, items: list[tuple] = ITEMS) -> Path:
    """A release folder with configs validated (train/test) and panel (test, with expert rubric scores)."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    tables = {
        ("validated", "train"): [_row(0, ("t1", "en", "Train only question?", {"A": "x", "B": "y", "C": "z",
                                                                             "D": "w"}, "B", "misc"))],
        ("validated", "test"): [_row(i, it) for i, it in enumerate(items)],
        ("panel", "test"): [_row(i, it, expert_rubric([2, 1, 1, 2, 0] if i % 2 else [1, 1, 2, 2, 1]))
                            for i, it in enumerate(items)],
    }
    lines = ["---", "configs:"]
    for config in ("validated", "panel"):
        lines += [f"- config_name: {config}"] + (["  default: true"] if config == "validated" else []) + ["  data_files:"]
        for (cfg, split), rows in tables.items():
            if cfg != config:
                continue
            (data / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(data / config / f"{split}.parquet"))
            lines += [f"  - split: {split}", f"    path: data/{config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join(lines + ["---", "# tiny test release", ""]), encoding="utf-8")
    return root


def make_manifest(path: Path, base: str, adapters: dict[str, str], seeds: list[int] = (0,)) -> Path:
    """A training manifest in the shape `medcot train matrix` writes (arm, seed, N, data hash, outputs)."""
    runs = [{"arm": arm, "seed": s, "n": 8, "data_hash": f"sha256:{arm}{s}", "base_model": base,
             "outputs": {"adapter_dir": adapters[f"{arm}-s{s}"], "merged_dir": None}, "metrics": {"train_loss": 1.0}}
            for s in seeds for arm in ("validated", "unvalidated")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=2), encoding="utf-8")
    return path


def prediction(model: str, item_id: str, correct: bool | None, set_name: str = "test", specialty: str = "cardio",
               language: str = "en") -> Prediction:
    """correct=None: no answer."""
    letter = None if correct is None else ("A" if correct else "B")
    return Prediction(set=set_name, id=item_id, model=model, language=language, specialty=specialty,
                      question=f"Question {item_id}?", options={"A": "yes", "B": "no", "C": "maybe", "D": "never"},
                      gold="A", response="Answer: " + (letter or "?"), reasoning=None, finish_reason="stop",
                      prediction=letter, matched_by="final_line" if letter else "none:no_match",
                      correct=bool(correct), prompt_version="eval_cot@1", extractor_version="extract@1")


def write_predictions(eval_dir: Path, model: str, outcomes: list[bool | None], judge: list[int] | None = None,
                      specialties: tuple[str, ...] = ("cardio", "neuro")) -> None:
    preds = [prediction(model, f"i{i}", c, specialty=specialties[i % len(specialties)]) for i, c in enumerate(outcomes)]
    write_jsonl(eval_dir / "predictions" / f"{model}.jsonl", preds)
    if judge is not None:
        scores = [JudgeScore(set="test", id=f"i{i}", model=model, judge="j", prompt_version="eval_judge@1",
                             scores={d: s for d in RUBRIC_DIMENSIONS}) for i, s in enumerate(judge)]
        write_jsonl(eval_dir / "judge" / f"{model}.jsonl", scores)

"""A tiny release folder for the training tests, written independently of dataset_builder.

Parquet per config and split (``Dataset.to_parquet`` keeps the features) + a README whose YAML declares
the configs, i.e. what ``datasets.load_dataset(DIR, "validated")`` needs. The rows are real seed questions
(data/seeds/demo_*.jsonl) whose reference explanations serve as the chain of thought.

The unvalidated config holds the raw first-pass text: item k of every family is the one review left
unchanged (raw CoT == validated CoT), the others are drafts; ``WRONG_RAW`` items' raw CoT ends on another
letter than the key. Families 0-3 exist in both configs (same ids), families 4-5 only raw (items the
experts removed). Matched design: N = 8, identical examples 4 (the k = 0 rows), own answer = key 7/8.
"""
from __future__ import annotations

import json
from pathlib import Path

import datasets

ROOT = Path(__file__).resolve().parent.parent
FEATURES = datasets.Features({
    "id": datasets.Value("string"), "family_id": datasets.Value("string"), "language": datasets.Value("string"),
    "question": datasets.Value("string"), "options": {k: datasets.Value("string") for k in "ABCDE"},
    "answer": datasets.ClassLabel(names=list("ABCDE")), "cot": datasets.Value("string"),
})
# family sizes per config: validated 8 rows in 4 families, unvalidated 12 rows in 6 families
FAMILIES = {"validated": [("zh", 3), ("en", 2), ("zh", 2), ("en", 1)],
            "unvalidated": [("zh", 3), ("en", 2), ("zh", 2), ("en", 1), ("en", 2), ("zh", 2)]}
FINAL = {"zh": "答案：{}", "en": "Answer: {}"}
WRONG_RAW = {"fam0-1"}  # raw CoT argues for another letter than the key
UNCHANGED = 0  # item k == UNCHANGED of each family: review kept the raw CoT as it was


def _seeds(language: str) -> list[dict]:
    path = ROOT / "data" / "seeds" / f"demo_{language}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(rows, key=lambda r: len(r["question"]) + len(r.get("explanation") or ""))


def _row(seed: dict, family: str, arm: str, k: int, max_cot_chars: int) -> dict:
    expl = (seed.get("explanation") or "")[:max_cot_chars]
    rid = f"{family}-{k}"
    cot = expl if arm == "validated" or k == UNCHANGED else f"Draft {k}: {expl}"
    stated = seed["answer"]
    if arm == "unvalidated" and rid in WRONG_RAW:
        stated = next(x for x in "ABCD" if x != seed["answer"])
    return {"id": rid, "family_id": family, "language": seed["language"],
            "question": seed["question"], "options": {x: seed["options"].get(x) for x in "ABCDE"},
            "answer": "ABCDE".index(seed["answer"]), "cot": f"{cot}\n{FINAL[seed['language']].format(stated)}"}


def rows_for(arm: str, max_cot_chars: int = 160) -> list[dict]:
    pools = {"zh": iter(_seeds("zh")), "en": iter(_seeds("en"))}
    rows = []
    for i, (lang, size) in enumerate(FAMILIES[arm]):
        seed = next(pools[lang])
        rows += [_row(seed, f"fam{i}", arm, k, max_cot_chars) for k in range(size)]
    return rows


def write_release(folder: Path, max_cot_chars: int = 160) -> Path:
    """Configs validated/unvalidated, splits train (the rows above) and validation/test (one row each)."""
    lines = ["---", "configs:"]
    for arm in ("validated", "unvalidated"):
        rows = rows_for(arm, max_cot_chars)
        lines += [f"- config_name: {arm}", *(["  default: true"] if arm == "validated" else []), "  data_files:"]
        for split, part in (("train", rows), ("validation", rows[:1]), ("test", rows[-1:])):
            rel = f"{arm}/{split}-00000-of-00001.parquet"
            (folder / arm).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(part, features=FEATURES).to_parquet(str(folder / rel))
            lines += [f"  - split: {split}", f"    path: {rel}"]
    lines += ["---", "# tiny medcot release (training tests)", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return folder

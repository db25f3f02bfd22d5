"""A tiny release folder for the training tests, written independently of dataset_builder.

Parquet per config and split (``Dataset.to_parquet`` keeps the features) + a README whose YAML declares
the configs, i.e. what ``datasets.load_dataset(DIR, "validated")`` needs. The rows are real seed questions
(data/seeds/demo_*.jsonl) whose reference explanations serve as the chain of thought.
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


def _seeds(language: str) -> list[dict]:
    path = ROOT / "data" / "seeds" / f"demo_{language}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(rows, key=lambda r: len(r["question"]) + len(r.get("explanation") or ""))


def _row(seed: dict, family: str, arm: str, k: int, max_cot_chars: int) -> dict:
    expl = (seed.get("explanation") or "")[:max_cot_chars]
    cot = expl if arm == "validated" else f"Draft {k}: {expl}"
    return {"id": f"{family}-{k}", "family_id": family, "language": seed["language"],
            "question": seed["question"], "options": {x: seed["options"].get(x) for x in "ABCDE"},
            "answer": "ABCDE".index(seed["answer"]), "cot": f"{cot}\n{FINAL[seed['language']].format(seed['answer'])}"}


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

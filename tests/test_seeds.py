"""Seed import: every validation rule, errors name file/line/field, nothing written on error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medcot.seeds import SeedError, import_seeds, load_seeds
from medcot.store import Store

REPO = Path(__file__).resolve().parent.parent


def good(i: int, lang: str = "en", **extra: object) -> dict:
    q = f"Which drug is first-line for condition number {i}?" if lang == "en" else f"第{i}号疾病的首选药物是"
    rec = {"id": f"t-{i}", "question": q, "options": {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}", "D": f"d{i}"},
           "answer": "B", "subject": None, "explanation": None, "source": "test", "language": lang}
    rec.update(extra)
    return rec


def write(tmp_path: Path, records: list, name: str = "seeds.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records)
                    + "\n", encoding="utf-8")
    return path


def medcot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcot.cli", *args], cwd=cwd, capture_output=True, text=True)


BAD_CASES = [
    ("missing answer", {"answer": None}, "answer"),
    ("answer not an option", {"answer": "E"}, "answer"),
    ("three options", {"options": {"A": "x", "B": "y", "C": "z"}}, "options"),
    ("six options", {"options": {k: k * 2 for k in "ABCDEF"}}, "options"),
    ("gap in letters", {"options": {"A": "x", "B": "y", "C": "z", "E": "w"}}, "options"),
    ("empty option", {"options": {"A": "x", "B": " ", "C": "z", "D": "w"}}, "options.B"),
    ("duplicate options", {"options": {"A": "Aspirin", "B": "aspirin ", "C": "z", "D": "w"}}, "options"),
    ("empty question", {"question": "  "}, "question"),
    ("bad language", {"language": "fr"}, "language"),
    ("zh without Chinese", {"language": "zh"}, "language"),
    ("unknown field", {"difficulty": 3}, "difficulty"),
    ("options not a mapping", {"options": ["a", "b", "c", "d"]}, "options"),
]


@pytest.mark.parametrize("label,change,field", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_each_rule_names_line_and_field(tmp_path: Path, label: str, change: dict, field: str) -> None:
    records = [good(1), good(2), good(3), good(4)]
    bad = {**records[2], **change}
    records[2] = {k: v for k, v in bad.items() if not (k == "answer" and v is None)}
    store = Store(str(tmp_path / "s.db"))
    with pytest.raises(SeedError) as err:
        import_seeds(write(tmp_path, records), store)
    assert f"seeds.jsonl:3: field '{field}'" in str(err.value), str(err.value)
    assert store.count_items() == 0


def test_duplicates_within_file_and_against_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    dup_q = good(2, id="t-x", question=good(1)["question"].upper())
    with pytest.raises(SeedError) as err:
        import_seeds(write(tmp_path, [good(1), dup_q, good(1)]), store)
    text = str(err.value)
    assert "seeds.jsonl:2: field 'question': duplicate question (same as line 1)" in text
    assert "seeds.jsonl:3: field 'id': duplicate id 't-1'" in text
    assert store.count_items() == 0
    assert import_seeds(write(tmp_path, [good(1)]), store) == 1
    with pytest.raises(SeedError) as err:
        import_seeds(write(tmp_path, [good(5, question=good(1)["question"])], "again.jsonl"), store)
    assert "again.jsonl:1: field 'question': duplicate of stored item 't-1'" in str(err.value)
    with pytest.raises(SeedError, match="already in the store"):
        import_seeds(write(tmp_path, [good(1)], "same.jsonl"), store)
    assert store.count_items() == 1


def test_invalid_json_line_and_csv(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match=r"seeds.jsonl:2: field '\(line\)': invalid JSON"):
        load_seeds(write(tmp_path, [good(1), "{not json"]), None)
    csv_path = tmp_path / "seeds.csv"
    csv_path.write_text("id,question,A,B,C,D,E,answer,language\n"
                        "c1,Which vitamin deficiency causes scurvy?,A,B,Vitamin C,D,,C,en\n"
                        "c2,Which nerve supplies the deltoid?,Axillary,Radial,Ulnar,Median,Musculocutaneous,A,en\n",
                        encoding="utf-8")
    seeds = load_seeds(csv_path, None)
    assert [len(s.options) for s in seeds] == [4, 5] and seeds[0].answer == "C"


def test_cli_line3_missing_answer_then_valid_file(tmp_path: Path) -> None:
    """The issue's acceptance: exit 2 naming line 3 and the field, 0 items; then 5 valid lines -> 5 items."""
    store = str(tmp_path / "acc.db")
    records = [good(i) for i in range(1, 6)]
    del records[2]["answer"]
    proc = medcot("seeds", "import", str(write(tmp_path, records, "bad.jsonl")), "--store", store, cwd=REPO)
    assert proc.returncode == 2
    assert "bad.jsonl:3: field 'answer': missing" in proc.stderr
    status = medcot("status", "--store", store, "--json", cwd=REPO)
    assert json.loads(status.stdout)["items"] == 0
    proc = medcot("seeds", "import", str(write(tmp_path, [good(i) for i in range(1, 6)], "ok.jsonl")),
                  "--store", store, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(medcot("status", "--store", store, "--json", cwd=REPO).stdout)["items"] == 5


def test_bundled_demo_seeds_are_valid() -> None:
    for name in ("demo_zh.jsonl", "demo_en.jsonl"):
        seeds = load_seeds(REPO / "data" / "seeds" / name, None)
        assert len(seeds) == 30
        assert all(s.licence in ("Apache-2.0", "MIT") for s in seeds)

"""`medcot eval extract`: the one extractor as a command; bad input fails cleanly with line numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from medcot.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "extraction.jsonl"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_eval_help_lists_every_command() -> None:
    out = CliRunner().invoke(main, ["eval", "--help"]).output
    for name in ("run", "extract", "compare", "judge", "submit"):
        assert f"  {name} " in out


def test_extract_on_the_labelled_fixtures(tmp_path: Path) -> None:
    """The command over the >=200 labelled fixtures: >= 99% right and never a letter for a no-answer."""
    fixtures = [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(fixtures) >= 200
    src = _write(tmp_path / "in.jsonl", [{"id": f["id"], "response": f["response"], "options": f["options"],
                                          "finish_reason": f["finish_reason"]} for f in fixtures])
    dst = tmp_path / "out.jsonl"
    medcot = str(Path(sys.executable).parent / "medcot")  # the installed console script
    done = subprocess.run([medcot, "eval", "extract", "--input", str(src),
                           "--output", str(dst)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == [f["id"] for f in fixtures]
    assert all(set(o) == {"id", "response", "options", "finish_reason", "answer", "matched_by"} for o in out)
    right = sum(o["answer"] == f["expected"] for o, f in zip(out, fixtures))
    assert right / len(fixtures) >= 0.99
    assert not [f["id"] for o, f in zip(out, fixtures) if f["expected"] is None and o["answer"] is not None]
    assert all(o["matched_by"].startswith("none:") for o in out if o["answer"] is None)
    assert json.loads(done.stdout)["lines"] == len(fixtures)


def test_extract_small_file_keeps_ids_and_options_forms(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [
        {"id": 7, "response": "Reasoning...\nAnswer: C", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}},
        {"id": "x-2", "response": "答案：B", "options": ["A", "B", "C", "D", "E"]},
        {"id": "x-3", "response": "It is either A or B.", "options": ["A", "B", "C", "D"]},
        {"id": "x-4", "response": "Answer: B", "options": ["A", "B", "C", "D"], "finish_reason": "length"},
        {"id": "x-5", "response": None, "options": ["A", "B"]},
    ])
    dst = tmp_path / "out.jsonl"
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(src), "--output", str(dst)])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [(o["id"], o["answer"]) for o in out] == [(7, "C"), ("x-2", "B"), ("x-3", None), ("x-4", None), ("x-5", None)]
    assert [o["matched_by"] for o in out][2:] == ["none:hedge", "none:truncated", "none:empty"]


def test_bad_lines_exit_2_with_line_numbers_and_write_nothing(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [
        {"id": "ok", "response": "Answer: A", "options": ["A", "B"]},
        "{not json",
        {"id": "no-options", "response": "Answer: A"},
        "",
        {"id": "bad-letter", "response": "x", "options": {"A": "a", "Z": "z"}},
        {"response": "Answer: A", "options": ["A"]},
        {"id": "ok2", "response": "Answer: A", "options": ["A", "B"], "answer": "A"},
    ])
    dst = tmp_path / "out.jsonl"
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(src), "--output", str(dst)])
    assert res.exit_code == 2
    for n in (2, 3, 5, 6, 7):
        assert f"line {n}:" in res.output
    assert "line 1:" not in res.output and "line 4:" not in res.output
    assert "invalid JSON" in res.output and "'options'" in res.output and "'id'" in res.output
    assert "input field 'answer' is where the output puts the extraction" in res.output
    assert not dst.exists() and not list(tmp_path.glob("out.jsonl*"))


def test_extra_fields_pass_through_and_structured_answers(tmp_path: Path) -> None:
    meta = {"gold": "C", "model": "m1", "meta": {"specialty": "cardio", "tags": [1, 2]}}
    src = _write(tmp_path / "in.jsonl", [
        {"id": "j1", "response": '{"answer": "C"}', "options": ["A", "B", "C", "D"], **meta},
        {"id": "j2", "response": '```json\n{"reasoning": "...", "final_answer": "B"}\n```', "options": ["A", "B"]},
        {"id": "j3", "response": '{"reasoning": "no answer field"}', "options": ["A", "B"], "answer": "A"},
    ])
    dst = tmp_path / "out.jsonl"
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(src), "--output", str(dst),
                                    "--answer-field", "extracted"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert {k: out[0][k] for k in meta} == meta and out[0]["options"] == ["A", "B", "C", "D"]
    assert [o["extracted"] for o in out] == ["C", "B", None] and out[2]["answer"] == "A"  # the input's own kept
    assert [o["matched_by"] for o in out] == ["structured_json", "structured_json", "none:no_answer_field"]
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(src), "--output", str(dst),
                                    "--answer-field", "response"])
    assert res.exit_code == 2 and "must be a new field name" in res.output


def test_duplicate_ids_and_missing_file(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [{"id": "a", "response": "A", "options": ["A"]},
                                         {"id": "a", "response": "A", "options": ["A"]}])
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(src), "--output", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "duplicate id" in res.output
    res = CliRunner().invoke(main, ["eval", "extract", "--input", str(tmp_path / "nope.jsonl"),
                                    "--output", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output

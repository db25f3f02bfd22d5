"""Leaderboard export: MedBench-style zip and generic JSONL, validated against the schemas in eval/schemas."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import prediction

from eval.records import write_jsonl
from eval.schema_check import SchemaError, load_schema, validate
from eval.submit import build_submission, medbench_line
from medcot.cli import main


def _preds() -> list:
    return [prediction("m", "i1", True), prediction("m", "i2", None),
            prediction("m", "z1", False, set_name="ext", language="zh")]


def test_medbench_zip_one_file_per_set_and_schema_valid(tmp_path: Path) -> None:
    res = build_submission(_preds(), "medbench", tmp_path / "sub.zip")
    assert res["files"] == {"ext.jsonl": 1, "test.jsonl": 2} and res["no_answer"] == 1
    schema = load_schema("medbench")
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["ext.jsonl", "test.jsonl"]
        lines = [json.loads(x) for x in zf.read("test.jsonl").decode().splitlines()]
    for line in lines:
        validate(line, schema)
        assert set(line) == {"question", "options", "answer", "other"} and set(line["other"]) == {"id", "medcot"}
    assert [x["answer"] for x in lines] == ["A", ""]          # no answer is "", never a guessed letter
    ours = lines[1]["other"]["medcot"]
    assert ours["no_answer"] is True and ours["matched_by"] == "none:no_match"


def test_generic_jsonl_is_schema_valid(tmp_path: Path) -> None:
    build_submission(_preds(), "jsonl", tmp_path / "p.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    for row in rows:
        validate(row, load_schema("predictions"))
    assert [r["prediction"] for r in rows] == ["A", None, "B"]


@pytest.mark.parametrize("mutate,where", [
    (lambda r: r.update(answer="F"), "$.answer"),
    (lambda r: r.update(answer="AB"), "$.answer"),
    (lambda r: r["options"].update(F="x"), "property name 'F'"),
    (lambda r: r.pop("question"), "question"),
    (lambda r: r["other"]["medcot"].update(extra=1), "extra"),
    (lambda r: r["other"]["medcot"].update(no_answer="no"), "$.other.medcot.no_answer"),
    (lambda r: r["other"].pop("medcot"), "medcot"),
])
def test_schema_rejects_bad_lines(mutate, where: str) -> None:
    line = medbench_line(prediction("m", "i1", True))
    mutate(line)
    with pytest.raises(SchemaError, match=None) as err:
        validate(line, load_schema("medbench"))
    assert where in str(err.value)


def test_validator_refuses_unknown_schema_keywords() -> None:
    with pytest.raises(ValueError, match="unsupported keyword"):
        validate({}, {"type": "object", "oneOf": []})


def test_invalid_prediction_is_refused_and_nothing_written(tmp_path: Path) -> None:
    bad = prediction("m", "i1", True)
    bad.prediction = "Z"
    with pytest.raises(SchemaError, match="line 1"):
        build_submission([bad], "jsonl", tmp_path / "p.jsonl")
    assert not list(tmp_path.iterdir())


def test_submit_command(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "pred.jsonl", _preds())
    res = CliRunner().invoke(main, ["eval", "submit", "--predictions", str(src), "--format", "medbench",
                                    "--output", str(tmp_path / "out" / "m.zip")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["files"] == {"ext.jsonl": 1, "test.jsonl": 2}
    two = _preds() + [prediction("other", "i9", True)]
    src2 = write_jsonl(tmp_path / "two.jsonl", two)
    res = CliRunner().invoke(main, ["eval", "submit", "--predictions", str(src2), "--format", "jsonl",
                                    "--output", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "one model" in res.output


@pytest.mark.parametrize("fmt,name", [("medbench", "sub.jsonl"), ("medbench", "sub"), ("jsonl", "p.zip")])
def test_output_name_is_what_was_asked_or_an_error(tmp_path: Path, fmt: str, name: str) -> None:
    with pytest.raises(ValueError, match="name it"):
        build_submission(_preds(), fmt, tmp_path / name)
    assert not list(tmp_path.iterdir())
    src = write_jsonl(tmp_path / "pred.jsonl", _preds())
    res = CliRunner().invoke(main, ["eval", "submit", "--predictions", str(src), "--format", fmt,
                                    "--output", str(tmp_path / name)])
    assert res.exit_code == 2 and "name it" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.jsonl"]

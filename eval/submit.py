"""`medcot eval submit --predictions P.jsonl --format medbench|jsonl --output OUT`: leaderboard export.

- medbench: the MedBench submission layout (a zip holding one JSONL file per eval set, each named after the
  test file the set was read from, e.g. `MedExam.jsonl`; every line is that test file's line as it was, with
  `answer` filled in). `answer` is the extracted letter, or "" for no answer (never a guess). Upstream fields,
  `other` included, are kept as they were; medcot's own fields go under one key, `other.medcot` (id, set,
  model, no_answer, matched_by, the extractor version, the response). The release's own test split has no
  upstream file: its lines are {question, options, answer, other: {id, medcot}} in `<set>.jsonl`.
- jsonl: the generic predictions JSONL (id, set, model, prediction letter or null, matched_by, gold, ...).
The output is written under the name asked for, which must end in `.zip` (medbench) or `.jsonl` (jsonl).
Every line is validated against the JSON schema in eval/schemas/ before anything is written.
"""
from __future__ import annotations

import copy
import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.records import Prediction, read_records
from eval.schema_check import SchemaError, load_schema, validate

FORMATS = ("medbench", "jsonl")
SUFFIX = {"medbench": ".zip", "jsonl": ".jsonl"}
_GENERIC = ("id", "set", "source", "model", "language", "specialty", "prediction", "matched_by", "gold", "correct",
            "response", "finish_reason", "prompt_version", "extractor_version")


def medbench_line(p: Prediction) -> dict[str, Any]:
    """The upstream line with the model's answer (or the release item as a MedBench line), medcot's fields under
    other.medcot."""
    ours = {"id": p.id, "set": p.set, "source": p.source, "model": p.model, "language": p.language,
            "no_answer": p.prediction is None, "matched_by": p.matched_by,
            "extractor_version": p.extractor_version, "response": p.response}
    if p.upstream is None:
        return {"question": p.question, "options": dict(sorted(p.options.items())), "answer": p.prediction or "",
                "other": {"id": p.id, "medcot": ours}}
    line = copy.deepcopy(p.upstream)
    other = line.get("other") if isinstance(line.get("other"), dict) else {}
    if "medcot" in other:
        raise ValueError(f"{p.source}: item {p.id!r} already has an `other.medcot` field; medcot's fields go there")
    line["answer"] = p.prediction or ""
    line["other"] = {**other, "medcot": ours}
    return line


def entry_name(p: Prediction) -> str:
    """The zip entry of a prediction's set: its source file's name (the release split: `<set>.jsonl`)."""
    return Path(p.source).with_suffix(".jsonl").name if p.source else f"{p.set}.jsonl"


def generic_line(p: Prediction) -> dict[str, Any]:
    return {k: getattr(p, k) for k in _GENERIC}


def _validated(lines: list[dict[str, Any]], schema_name: str) -> list[dict[str, Any]]:
    schema = load_schema(schema_name)
    for i, line in enumerate(lines, start=1):
        try:
            validate(line, schema)
        except SchemaError as exc:
            raise SchemaError(f"submission line {i} (id {_line_id(line)!r}) "
                              f"breaks {schema_name}.schema.json: {exc}") from exc
    return lines


def _line_id(line: dict[str, Any]) -> Any:
    other = line.get("other") if isinstance(line.get("other"), dict) else {}
    ours = other.get("medcot") if isinstance(other.get("medcot"), dict) else {}
    return line.get("id", ours.get("id", other.get("id")))


def _jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def build_submission(preds: list[Prediction], fmt: str, output: Path) -> dict[str, Any]:
    """Write the submission (atomically) and return what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if output.suffix.lower() != SUFFIX[fmt]:
        raise ValueError(f"--output {output}: a {fmt} submission is a {SUFFIX[fmt]} file; name it "
                         f"{output.with_suffix(SUFFIX[fmt]).name}")
    if not preds:
        raise ValueError("no predictions to submit")
    models = sorted({p.model for p in preds})
    if len(models) > 1:
        raise ValueError(f"a submission is for one model; the predictions hold {models}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    if fmt == "jsonl":
        tmp.write_text(_jsonl(_validated([generic_line(p) for p in preds], "predictions")), encoding="utf-8")
        files = {output.name: len(preds)}
    else:
        by_set = _by_entry(preds)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, group in sorted(by_set.items()):
                zf.writestr(name, _jsonl(_validated([medbench_line(p) for p in group], "medbench")))
        tmp.write_bytes(buf.getvalue())
        files = {name: len(group) for name, group in sorted(by_set.items())}
    tmp.replace(output)
    return {"output": str(output), "format": fmt, "model": models[0], "files": files,
            "no_answer": sum(p.prediction is None for p in preds)}


def _by_entry(preds: list[Prediction]) -> dict[str, list[Prediction]]:
    """Zip entry name -> its predictions; two sets read from files of the same name are refused."""
    by_entry: dict[str, list[Prediction]] = defaultdict(list)
    sets: dict[str, set[str]] = defaultdict(set)
    for p in preds:
        by_entry[entry_name(p)].append(p)
        sets[entry_name(p)].add(p.set)
    clash = {name: sorted(s) for name, s in sets.items() if len(s) > 1}
    if clash:
        raise ValueError(f"sets {clash} would share a file name in the zip: rename one source file")
    return by_entry


def submit(predictions: Path, fmt: str, output: Path) -> dict[str, Any]:
    return build_submission(read_records(predictions, Prediction), fmt, output)

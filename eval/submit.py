"""`medcot eval submit --predictions P.jsonl --format medbench|jsonl --output OUT`: leaderboard export.

- medbench: a zip with one JSONL file per eval set; each line {question, options, answer, other}, where
  `answer` is the extracted letter or "" for no answer (never a guess) and `other` carries id, model,
  no_answer, matched_by and the extractor version.
- jsonl: the generic predictions JSONL (id, set, model, prediction letter or null, matched_by, gold, ...).
Every line is validated against the JSON schema in eval/schemas/ before anything is written.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.records import Prediction, read_records
from eval.schema_check import SchemaError, load_schema, validate

FORMATS = ("medbench", "jsonl")
_GENERIC = ("id", "set", "model", "language", "specialty", "prediction", "matched_by", "gold", "correct",
            "response", "finish_reason", "prompt_version", "extractor_version")


def medbench_line(p: Prediction) -> dict[str, Any]:
    return {"question": p.question, "options": dict(sorted(p.options.items())), "answer": p.prediction or "",
            "other": {"id": p.id, "set": p.set, "model": p.model, "language": p.language,
                      "no_answer": p.prediction is None, "matched_by": p.matched_by,
                      "extractor_version": p.extractor_version, "response": p.response}}


def generic_line(p: Prediction) -> dict[str, Any]:
    return {k: getattr(p, k) for k in _GENERIC}


def _validated(lines: list[dict[str, Any]], schema_name: str) -> list[dict[str, Any]]:
    schema = load_schema(schema_name)
    for i, line in enumerate(lines, start=1):
        try:
            validate(line, schema)
        except SchemaError as exc:
            raise SchemaError(f"submission line {i} (id {line.get('id', line.get('other', {}).get('id'))!r}) "
                              f"breaks {schema_name}.schema.json: {exc}") from exc
    return lines


def _jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def build_submission(preds: list[Prediction], fmt: str, output: Path) -> dict[str, Any]:
    """Write the submission (atomically) and return what was written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
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
        by_set: dict[str, list[Prediction]] = defaultdict(list)
        for p in preds:
            by_set[p.set].append(p)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, group in sorted(by_set.items()):
                zf.writestr(f"{name}.jsonl", _jsonl(_validated([medbench_line(p) for p in group], "medbench")))
        tmp.write_bytes(buf.getvalue())
        files = {f"{name}.jsonl": len(group) for name, group in sorted(by_set.items())}
    tmp.replace(output)
    return {"output": str(output), "format": fmt, "model": models[0], "files": files,
            "no_answer": sum(p.prediction is None for p in preds)}


def submit(predictions: Path, fmt: str, output: Path) -> dict[str, Any]:
    return build_submission(read_records(predictions, Prediction), fmt, output)

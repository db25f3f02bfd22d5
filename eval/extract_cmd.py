"""`medcot eval extract --input IN.jsonl --output OUT.jsonl`: the project's one answer extractor as a command.

Each input line: {"id": ..., "response": str|null, "options": {"A": text, ...} or ["A", "B", ...]} and
optionally "finish_reason"; any other fields (gold answers, metadata ...) are passed through unchanged. Each
output line: the input line plus the extracted letter (or null) under `answer` (`--answer-field` renames it)
and `matched_by`. An input field of those names is an error, never overwritten. Every line is checked before
anything is written: one bad line and the command fails naming it, with no output file.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.records import write_jsonl
from medcot.extract import EXTRACTOR_VERSION, extract_answer
from medcot.records import LETTERS

_FIELDS = {"id", "response", "options", "finish_reason"}
MATCHED_BY = "matched_by"


@dataclass(slots=True)
class ExtractInput:
    id: Any
    response: str | None
    options: dict[str, str] | list[str]
    finish_reason: str | None = None
    raw: dict[str, Any] | None = None  # the whole input line (its extra fields go to the output)


class ExtractInputError(ValueError):
    """Bad input lines: every problem with its line number."""


def _check(raw: Any, n: int, answer_field: str = "answer") -> tuple[ExtractInput | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"line {n}: must be a JSON object"]
    problems = [f"line {n}: input field {k!r} is where the output puts the extraction; rename it or pass "
                f"--answer-field OTHER_NAME" for k in (answer_field, MATCHED_BY) if k in raw]
    if not isinstance(raw.get("id"), (str, int)) or isinstance(raw.get("id"), bool) or raw.get("id") == "":
        problems.append(f"line {n}: 'id' must be a non-empty string or an integer")
    if "response" not in raw or not isinstance(raw["response"], (str, type(None))):
        problems.append(f"line {n}: 'response' must be a string or null")
    options = raw.get("options")
    keys = list(options) if isinstance(options, (dict, list)) else []
    if not keys or any(not isinstance(k, str) or k not in LETTERS for k in keys) or \
            (isinstance(options, dict) and any(not isinstance(v, str) for v in options.values())):
        problems.append(f"line {n}: 'options' must be a non-empty object letter->text (or list of letters) "
                        f"with letters from {LETTERS}")
    if not isinstance(raw.get("finish_reason"), (str, type(None))):
        problems.append(f"line {n}: 'finish_reason' must be a string or null")
    if problems:
        return None, problems
    return ExtractInput(raw["id"], raw["response"], options, raw.get("finish_reason"), raw), []


def read_inputs(path: Path, answer_field: str = "answer") -> list[ExtractInput]:
    rows, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        row, bad = _check(raw, n, answer_field)
        problems += bad
        if row is not None:
            rows.append(row)
    dup = sorted(str(i) for i, c in Counter(r.id for r in rows).items() if c > 1)
    if dup:
        problems.append(f"duplicate id(s): {', '.join(dup[:10])}")
    if problems:
        raise ExtractInputError(f"{path}: " + f"\n{path}: ".join(problems[:50]))
    return rows


def extract_file(src: Path, dst: Path, answer_field: str = "answer") -> dict[str, Any]:
    """Extract every line of src into dst; returns counts (lines, answered, no_answer, matched_by)."""
    if not answer_field or answer_field in _FIELDS | {MATCHED_BY}:
        raise ExtractInputError(f"--answer-field {answer_field!r}: must be a new field name")
    rows = read_inputs(src, answer_field)
    out, counts = [], {}
    for r in rows:
        found = extract_answer(r.response, r.options, finish_reason=r.finish_reason)
        out.append({**(r.raw or {"id": r.id}), answer_field: found.letter, MATCHED_BY: found.matched_by})
        counts[found.matched_by] = counts.get(found.matched_by, 0) + 1
    write_jsonl(dst, out)
    answered = sum(1 for o in out if o[answer_field] is not None)
    return {"lines": len(out), "answered": answered, "no_answer": len(out) - answered,
            "extractor_version": EXTRACTOR_VERSION, "matched_by": dict(sorted(counts.items()))}

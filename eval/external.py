"""External eval sets: a JSONL/CSV file of multiple-choice questions, in medcot's seed schema or as a
leaderboard ships it (MedBench-style: `question`, `options` or options written into the question, an
`answer` that a test file leaves out, and an `other` object of upstream fields).

A set either has an answer on every line (it is scored) or on none (a submission only, no accuracy); a file
with some answers missing is an error, since a silently smaller denominator would change the accuracy. The
line is kept as it was (`EvalItem.upstream`) so that a submission gives it back with only `answer` filled in.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from eval.config import ExternalSet
from eval.records import EvalItem
from medcot.records import LANGUAGES, LETTERS
from medcot.seeds import SeedError, SeedIssue, check_language, check_options, derived_id, read_records

# "A. text" / "A、text" / "(A) text" / "A：text" at the start of a line of the question
_OPTION_LINE = re.compile(r"^\s*[(（]?([A-E])[)）]?\s*[.、．:：)）]\s*(\S.*?)\s*$")


def split_embedded_options(question: str) -> tuple[str, dict[str, str]]:
    """(stem, options) of a question that lists its options on lines of its own; ({} when it does not)."""
    lines = question.splitlines()
    options: dict[str, str] = {}
    first = None
    for i, line in enumerate(lines):
        m = _OPTION_LINE.match(line)
        if m and m.group(1) == LETTERS[len(options)]:
            first = i if first is None else first
            options[m.group(1)] = m.group(2)
        elif options:
            return question, {}  # text after the options: not a plain option list
    if first is None or len(options) < 2:
        return question, {}
    return "\n".join(lines[:first]).strip(), options


def _answer(raw: dict[str, Any], options: dict[str, str], bad: Any) -> str | None:
    value = raw.get("answer")
    if value in (None, ""):
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or value.strip().upper() not in options:
        bad("answer", f"{value!r} is not one of the options {sorted(options)}")
        return None
    return value.strip().upper()


def _item(raw: Any, ext: ExternalSet, path: str, line: int, issues: list[SeedIssue]) -> EvalItem | None:
    if isinstance(raw, SeedIssue):
        issues.append(raw)
        return None
    if not isinstance(raw, dict):
        issues.append(SeedIssue(path, line, "(line)", "must be a JSON object"))
        return None
    start = len(issues)

    def bad(field: str, message: str) -> None:
        issues.append(SeedIssue(path, line, field, message))

    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        bad("question", "missing or empty")
        return None
    stem = question.strip()
    if raw.get("options") is not None:
        options = check_options(raw["options"], bad)
    else:
        stem, options = split_embedded_options(stem)
        if not options:
            bad("options", "missing, and the question does not list its options on lines 'A. ...', 'B. ...'")
    other = raw.get("other")
    if other is not None and not isinstance(other, dict):
        bad("other", "must be a JSON object")
    language = raw.get("language", ext.language)
    if language is None:
        bad("language", f"missing (set `language: zh|en` on external set {ext.name!r} for files without it)")
    else:
        check_language(language, stem, bad)
    if not options or len(issues) > start:
        return None
    answer = _answer(raw, options, bad)
    item_id = raw.get("id") if raw.get("id") is not None else (other or {}).get("id")
    item_id = str(item_id).strip() if item_id is not None and str(item_id).strip() else derived_id(stem)
    specialty = raw.get("specialty") or raw.get("subject")
    return EvalItem(set=ext.name, id=item_id, language=language if language in LANGUAGES else "", question=stem,
                    options=options, answer=answer, specialty=specialty if isinstance(specialty, str) else None,
                    family_id=item_id, source=Path(path).name, upstream=raw)


def load_external(ext: ExternalSet) -> list[EvalItem]:
    """Every item of one external set (after offset/limit); SeedError lists every problem (file, line, field)."""
    path = Path(ext.path)
    if not path.is_file():
        raise SeedError([SeedIssue(str(path), 0, "(file)", f"no such file (external set {ext.name!r})")])
    issues: list[SeedIssue] = []
    rows = [(line, _item(raw, ext, str(path), line, issues)) for line, raw in read_records(path)]
    items = [(line, item) for line, item in rows if item is not None]
    _check_ids(items, str(path), issues)
    _check_labels(items, str(path), issues)
    if issues:
        raise SeedError(issues)
    kept = [item for _, item in items][ext.offset:]
    return kept[:ext.limit] if ext.limit is not None else kept


def _check_ids(items: list[tuple[int, EvalItem]], path: str, issues: list[SeedIssue]) -> None:
    seen: dict[str, int] = {}
    for line, item in items:
        if item.id in seen:
            issues.append(SeedIssue(path, line, "id", f"duplicate id {item.id!r} (also line {seen[item.id]})"))
        seen.setdefault(item.id, line)


def _check_labels(items: list[tuple[int, EvalItem]], path: str, issues: list[SeedIssue]) -> None:
    """All lines answered, or none: a partly labelled set is refused."""
    missing = [line for line, item in items if item.answer is None]
    if missing and len(missing) < len(items):
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        issues.append(SeedIssue(path, missing[0], "answer", f"missing on {len(missing)} of {len(items)} lines "
                                f"(lines {shown}): a set is scored when every line has an answer, or is a "
                                "submission-only set when none has"))

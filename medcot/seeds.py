"""Seed import: JSONL (the schema of shared/data) or CSV, every field validated, all or nothing."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcot.records import LANGUAGES, LETTERS, Item, Seed
from medcot.store import Store, normalize_text

REQUIRED = ("question", "options", "answer", "language")
OPTIONAL = ("id", "subject", "explanation", "source", "licence")
_CJK = re.compile(r"[\u3400-\u9fff]")
KNOWN_LICENCES = {"cmexam": "Apache-2.0", "medmcqa": "MIT"}


@dataclass(slots=True)
class SeedIssue:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field '{self.field}': {self.message}"


class SeedError(ValueError):
    def __init__(self, issues: list[SeedIssue]):
        self.issues = issues
        more = f"\n... and {len(issues) - 20} more" if len(issues) > 20 else ""
        super().__init__("\n".join(str(i) for i in issues[:20]) + more)


def read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, raw record) pairs; line numbers are 1-based lines of the file."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    out: list[tuple[int, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((n, SeedIssue(str(path), n, "(line)", f"invalid JSON: {exc.msg} at column {exc.colno}")))
    return out


def _read_csv(path: Path) -> list[tuple[int, Any]]:
    """CSV columns: question, A..E (option texts), answer, language, and the optional fields."""
    out: list[tuple[int, Any]] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            line = reader.line_num
            record: dict[str, Any] = {k: v for k, v in row.items() if k not in LETTERS and v not in (None, "")}
            record["options"] = {k: row[k] for k in LETTERS if k in row and row[k] not in (None, "")}
            out.append((line, record))
    return out


def validate_record(raw: Any, path: str, line: int) -> tuple[Seed | None, list[SeedIssue]]:
    if isinstance(raw, SeedIssue):
        return None, [raw]
    if not isinstance(raw, dict):
        return None, [SeedIssue(path, line, "(line)", "must be a JSON object")]
    issues: list[SeedIssue] = []

    def bad(field: str, message: str) -> None:
        issues.append(SeedIssue(path, line, field, message))

    for key in sorted(set(raw) - set(REQUIRED) - set(OPTIONAL)):
        bad(key, f"unknown field (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in raw or raw[key] is None:
            bad(key, "missing")
    question, options, answer, language = (raw.get(k) for k in REQUIRED)
    if "question" in raw and (not isinstance(question, str) or not question.strip()):
        bad("question", "must be a non-empty string")
    options = check_options(options, bad) if "options" in raw else None
    if "answer" in raw and options is not None:
        if not isinstance(answer, str) or answer.strip().upper() not in options:
            bad("answer", f"{answer!r} is not one of the options {sorted(options)}")
    if "language" in raw:
        check_language(language, question, bad)
    for key in ("id", "subject", "explanation", "source", "licence"):
        if raw.get(key) is not None and (not isinstance(raw[key], str) or not raw[key].strip()):
            bad(key, "must be null or a non-empty string")
    if issues:
        return None, issues
    seed = Seed(id=(raw.get("id") or derived_id(question)).strip(), question=question.strip(), options=options,
                answer=answer.strip().upper(), language=language, subject=raw.get("subject"),
                explanation=raw.get("explanation"), source=raw.get("source") or "",
                licence=raw.get("licence") or _known_licence(raw.get("id") or ""))
    return seed, []


def check_options(options: Any, bad: Any) -> dict[str, str] | None:
    if not isinstance(options, dict):
        bad("options", "must be an object of letter -> text")
        return None
    keys = sorted(options)
    if keys not in (list("ABCD"), list("ABCDE")):
        bad("options", f"letters must be exactly A-D or A-E, got {keys}")
        return None
    texts = {}
    for letter in keys:
        text = options[letter]
        if not isinstance(text, str) or not text.strip():
            bad(f"options.{letter}", "must be a non-empty string")
            return None
        texts[letter] = text.strip()
    norms = [normalize_text(t) for t in texts.values()]
    if len(set(norms)) != len(norms):
        dup = sorted(k for k, t in texts.items() if norms.count(normalize_text(t)) > 1)
        bad("options", f"duplicate option texts: {', '.join(dup)}")
        return None
    return texts


def check_language(language: Any, question: Any, bad: Any) -> None:
    if language not in LANGUAGES:
        bad("language", f"must be one of {list(LANGUAGES)}, got {language!r}")
    elif isinstance(question, str) and question.strip():
        cjk = len(_CJK.findall(question)) / max(1, len(question.strip()))
        if language == "zh" and cjk == 0:
            bad("language", "is 'zh' but the question has no Chinese characters")
        if language == "en" and cjk > 0.3:
            bad("language", "is 'en' but the question is mostly Chinese")


def derived_id(question: str) -> str:
    return "seed-" + hashlib.sha256(normalize_text(question).encode()).hexdigest()[:12]


def _known_licence(seed_id: str) -> str | None:
    prefix = seed_id.split("-", 1)[0].lower()
    return KNOWN_LICENCES.get(prefix)


def read_id_list(path: Path) -> set[str]:
    """The ids an `exclude` file names: a .txt file (one id a line; blank lines and '#' comments ignored)
    or a seed JSONL/CSV file (the `id` of each record)."""
    if not path.is_file():
        raise SeedError([SeedIssue(str(path), 0, "(file)", "no such file (seeds.exclude)")])
    if path.suffix.lower() == ".txt":
        lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
        return {line for line in lines if line}
    ids, issues = set(), []
    for line, raw in read_records(path):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"].strip():
            issues.append(SeedIssue(str(path), line, "id", "an exclude file needs a non-empty string id per record"))
            continue
        ids.add(raw["id"].strip())
    if issues:
        raise SeedError(issues)
    return ids


def excluded_ids(paths: Iterable[str | Path]) -> set[str]:
    """The union of the ids named by every `seeds.exclude` file."""
    return set().union(*(read_id_list(Path(p)) for p in paths))


def load_seeds(path: Path, store: Store | None, limit: int | None = None,
               skip_existing: bool = False, exclude: Collection[str] = ()) -> list[Seed]:
    """Validate a whole file; return its first `limit` seeds (all by default).
    Raises SeedError listing every problem (file, line, field).
    skip_existing: seeds whose id is already in the store are left out instead of being errors
    (used by `medcot run`, which re-imports its configured files on every run).
    exclude: ids never imported (held-out eval items); they are validated with the file but left out
    before `limit` applies."""
    p = str(path)
    if not path.is_file():
        raise SeedError([SeedIssue(p, 0, "(file)", "no such file")])
    issues: list[SeedIssue] = []
    seeds: list[tuple[int, Seed]] = []
    seen_ids: dict[str, int] = {}
    seen_q: dict[str, int] = {}
    for line, raw in read_records(path):
        seed, problems = validate_record(raw, p, line)
        issues += problems
        if seed is None:
            continue
        norm = normalize_text(seed.question)
        if seed.id in seen_ids:
            issues.append(SeedIssue(p, line, "id", f"duplicate id {seed.id!r} (also line {seen_ids[seed.id]})"))
        if norm in seen_q:
            issues.append(SeedIssue(p, line, "question", f"duplicate question (same as line {seen_q[norm]})"))
        seen_ids.setdefault(seed.id, line)
        seen_q.setdefault(norm, line)
        if seed.id not in exclude:
            seeds.append((line, seed))
    if not issues and store is not None:
        seeds = _against_store(seeds[:limit], store, p, skip_existing, issues)
    if issues:
        raise SeedError(issues)
    return [s for _, s in seeds[:limit]]


def _against_store(seeds: list[tuple[int, Seed]], store: Store, path: str, skip_existing: bool,
                   issues: list[SeedIssue]) -> list[tuple[int, Seed]]:
    known_q = store.existing_questions()
    known_ids = store.existing_ids()
    kept = []
    for line, seed in seeds:
        if seed.id in known_ids:
            if not skip_existing:
                issues.append(SeedIssue(path, line, "id", f"id {seed.id!r} is already in the store"))
            continue
        other = known_q.get(normalize_text(seed.question))
        if other is not None:
            issues.append(SeedIssue(path, line, "question", f"duplicate of stored item {other!r}"))
        kept.append((line, seed))
    return kept


def import_seeds(path: Path, store: Store, limit: int | None = None, skip_existing: bool = False,
                 exclude: Collection[str] = ()) -> int:
    """Validate, then write all seeds (but the `exclude`d ids) in one transaction. On any error nothing is written."""
    seeds = load_seeds(path, store, limit=limit, skip_existing=skip_existing, exclude=exclude)
    return store.add_items(Item.from_seed(s) for s in seeds)

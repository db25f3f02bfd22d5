"""`medcot curate import-cot FILE`: items that already have a chain of thought (MedReason- or HuatuoGPT-style
data) enter the expert review flow without being regenerated.

The file is JSONL, one object a line: the seed fields of `medcot.seeds` with `id` required here, plus `cot`
(required, a non-empty string), `reasoning` (optional: the model's thinking, kept apart as for generated CoTs)
and `model` (optional: who wrote the CoT). The seed fields obey the seed importer's rules; every problem is
reported as `file:line: field 'name': reason`. The whole file is validated first (duplicate ids and questions
in the file or already in the store are errors) and then written in ONE transaction: on any error nothing is.

What each line becomes:
- the item: origin "seed", its own family, stage "generated" (where generated items wait for the initial
  review and five-strike, so `medcot run`, `medcot curate strikes` and the review app take it from there);
- its CoT as the initial generation (purpose "initial", revision 0), text normalised like every stored field
  (`normalize_newlines`). No LLM call of ours made it: `call_id` is None and `prompt_version` is
  "imported@1+<extractor version>". The answer letter is the project extractor's (None when it finds none:
  counted, never guessed), compared with the key like a generated CoT's;
- an "imported" event (stage "import-cot") with the provenance: file, line, model (from the file, else
  "imported") and source.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from curation.generate import parse_cot
from medcot.db import EventRow, GenerationRow, ItemRow
from medcot.extract import EXTRACTOR_VERSION
from medcot.records import Event, Generation, Item
from medcot.revision import normalize_newlines
from medcot.seeds import OPTIONAL, REQUIRED, SeedError, SeedIssue, read_records, validate_record
from medcot.store import Store, normalize_text

STAGE = "import-cot"
IMPORT_VERSION = "imported@1"
PROMPT_VERSION = f"{IMPORT_VERSION}+{EXTRACTOR_VERSION}"  # how generated CoTs name prompt + extractor
UNKNOWN_MODEL = "imported"  # the recorded model when the file names none
SEED_FIELDS = REQUIRED + OPTIONAL
COT_FIELDS = ("cot", "reasoning", "model")
ALLOWED_FIELDS = SEED_FIELDS + COT_FIELDS
MAX_ID_LENGTH = 200  # width of the items.id column


@dataclass(slots=True)
class ImportedCot:
    """One valid line: the item, its initial CoT and where it came from."""

    line: int
    item: Item
    generation: Generation
    model: str


@dataclass
class ImportCotSummary:
    imported: int = 0
    agree_with_key: int = 0
    disagree_with_key: int = 0
    no_answer: int = 0
    matched_by: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)

    def line(self, path: Path, store_url: str) -> str:
        return (f"imported {self.imported} items from {path} into {store_url} (stage generated; extracted answer: "
                f"{self.agree_with_key} agree with the key, {self.disagree_with_key} disagree, "
                f"{self.no_answer} no answer)")


def validate_line(raw: Any, path: str, line: int) -> tuple[ImportedCot | None, list[SeedIssue]]:
    """One line checked: the seed importer's rules on the seed fields, then id, cot, reasoning and model."""
    if isinstance(raw, SeedIssue):
        return None, [raw]
    if not isinstance(raw, dict):
        return None, [SeedIssue(path, line, "(line)", "must be a JSON object")]
    issues = [SeedIssue(path, line, key, f"unknown field (allowed: {', '.join(ALLOWED_FIELDS)})")
              for key in sorted(set(raw) - set(ALLOWED_FIELDS))]
    seed, seed_issues = validate_record({k: v for k, v in raw.items() if k in SEED_FIELDS}, path, line)
    issues += seed_issues
    issues += _check_cot_fields(raw, path, line)
    if issues or seed is None:
        return None, issues
    item = Item.from_seed(seed)
    item.stage = "generated"
    item.question = normalize_newlines(item.question)
    item.options = {k: normalize_newlines(v) for k, v in item.options.items()}
    item.explanation = normalize_newlines(item.explanation) if item.explanation else item.explanation
    reasoning = normalize_newlines(raw["reasoning"]).strip() if raw.get("reasoning") is not None else None
    generation = parse_cot(item, normalize_newlines(raw["cot"]).strip(), reasoning, finish_reason=None,
                           call_id=None, prompt_version=PROMPT_VERSION)
    model = raw["model"].strip() if raw.get("model") is not None else UNKNOWN_MODEL
    return ImportedCot(line=line, item=item, generation=generation, model=model), []


def _check_cot_fields(raw: dict[str, Any], path: str, line: int) -> list[SeedIssue]:
    issues: list[SeedIssue] = []
    item_id = raw.get("id")
    if item_id is None:
        issues.append(SeedIssue(path, line, "id", "missing (an imported CoT needs the item's id)"))
    elif isinstance(item_id, str) and len(item_id.strip()) > MAX_ID_LENGTH:
        issues.append(SeedIssue(path, line, "id", f"longer than {MAX_ID_LENGTH} characters"))
    cot = raw.get("cot")
    if cot is None:
        issues.append(SeedIssue(path, line, "cot", "missing"))
    elif not isinstance(cot, str) or not cot.strip():
        issues.append(SeedIssue(path, line, "cot", "must be a non-empty string"))
    for key in ("reasoning", "model"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            issues.append(SeedIssue(path, line, key, "must be null or a non-empty string"))
    return issues


def load_cot_file(path: Path, store: Store) -> list[ImportedCot]:
    """Validate the whole file against itself and the store. Raises SeedError listing every problem."""
    p = str(path)
    if not path.is_file():
        raise SeedError([SeedIssue(p, 0, "(file)", "no such file")])
    if path.suffix.lower() == ".csv":
        raise SeedError([SeedIssue(p, 0, "(file)", "import-cot reads JSONL (one JSON object a line), not CSV")])
    issues: list[SeedIssue] = []
    rows: list[ImportedCot] = []
    first_id: dict[str, int] = {}
    first_question: dict[str, int] = {}
    for line, raw in read_records(path):
        row, problems = validate_line(raw, p, line)
        issues += problems
        if row is None:
            continue
        norm = normalize_text(row.item.question)
        if row.item.id in first_id:
            issues.append(SeedIssue(p, line, "id", f"duplicate id {row.item.id!r} (also line {first_id[row.item.id]})"))
        if norm in first_question:
            issues.append(SeedIssue(p, line, "question", f"duplicate question (same as line {first_question[norm]})"))
        first_id.setdefault(row.item.id, line)
        first_question.setdefault(norm, line)
        rows.append(row)
    if not issues:
        issues = _against_store(rows, store, p)
    if issues:
        raise SeedError(issues)
    return rows


def _against_store(rows: list[ImportedCot], store: Store, path: str) -> list[SeedIssue]:
    known_ids = store.existing_ids()
    known_questions = store.existing_questions()
    issues = []
    for row in rows:
        if row.item.id in known_ids:
            issues.append(SeedIssue(path, row.line, "id", f"id {row.item.id!r} is already in the store"))
            continue
        other = known_questions.get(normalize_text(row.item.question))
        if other is not None:
            issues.append(SeedIssue(path, row.line, "question", f"duplicate of stored item {other!r}"))
    return issues


def _event(row: ImportedCot, path: Path) -> Event:
    gen = row.generation
    return Event(kind="imported", item_id=row.item.id, stage=STAGE, actor="system", actor_kind="system",
                 payload={"file": str(path), "line": row.line, "model": row.model, "source": row.item.source,
                          "call_id": None, "prompt_version": gen.prompt_version, "answer": gen.answer,
                          "matched_by": gen.matched_by, "agrees_with_key": gen.agrees_with_key,
                          "has_reasoning": gen.reasoning is not None})


def _item_row(item: Item) -> dict[str, Any]:
    return {**asdict(item), "norm_question": normalize_text(item.question)}


def write_imported(store: Store, rows: list[ImportedCot], path: Path) -> None:
    """Items, their initial CoTs and their events in ONE transaction (all or nothing)."""
    if not rows:
        return
    try:
        with store.transaction() as conn:
            conn.execute(insert(ItemRow), [_item_row(r.item) for r in rows])
            conn.execute(insert(GenerationRow), [asdict(r.generation) for r in rows])
            conn.execute(insert(EventRow), [asdict(_event(r, path)) for r in rows])
    except IntegrityError as exc:  # another process stored one of these items after validation
        raise SeedError([SeedIssue(str(path), 0, "(file)", "an item of this file was stored by someone else during "
                                   f"the import ({exc.orig}); nothing was written, rerun to see which")]) from exc


def summarize(rows: list[ImportedCot]) -> ImportCotSummary:
    summary = ImportCotSummary(imported=len(rows))
    summary.matched_by = dict(Counter(r.generation.matched_by for r in rows))
    summary.models = dict(Counter(r.model for r in rows))
    for r in rows:
        if r.generation.answer is None:
            summary.no_answer += 1
        elif r.generation.agrees_with_key:
            summary.agree_with_key += 1
        else:
            summary.disagree_with_key += 1
    return summary


def import_cots(path: Path, store: Store) -> ImportCotSummary:
    """Validate FILE, then write every item with its CoT. On any error (SeedError) nothing is written."""
    rows = load_cot_file(path, store)
    write_imported(store, rows, path)
    return summarize(rows)


__all__ = ["import_cots", "load_cot_file", "validate_line", "ImportCotSummary", "ImportedCot", "PROMPT_VERSION"]

"""Item access for the review: the current text and CoT, revisions (who, when, diff), locking, history.

Every change to an item happens inside one transaction that first calls `lock_item`: an UPDATE of the
item's own row, which takes SQLite's write lock (waiting on busy_timeout) and PostgreSQL's row lock, so
concurrent submissions on one item are serialized and every check sees the latest state.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from curation.review.records import Edits, ReviewError, User
from medcot.db import AttemptRow, EventRow, GenerationRow, ItemRow
from medcot.extract import extract_answer, parse_option_explanations
from medcot.records import Event, Item
from medcot.review_tables import RevisionRow, UserRow
from medcot.revision import content_hash, normalize_newlines
from medcot.store import normalize_text

COT_PURPOSES = ("initial", "regenerated", "edited")
_ITEMS = ItemRow.__table__
_LOCK = (update(_ITEMS).where(_ITEMS.c.id == bindparam("item_id")).values(stage=_ITEMS.c.stage)
         .returning(_ITEMS.c.stage))


def lock_item(conn: Connection, item_id: str) -> str:
    """Serialize writers on this item; returns its stage. Unknown item: ReviewError 404."""
    stage = conn.execute(_LOCK, {"item_id": item_id}).scalar()
    if stage is None:
        raise ReviewError(f"no item {item_id!r}", 404)
    return stage


def get_item(conn: Connection, item_id: str) -> Item:
    row = conn.execute(select(ItemRow).where(ItemRow.id == item_id)).mappings().first()
    if row is None:
        raise ReviewError(f"no item {item_id!r}", 404)
    return Item(**{k: row[k] for k in Item.__slots__})  # type: ignore[attr-defined]


def set_stage(conn: Connection, item_id: str, stage: str, event: Event) -> None:
    conn.execute(update(ItemRow).where(ItemRow.id == item_id).values(stage=stage))
    log(conn, event)


def log(conn: Connection, ev: Event) -> None:
    """Append an audit event inside the caller's transaction."""
    conn.execute(insert(EventRow).values(**asdict(ev)))


def current_cot(conn: Connection, item_id: str) -> dict[str, Any] | None:
    """The CoT in force: the generation with the highest revision (initial 0, then edits/regenerations)."""
    row = conn.execute(select(GenerationRow).where(GenerationRow.item_id == item_id,
                                                   GenerationRow.purpose.in_(COT_PURPOSES))
                       .order_by(GenerationRow.revision.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def cot_round(conn: Connection, item_id: str) -> int:
    """The revision number of the CoT in force (= the rubric scoring round)."""
    cot = current_cot(conn, item_id)
    return int(cot["revision"]) if cot else 0


def item_revision(conn: Connection, item: Item) -> str:
    """The content hash of the item's current text (question, options, key, CoT in force): what votes record."""
    cot = current_cot(conn, item.id)
    return content_hash(item.question, item.options, item.answer, (cot or {}).get("cot") or "")


def revision_count(conn: Connection, item_id: str) -> int:
    """How many field revisions the item has had (also the panel's scoring round: every change bumps it)."""
    return conn.scalar(select(func.count()).select_from(RevisionRow).where(RevisionRow.item_id == item_id)) or 0


def last_revision_time(conn: Connection, item_id: str) -> Any:
    return conn.scalar(select(func.max(RevisionRow.created_at)).where(RevisionRow.item_id == item_id))


def editors(conn: Connection, item_id: str) -> set[int]:
    """Users who changed this item by hand: they never review or score it afterwards."""
    return set(conn.scalars(select(RevisionRow.user_id).where(RevisionRow.item_id == item_id,
                                                               RevisionRow.user_id.is_not(None))))


def text_diff(old: Any, new: Any, name: str) -> str:
    def lines(v: Any) -> list[str]:
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, indent=1, sort_keys=True)
        return text.splitlines(keepends=True) or [""]
    return "".join(difflib.unified_diff(lines(old), lines(new), f"{name} (before)", f"{name} (after)"))


def add_revision(conn: Connection, item_id: str, user: User | None, field_name: str, old: Any, new: Any,
                 kind: str = "edit") -> None:
    conn.execute(insert(RevisionRow).values(item_id=item_id, user_id=user.id if user else None, field=field_name,
                                            kind=kind, old=old, new=new, diff=text_diff(old, new, field_name)))
    log(conn, Event(kind="revision", item_id=item_id, stage="review", actor=user.name if user else "llm",
                    actor_kind=user.kind if user else "llm", payload={"field": field_name, "kind": kind}))


def effective_edits(conn: Connection, item: Item, edits: Edits) -> Edits:
    """Only the fields that really differ from the item, compared after the one normalisation (line endings,
    NFC, outer whitespace), so an untouched field is never a change."""
    cot = current_cot(conn, item.id)

    def clean(text: str | None) -> str | None:
        return normalize_newlines(text).strip() if text is not None else None

    question = clean(edits.question)
    options = {k: clean(v) or "" for k, v in edits.options.items()} if edits.options is not None else None
    new_cot = clean(edits.cot)
    return Edits(question=question if question and question != clean(item.question) else None,
                 options=options if options is not None and options != {k: clean(v) for k, v in item.options.items()}
                 else None,
                 answer=edits.answer if edits.answer and edits.answer != item.answer else None,
                 cot=new_cot if new_cot and new_cot != clean((cot or {}).get("cot") or "") else None)


def proposal_dict(edits: Edits) -> dict[str, Any] | None:
    """A private proposal as stored with a review (None when nothing is proposed)."""
    out = {f: getattr(edits, f) for f in ("question", "options", "answer", "cot") if getattr(edits, f) is not None}
    return out or None


def apply_edits(conn: Connection, item: Item, edits: Edits, user: User) -> list[str]:
    """Apply a reviewer's in-place edits; returns the fields that really changed. Call under lock_item."""
    changed: list[str] = []
    values: dict[str, Any] = {}
    if edits.question is not None and edits.question.strip() and edits.question.strip() != item.question:
        values["question"], values["norm_question"] = edits.question.strip(), normalize_text(edits.question)
        add_revision(conn, item.id, user, "question", item.question, values["question"])
        changed.append("question")
    options = _checked_options(item, edits.options)
    if options is not None and options != item.options:
        values["options"] = options
        add_revision(conn, item.id, user, "options", item.options, options)
        changed.append("options")
    final_options = options or item.options
    if edits.answer is not None and edits.answer != item.answer:
        if edits.answer not in final_options:
            raise ReviewError(f"the key {edits.answer!r} is not one of the options {sorted(final_options)}")
        values["answer"] = edits.answer
        add_revision(conn, item.id, user, "answer", item.answer, edits.answer)
        changed.append("answer")
    if values:
        conn.execute(update(ItemRow).where(ItemRow.id == item.id).values(**values))
    if edits.cot is not None and edits.cot.strip():
        updated = get_item(conn, item.id) if values else item
        if save_cot(conn, updated, edits.cot, user, kind="edit", call_id=None, reasoning=None,
                    prompt_version="human-edit", finish_reason="stop"):
            changed.append("cot")
    return changed


def _checked_options(item: Item, options: dict[str, str] | None) -> dict[str, str] | None:
    if options is None:
        return None
    if set(options) != set(item.options):
        raise ReviewError("edits keep the option letters: change the text, not the set of options")
    cleaned = {k: v.strip() for k, v in options.items()}
    if not all(cleaned.values()):
        raise ReviewError("an option cannot be empty")
    return cleaned


def save_cot(conn: Connection, item: Item, text: str, user: User | None, kind: str, call_id: int | None,
             reasoning: str | None, prompt_version: str, finish_reason: str | None) -> bool:
    """Store a new CoT revision (hand edit or regeneration) as a Generation row plus a revision with its diff.
    Returns False when the text is unchanged. Call under lock_item."""
    cur = current_cot(conn, item.id)
    old = cur["cot"] if cur else ""
    if text.strip() == (old or "").strip():
        return False
    found = extract_answer(text, item.options, finish_reason=finish_reason)
    revision = (int(cur["revision"]) if cur else -1) + 1
    conn.execute(insert(GenerationRow).values(
        item_id=item.id, call_id=call_id, purpose="edited" if kind == "edit" else "regenerated", revision=revision,
        prompt_version=prompt_version, cot=text, reasoning=reasoning, answer=found.letter,
        matched_by=found.matched_by, option_explanations=parse_option_explanations(text, item.options),
        agrees_with_key=None if found.letter is None else found.letter == item.answer))
    add_revision(conn, item.id, user, "cot", old, text, kind=kind)
    return True


def attempts(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    """The five-strike history (every attempt, its reasoning, its permutation)."""
    rows = conn.execute(select(AttemptRow).where(AttemptRow.item_id == item_id)
                        .order_by(AttemptRow.round, AttemptRow.attempt_no)).mappings().all()
    return [dict(r) for r in rows]


def cot_history(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(GenerationRow).where(GenerationRow.item_id == item_id,
                                                    GenerationRow.purpose.in_(COT_PURPOSES))
                        .order_by(GenerationRow.revision)).mappings().all()
    return [dict(r) for r in rows]


def revisions(conn: Connection, item_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(*RevisionRow.__table__.c, UserRow.name.label("user_name"))
                        .join(UserRow, UserRow.id == RevisionRow.user_id, isouter=True)
                        .where(RevisionRow.item_id == item_id).order_by(RevisionRow.id)).mappings().all()
    return [dict(r) for r in rows]

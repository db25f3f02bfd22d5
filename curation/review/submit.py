"""Submissions of the initial review (paper 2.3.1) and of adjudication verdicts (2.3.5).

One function per kind of submission, used by every route (web form, LLM judge, Label Studio import), each
in ONE transaction under the item's lock: check the assignment, the phase, duplicates and the revision the
form was loaded on; apply edits as revisions; store the review; log the audit events; advance the item.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from curation.review.assign import is_assigned
from curation.review.consensus import decide, record_outcome, review_votes, verdict
from curation.review.items import (
    apply_edits,
    editors,
    effective_edits,
    get_item,
    lock_item,
    log,
    revision_count,
    set_stage,
)
from curation.review.records import PANEL_ACTIONS, ReviewError, ReviewInput, User
from medcot.config import ReviewConfig
from medcot.records import Event, Item
from medcot.review_tables import AssignmentRow, DecisionRow, ReviewRow
from medcot.store import Store

_FIELDS = ("relevance", "correctness", "sufficiency", "answer", "approve", "comment")


@dataclass
class SubmitResult:
    status: str  # "stored" | "already" (an identical resubmission: nothing changed)
    item_stage: str
    changed: list[str] = field(default_factory=list)
    outcome: str = ""
    reason: str = ""


def _existing(conn: Connection, item_id: str, user_id: int, phase: str) -> dict | None:
    row = conn.execute(select(ReviewRow).where(ReviewRow.item_id == item_id, ReviewRow.user_id == user_id,
                                               ReviewRow.phase == phase)).mappings().first()
    return dict(row) if row else None


def _same(row: dict, form: ReviewInput) -> bool:
    return all(row[f] == getattr(form, f) for f in _FIELDS) and not form.edits.any()


def _insert_review(conn: Connection, item_id: str, user: User, form: ReviewInput, phase: str) -> None:
    conn.execute(insert(ReviewRow).values(item_id=item_id, user_id=user.id, phase=phase, relevance=form.relevance,
                                          correctness=form.correctness, sufficiency=form.sufficiency,
                                          answer=form.answer, approve=form.approve, comment=form.comment[:5000]))


def _review_slots(conn: Connection, item_id: str) -> dict[int, dict | None]:
    """Assigned reviewer id -> their review row (None while pending), in one query."""
    rows = conn.execute(select(AssignmentRow.user_id, *ReviewRow.__table__.c).select_from(AssignmentRow)
                        .join(ReviewRow, (ReviewRow.item_id == AssignmentRow.item_id) &
                              (ReviewRow.user_id == AssignmentRow.user_id) & (ReviewRow.phase == "review"), isouter=True)
                        .where(AssignmentRow.item_id == item_id, AssignmentRow.phase == "review")).all()
    return {r[0]: (dict(r._mapping) if r._mapping["id"] is not None else None) for r in rows}


def submit_review(store: Store, item_id: str, user: User, form: ReviewInput, cfg: ReviewConfig,
                  actor_note: str = "") -> SubmitResult:
    """A reviewer's initial review, with optional in-place edits (saved as revisions)."""
    with store.transaction() as conn:
        stage = lock_item(conn, item_id)
        slots = _review_slots(conn, item_id)
        if user.id not in slots:
            raise ReviewError("no such review assignment", 404)
        item = get_item(conn, item_id)
        if form.edits.any():
            form.edits = effective_edits(conn, item, form.edits)
        existing = slots[user.id]
        if existing is not None:
            if _same(existing, form):
                return SubmitResult("already", stage)
            raise ReviewError("you already reviewed this item; reviews are final", 409)
        if stage != "generated":
            raise ReviewError(f"the initial review of this item is closed (stage {stage})", 409)
        if form.base_revision is not None and form.base_revision != revision_count(conn, item_id):
            raise ReviewError("the item was edited since you opened it: reload it and review the new text", 409)
        changed = apply_edits(conn, item, form.edits, user) if form.edits.any() else []
        if changed:
            item = get_item(conn, item_id)
        if form.answer is not None and form.answer not in item.options:
            raise ReviewError(f"answer {form.answer!r} is not one of the options {sorted(item.options)}")
        _insert_review(conn, item_id, user, form, "review")
        log(conn, Event(kind="review_submitted", item_id=item_id, stage="review", actor=user.name,
                        actor_kind=user.kind, payload={"phase": "review", "edited": changed, "via": actor_note}))
        slots[user.id] = {}
        new_stage = _complete_review(conn, item, slots, cfg)
    return SubmitResult("stored", new_stage, changed)


def _complete_review(conn: Connection, item: Item, slots: dict[int, dict | None], cfg: ReviewConfig) -> str:
    """When every assigned reviewer (at least N) has reviewed: stage "reviewed" (five strikes come next)."""
    if len(slots) < cfg.reviewers_per_item or any(v is None for v in slots.values()):
        return "generated"
    v, reason = verdict(review_votes(conn, item, cfg), cfg)
    set_stage(conn, item.id, "reviewed", Event(kind="reviewed", item_id=item.id, stage="review",
                                               payload={"reviews": len(slots), "verdict": v, "reason": reason}))
    return "reviewed"


def voters(conn: Connection, item_id: str) -> set[int]:
    """Everyone who reviewed, scored or edited this item (adjudicators' own verdicts aside)."""
    ids = set(conn.scalars(select(ReviewRow.user_id).where(ReviewRow.item_id == item_id,
                                                           ReviewRow.phase != "adjudication")))
    ids |= set(conn.scalars(select(DecisionRow.user_id).where(DecisionRow.item_id == item_id,
                                                              DecisionRow.kind.in_(PANEL_ACTIONS))))
    return ids | editors(conn, item_id)


def may_adjudicate(conn: Connection, item_id: str, user: User) -> bool:
    if not user.is_human or user.id in voters(conn, item_id):
        return False
    return user.role == "admin" or is_assigned(conn, item_id, user.id, "adjudication")


def submit_adjudication(store: Store, item_id: str, user: User, form: ReviewInput, cfg: ReviewConfig) -> SubmitResult:
    """An adjudicator's verdict (an admin, or a third expert assigned to it); consensus decides at once."""
    with store.transaction() as conn:
        stage = lock_item(conn, item_id)
        form.edits = effective_edits(conn, get_item(conn, item_id), form.edits)
        existing = _existing(conn, item_id, user.id, "adjudication")
        if existing is not None:
            if _same(existing, form):
                return SubmitResult("already", stage)
            raise ReviewError("you already adjudicated this item", 409)
        if not may_adjudicate(conn, item_id, user):
            raise ReviewError("no such adjudication assignment", 404)
        if stage != "adjudication":
            raise ReviewError(f"item is not awaiting adjudication (stage {stage})", 409)
        if form.edits.any():
            raise ReviewError("adjudication decides on the current text; it does not edit it")
        if form.answer is not None and form.answer not in get_item(conn, item_id).options:
            raise ReviewError(f"answer {form.answer!r} is not one of the options")
        _insert_review(conn, item_id, user, form, "adjudication")
        log(conn, Event(kind="review_submitted", item_id=item_id, stage="consensus", actor=user.name,
                        actor_kind=user.kind, payload={"phase": "adjudication"}))
        out = decide(conn, get_item(conn, item_id), cfg)
        done = record_outcome(conn, item_id, out.kind, cfg, actor=user)
    return SubmitResult("stored", done.kind, outcome=done.kind, reason=done.reason)

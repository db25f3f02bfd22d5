"""Submissions of the initial review (paper 2.3.1) and of adjudication verdicts (2.3.5).

One function per kind of submission, used by every route (web form, JSON API, LLM judge, Label Studio import,
CLI), each in ONE transaction under the item's lock: check the assignment, the phase, duplicates and the
revision judged (a content hash: missing or stale is refused); store the vote with that revision; log the
audit events; advance the item. Initial-review edits are private proposals, never applied by the review.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from curation.review.assign import is_assigned
from curation.review.consensus import decide, reconcile, record_outcome, review_votes, send_to_panel, verdict
from curation.review.items import (
    apply_edits,
    editors,
    effective_edits,
    get_item,
    item_revision,
    lock_item,
    log,
    proposal_dict,
    revision_count,
    set_stage,
)
from curation.review.records import PANEL_ACTIONS, Edits, ReviewError, ReviewInput, User
from curation.review.standard import load_standard, policy_problems
from medcot.config import ReviewConfig
from medcot.records import Event, Item
from medcot.review_tables import RUBRIC_DIMENSIONS, AssignmentRow, DecisionRow, ReviewRow, RubricScoreRow
from medcot.store import Store

_FIELDS = ("relevance", "correctness", "sufficiency", "answer", "approve", "comment")
MAX_COMMENT = 5000  # characters of a comment or a panelist's feedback (longer is refused, never cut)


def check_length(name: str, value: str, limit: int = MAX_COMMENT) -> None:
    if len(value) > limit:
        raise ReviewError(f"{name} is too long: at most {limit} characters (got {len(value)})")


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


def _same(row: dict, form: ReviewInput, proposal: dict | None) -> bool:
    return all(row[f] == getattr(form, f) for f in _FIELDS) and (row.get("proposal") or None) == proposal


def _insert_review(conn: Connection, item: Item, user: User, form: ReviewInput, phase: str, revision: str,
                   proposal: dict | None, blind: bool) -> None:
    check_length("comment", form.comment)
    version = load_standard().version if (form.scores or form.difficulty or form.cognitive_level) else None
    conn.execute(insert(ReviewRow).values(item_id=item.id, user_id=user.id, phase=phase, relevance=form.relevance,
                                          correctness=form.correctness, sufficiency=form.sufficiency,
                                          answer=form.answer, approve=form.approve, comment=form.comment,
                                          revision_hash=revision, blind=blind, proposal=proposal,
                                          difficulty=form.difficulty, cognitive_level=form.cognitive_level,
                                          standard_version=version))
    if form.scores:
        conn.execute(insert(RubricScoreRow), [
            {"item_id": item.id, "user_id": user.id, "phase": "review", "round": revision_count(conn, item.id),
             "dimension": d, "score": form.scores[d], "revision_hash": revision, "standard_version": version}
            for d in RUBRIC_DIMENSIONS])


def _review_slots(conn: Connection, item_id: str) -> dict[int, dict | None]:
    """Assigned reviewer id -> their review row (None while pending), in one query."""
    rows = conn.execute(select(AssignmentRow.user_id, *ReviewRow.__table__.c).select_from(AssignmentRow)
                        .join(ReviewRow, (ReviewRow.item_id == AssignmentRow.item_id) &
                              (ReviewRow.user_id == AssignmentRow.user_id) & (ReviewRow.phase == "review"), isouter=True)
                        .where(AssignmentRow.item_id == item_id, AssignmentRow.phase == "review")).all()
    return {r[0]: (dict(r._mapping) if r._mapping["id"] is not None else None) for r in rows}


def check_revision(given: str | None, current: str) -> None:
    """Every submission names the revision it judged; a missing or stale one is refused (409)."""
    if given is None:
        raise ReviewError("the submission does not say which revision of the item it judged: reload the item", 409)
    if given != current:
        raise ReviewError("the item changed since you opened it: reload it and judge the new text", 409)


def check_rubric(form: ReviewInput, cfg: ReviewConfig, required: bool) -> None:
    """The rubric (and difficulty, cognitive level) is part of every initial review when review.rubric is all;
    an approval whose scores the rubric policy rules out is incoherent and refused, saying why."""
    if required and (form.scores is None or form.difficulty is None or form.cognitive_level is None):
        missing = [n for n, v in (("rubric scores", form.scores), ("difficulty", form.difficulty),
                                  ("cognitive level", form.cognitive_level)) if v is None]
        raise ReviewError(f"missing {', '.join(missing)}: every item is scored on the five dimensions")
    if form.approve and form.scores:
        bad = policy_problems(form.scores, cfg.rubric_policy.min_score, cfg.rubric_policy.required)
        if bad:
            raise ReviewError("an approval is incompatible with these rubric scores: " + "; ".join(bad) +
                              ". Do not approve, or correct the scores.")


def submit_review(store: Store, item_id: str, user: User, form: ReviewInput, cfg: ReviewConfig,
                  actor_note: str = "") -> SubmitResult:
    """A reviewer's blind initial review of the base revision. Edits are a PRIVATE proposal stored with the
    review; nothing about the item changes, so every assigned reviewer judges the same text."""
    with store.transaction() as conn:
        stage = lock_item(conn, item_id)
        slots = _review_slots(conn, item_id)
        if user.id not in slots:
            raise ReviewError("not found", 404)  # the same answer as for a missing item
        item = get_item(conn, item_id)
        current = item_revision(conn, item)
        edits = effective_edits(conn, item, form.edits) if form.edits.any() else Edits()
        _check_proposal(item, edits)
        proposal = proposal_dict(edits)
        existing = slots[user.id]
        if existing is not None:
            if _same(existing, form, proposal):
                return SubmitResult("already", stage)
            raise ReviewError("you already reviewed this item; reviews are final", 409)
        if stage != "generated":
            raise ReviewError(f"the initial review of this item is closed (stage {stage})", 409)
        check_revision(form.revision, current)
        if form.answer is None or form.answer not in item.options:
            raise ReviewError(f"answer {form.answer!r} is not one of the options {sorted(item.options)}")
        check_rubric(form, cfg, required=cfg.rubric == "all")
        _insert_review(conn, item, user, form, "review", current, proposal, blind=True)
        log(conn, Event(kind="review_submitted", item_id=item_id, stage="review", actor=user.name,
                        actor_kind=user.kind, payload={"phase": "review", "proposed": sorted(proposal or {}),
                                                       "via": actor_note}))
        slots[user.id] = {}
        new_stage = _complete_review(conn, item, slots, cfg)
    return SubmitResult("stored", new_stage, sorted(proposal or {}))


def _check_proposal(item: Item, edits: Edits) -> None:
    if edits.options is not None:
        if set(edits.options) != set(item.options):
            raise ReviewError("edits keep the option letters: change the text, not the set of options")
        if not all(edits.options.values()):
            raise ReviewError("an option cannot be empty")
    final = edits.options or item.options
    if edits.answer is not None and edits.answer not in final:
        raise ReviewError(f"the key {edits.answer!r} is not one of the options {sorted(final)}")


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
    """Reconciliation by an adjudicator (an admin, or a third expert assigned to it), who sees every vote and
    proposal, so their verdict is never a blind approval. Reject: the item is removed. Approve as is: approved
    if the blind approvals already on this revision suffice, else the panel confirms it. Approve with edits
    (adopting a proposal or their own): a new revision, re-checked by five-strike when question, options or key
    changed, then judged afresh by the panel."""
    with store.transaction() as conn:
        stage = lock_item(conn, item_id)
        item = get_item(conn, item_id)
        edits = effective_edits(conn, item, form.edits)
        existing = _existing(conn, item_id, user.id, "adjudication")
        if existing is not None:
            if _same(existing, form, proposal_dict(edits)):
                return SubmitResult("already", stage)
            raise ReviewError("you already adjudicated this item", 409)
        if not may_adjudicate(conn, item_id, user):
            raise ReviewError("not found", 404)  # the same answer as for a missing item
        if stage != "adjudication":
            raise ReviewError(f"item is not awaiting adjudication (stage {stage})", 409)
        current = item_revision(conn, item)
        check_revision(form.revision, current)
        _check_proposal(item, edits)
        if form.answer is None or form.answer not in item.options:
            raise ReviewError(f"answer {form.answer!r} is not one of the options")
        _insert_review(conn, item, user, form, "adjudication", current, proposal_dict(edits), blind=False)
        log(conn, Event(kind="review_submitted", item_id=item_id, stage="consensus", actor=user.name,
                        actor_kind=user.kind, payload={"phase": "adjudication", "edits": sorted(proposal_dict(edits) or {})}))
        if form.approve and edits.any():
            changed = apply_edits(conn, item, edits, user)
            kind = reconcile(conn, item_id, changed, cfg, f"reconciled by {user.name}: {', '.join(changed)} changed")
            return SubmitResult("stored", kind, changed, outcome=kind, reason="a new revision: judged afresh")
        out = decide(conn, get_item(conn, item_id), cfg)
        if out.kind == "escalate":
            send_to_panel(conn, item_id, out.reason, cfg)
            return SubmitResult("stored", "escalated", outcome="escalated", reason=out.reason)
        done = record_outcome(conn, item_id, out.kind, cfg, actor=user)
    return SubmitResult("stored", done.kind, outcome=done.kind, reason=done.reason)

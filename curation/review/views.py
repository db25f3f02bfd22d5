"""What each person may see of an item, as plain dicts for the templates and the JSON API.

Blindness lives here: a reviewer sees the item's base revision and only THEIR OWN review (never another
reviewer's verdict, answer, comment or proposal, nor how many revisions there were); a panelist sees the item,
the model's five-strike history, the model's CoT versions and only their own rubric scores (never the initial
reviewers' votes or proposals, never another panelist's scores); adjudicators and admins see everything, but an
adjudicator who is not an admin sees the others as "reviewer 1", "panelist 2" (`pseudonyms`), never their names.
Who may open what is decided by `phase_access`, used by every page and API route.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from curation.review.assign import is_assigned
from curation.review.consensus import panel_decisions
from curation.review.items import (
    attempts,
    cot_history,
    current_cot,
    editors,
    get_item,
    item_revision,
    revision_count,
    revisions,
)
from curation.review.panel import panel_state
from curation.review.records import ReviewError, User
from curation.review.standard import load_standard
from curation.review.submit import may_adjudicate
from curation.review.triage import doubts
from medcot.db import EventRow, ItemRow
from medcot.review_tables import RUBRIC_DIMENSIONS, AssignmentRow, ReviewRow, RubricScoreRow, UserRow


def phase_access(conn: Connection, item_id: str, user: User, phase: str) -> None:
    """Raise 404 unless the user may open this item in this phase (never reveals whether it exists)."""
    if phase == "adjudication":
        ok = may_adjudicate(conn, item_id, user)
    elif phase in ("review", "panel"):
        ok = is_assigned(conn, item_id, user.id, phase)
    else:
        ok = False
    if not ok:
        raise ReviewError("not found", 404)


def item_core(conn: Connection, item_id: str) -> dict[str, Any]:
    item = get_item(conn, item_id)
    cot = current_cot(conn, item_id)
    return {"id": item.id, "language": item.language, "question": item.question, "options": dict(sorted(item.options.items())),
            "key": item.answer, "stage": item.stage, "origin": item.origin, "specialty": item.specialty,
            "cot": cot["cot"] if cot else "", "cot_answer": cot["answer"] if cot else None,
            "reasoning": (cot.get("reasoning") or None) if cot else None,
            "round": revision_count(conn, item_id), "revision": item_revision(conn, item)}


def own_review(conn: Connection, item_id: str, user: User, phase: str) -> dict[str, Any] | None:
    row = conn.execute(select(ReviewRow).where(ReviewRow.item_id == item_id, ReviewRow.user_id == user.id,
                                               ReviewRow.phase == phase)).mappings().first()
    return dict(row) if row else None


def reviews_of(conn: Connection, item_id: str, phase: str | None = None) -> list[dict[str, Any]]:
    q = (select(*ReviewRow.__table__.c, UserRow.name.label("user_name"), UserRow.kind.label("user_kind"))
         .join(UserRow, UserRow.id == ReviewRow.user_id).where(ReviewRow.item_id == item_id).order_by(ReviewRow.id))
    if phase is not None:
        q = q.where(ReviewRow.phase == phase)
    return [dict(r) for r in conn.execute(q).mappings()]


def own_scores(conn: Connection, item_id: str, user: User) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for rnd, dim, score in conn.execute(select(RubricScoreRow.round, RubricScoreRow.dimension, RubricScoreRow.score)
                                        .where(RubricScoreRow.item_id == item_id, RubricScoreRow.user_id == user.id,
                                               RubricScoreRow.phase == "panel")):
        out.setdefault(rnd, {})[dim] = score
    return out


Labels = Callable[[str, int], str]  # (role, n) -> "reviewer 1"; role "you" for the viewer


def pseudonyms(t: Callable[..., str]) -> Labels:
    """Labels in the viewer's interface language (t: i18n.translator)."""
    return lambda role, n: t(f"pseudonym_{role}", n=n)


class _Names:
    """A person's name, or (with labels) their pseudonym: numbered per role in order of first appearance."""

    def __init__(self, labels: Labels | None, viewer: User | None):
        self.labels, self.viewer = labels, viewer
        self.seen: dict[int, tuple[str, int]] = {}

    def __call__(self, user_id: int | None, role: str, name: str | None) -> str | None:
        if self.labels is None or user_id is None:  # no user: the LLM
            return name
        if self.viewer is not None and user_id == self.viewer.id:
            return self.labels("you", 0)
        if user_id not in self.seen:
            self.seen[user_id] = (role, 1 + sum(r == role for r, _ in self.seen.values()))
        return self.labels(*self.seen[user_id])


def all_scores(conn: Connection, item_id: str, names: _Names | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(select(RubricScoreRow.round, RubricScoreRow.dimension, RubricScoreRow.score, UserRow.name,
                               RubricScoreRow.phase, RubricScoreRow.user_id)
                        .join(UserRow, UserRow.id == RubricScoreRow.user_id)
                        .where(RubricScoreRow.item_id == item_id)).all()
    names = names or _Names(None, None)
    table: dict[tuple[int, str, int], dict[str, Any]] = {}
    for rnd, dim, score, name, phase, uid in sorted(rows, key=lambda r: (r[0], r[4], r[3])):
        who = names(uid, "reviewer" if phase == "review" else "panelist", name)
        table.setdefault((rnd, phase, uid), {"round": rnd, "user": f"{who} ({phase})"})[dim] = score
    return list(table.values())


def review_context(conn: Connection, item_id: str, user: User, rubric: bool = True) -> dict[str, Any]:
    phase_access(conn, item_id, user, "review")
    item = item_core(conn, item_id)
    mine = own_review(conn, item_id, user, "review")
    if mine is not None and mine.get("revision_hash") and mine["revision_hash"] != item["revision"]:
        mine["stale"] = True  # judged an earlier text (shown to the reviewer only as "your review")
    return {"item": item, "mine": mine, "standard": load_standard().for_language(item["language"]) if rubric else None}


def regeneration_failed(conn: Connection, item_id: str) -> bool:
    """Whether the last guided regeneration failed (none succeeded since). Panelists learn only that; the error
    (an upstream message, maybe an endpoint URL) is in the audit log for admins."""
    last = conn.scalar(select(EventRow.kind).where(
        EventRow.item_id == item_id, EventRow.kind.in_(("regenerated", "regeneration_failed")))
        .order_by(EventRow.id.desc()).limit(1))
    return last == "regeneration_failed"


def panel_context(conn: Connection, item_id: str, user: User, cfg: Any) -> dict[str, Any]:
    phase_access(conn, item_id, user, "panel")
    state = panel_state(conn, item_id, cfg)
    mine = state.submitted.get(user.id)
    return {"item": item_core(conn, item_id), "attempts": attempts(conn, item_id),
            "standard": load_standard().for_language(get_item(conn, item_id).language),
            "cots": [c for c in cot_history(conn, item_id) if c["purpose"] != "edited"],  # the model's versions only
            "my_scores": own_scores(conn, item_id, user), "dimensions": RUBRIC_DIMENSIONS,
            "mine": mine, "panel_status": state.status, "editor": user.id in editors(conn, item_id),
            "pending_others": len([u for u in state.pending if u != user.id]),
            "regen_failed": state.status == "regenerate" and regeneration_failed(conn, item_id)}


def full_context(conn: Connection, item_id: str, labels: Labels | None, viewer: User | None) -> dict[str, Any]:
    """Everything about an item (adjudicators and admins); with `labels`, people are shown by pseudonym."""
    names = _Names(labels, viewer)
    reviews = reviews_of(conn, item_id)
    for r in sorted(reviews, key=lambda r: (r["phase"] != "review", r["id"])):
        r["user_name"] = names(r["user_id"], "reviewer" if r["phase"] == "review" else "adjudicator", r["user_name"])
    panel = sorted(panel_decisions(conn, item_id), key=lambda d: d["id"])
    for d in panel:
        d["name"] = names(d["user_id"], "panelist", d["name"])
    history = revisions(conn, item_id)
    for r in history:
        r["user_name"] = names(r["user_id"], "panelist", r["user_name"])
    return {"item": item_core(conn, item_id), "attempts": attempts(conn, item_id), "reviews": reviews,
            "cots": cot_history(conn, item_id), "revisions": history, "scores": all_scores(conn, item_id, names),
            "panel": panel, "dimensions": RUBRIC_DIMENSIONS}


def my_assignments(conn: Connection, user: User) -> list[dict[str, Any]]:
    rows = conn.execute(select(AssignmentRow.item_id, AssignmentRow.phase, ItemRow.stage, ItemRow.question,
                               ItemRow.language)
                        .join(ItemRow, ItemRow.id == AssignmentRow.item_id)
                        .where(AssignmentRow.user_id == user.id).order_by(AssignmentRow.id)).mappings().all()
    done = {(r, p) for r, p in conn.execute(select(ReviewRow.item_id, ReviewRow.phase)
                                            .where(ReviewRow.user_id == user.id))}
    scored = {(r, p) for r, p in conn.execute(select(RubricScoreRow.item_id, RubricScoreRow.round)
                                              .where(RubricScoreRow.user_id == user.id,
                                                     RubricScoreRow.phase == "panel"))}
    out = []
    for r in rows:
        open_stage = {"review": "generated", "panel": "escalated", "adjudication": "adjudication"}[r["phase"]]
        if r["phase"] == "panel":
            is_done = (r["item_id"], revision_count(conn, r["item_id"])) in scored
        else:
            is_done = (r["item_id"], r["phase"]) in done
        out.append({"item_id": r["item_id"], "phase": r["phase"], "question": r["question"][:140],
                    "language": r["language"],
                    "done": is_done, "open": r["stage"] == open_stage and not is_done})
    return _triage_order(conn, out)


def _triage_order(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With review.triage, open initial reviews come most doubtful first (the judge's doubt itself is never
    shown: no anchoring); without triage events the order is the assignment order."""
    doubt = doubts(conn, [r["item_id"] for r in rows if r["phase"] == "review" and r["open"]])
    if not doubt:
        return rows
    return sorted(rows, key=lambda r: (r["phase"] != "review" or not r["open"], -doubt.get(r["item_id"], -1.0)))


def api_item(conn: Connection, item_id: str, user: User) -> dict[str, Any]:
    """The JSON view of an item for someone assigned to it in any phase (own reviews only)."""
    phases = [p for p in ("review", "panel", "adjudication") if _may(conn, item_id, user, p)]
    if not phases and user.role != "admin":
        raise ReviewError("not found", 404)
    core = item_core(conn, item_id)
    if not ({"panel", "adjudication"} & set(phases)) and user.role != "admin":
        core.pop("round")  # an initial reviewer never learns whether (or how often) the item was revised
    core["my_reviews"] = [_public_review(r) for r in reviews_of(conn, item_id) if r["user_id"] == user.id]
    core["phases"] = phases
    return core


def _may(conn: Connection, item_id: str, user: User, phase: str) -> bool:
    try:
        phase_access(conn, item_id, user, phase)
        return True
    except ReviewError:
        return False


def _public_review(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "item_id", "phase", "relevance", "correctness", "sufficiency", "answer", "approve", "comment")
    return {k: r[k] for k in keys} | {"created_at": str(r["created_at"])}


def api_review(conn: Connection, review_id: int, user: User) -> dict[str, Any]:
    """One review: its author, or an admin. Anyone else gets 404 (not 403: no existence oracle)."""
    row = conn.execute(select(ReviewRow).where(ReviewRow.id == review_id)).mappings().first()
    if row is None or (row["user_id"] != user.id and user.role != "admin"):
        raise ReviewError("not found", 404)
    return _public_review(dict(row))

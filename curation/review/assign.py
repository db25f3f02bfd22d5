"""Blind, balanced assignment of items to reviewers, panelists and adjudicators.

- Every item gets at least N eligible people per phase (review: config reviewers_per_item; panel:
  panelists_per_item; adjudication: one).
- Balanced: the least-loaded eligible person first (load = assignments in that phase); ties are broken by
  a hash of (item, user), so reviewer pairs mix across items (agreement needs overlapping pairs).
- Nobody reviews an item they edited: an editor is never newly assigned, and in the panel a panelist who
  revised the CoT no longer counts toward N for the re-scoring (a replacement is assigned). A reviewer's
  own edits, made with their review (paper 2.3.1), are part of that review.
- An adjudicator has neither voted on nor edited the item.
- Assignments are rows with a unique (item, user, phase): rerunning never duplicates them.
- Routing (review.routing): people whose profile fits the item's language (and, when configured, specialty)
  come first; see `assign` for what happens when too few fit.
- An open assignment of a deactivated account is handed over (curation/review/accounts.py): its row is
  removed (event `unassigned`) and the item is filled up again under the same rules.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from curation.review.auth import ensure_automated_user
from curation.review.records import PANEL_ACTIONS, User
from medcot.config import ReviewConfig, RoutingConfig
from medcot.db import EventRow, ItemRow
from medcot.records import Event
from medcot.review_tables import AssignmentRow, DecisionRow, ReviewerProfileRow, ReviewRow, RevisionRow, UserRow

JUDGE_PREFIX = "llm:"
_CHUNK = 500  # items per query (bound on SQL parameters)


def judge_users(conn: Connection, cfg: ReviewConfig) -> list[User]:
    """The automated reviewers (one per persona), created on first use, kind "llm"."""
    return [ensure_automated_user(conn, JUDGE_PREFIX + p, role="panelist") for p in cfg.judge.personas]


def pool(conn: Connection, cfg: ReviewConfig, phase: str) -> list[User]:
    """Who may be assigned in this phase: active humans by role (with their routing profiles), or the LLM
    judges when review.automated=llm."""
    if cfg.automated == "llm" and phase in ("review", "panel"):
        return judge_users(conn, cfg)
    roles = {"review": ("reviewer",), "panel": ("panelist",), "adjudication": ("admin", "panelist")}[phase]
    rows = conn.execute(select(UserRow, ReviewerProfileRow.languages, ReviewerProfileRow.specialties)
                        .outerjoin(ReviewerProfileRow, ReviewerProfileRow.user_id == UserRow.id)
                        .where(UserRow.active.is_(True), UserRow.kind == "human", UserRow.role.in_(roles))
                        .order_by(UserRow.id)).mappings()
    return [User(id=r["id"], name=r["name"], role=r["role"], kind=r["kind"], languages=tuple(r["languages"] or ()),
                 specialties=tuple(r["specialties"] or ())) for r in rows]


def fits(user: User, language: str, specialty: str | None, routing: RoutingConfig) -> bool:
    """Routing: the user reads the item's language and, when configured, covers its specialty. An empty profile
    field means "any"; a discipline covers its subspecialties (internal_medicine fits internal_medicine/cardiology)."""
    if routing.languages and user.languages and language not in user.languages:
        return False
    if routing.specialties and user.specialties:
        if specialty is None:
            return False
        return any(specialty == s or specialty.startswith(s + "/") for s in user.specialties)
    return True


def _excluded(conn: Connection, item_ids: list[str], phase: str) -> dict[str, set[int]]:
    """item -> users who may not take it in this phase."""
    out: dict[str, set[int]] = {i: set() for i in item_ids}
    for item_id, uid in conn.execute(select(RevisionRow.item_id, RevisionRow.user_id).where(
            RevisionRow.item_id.in_(item_ids), RevisionRow.user_id.is_not(None))):
        out[item_id].add(uid)
    if phase == "adjudication":
        voted = [select(ReviewRow.item_id, ReviewRow.user_id).where(ReviewRow.item_id.in_(item_ids)),
                 select(DecisionRow.item_id, DecisionRow.user_id).where(DecisionRow.item_id.in_(item_ids),
                                                                        DecisionRow.kind.in_(PANEL_ACTIONS))]
        for query in voted:
            for item_id, uid in conn.execute(query):
                out[item_id].add(uid)
    return out


def assigned(conn: Connection, item_id: str, phase: str) -> list[int]:
    return list(conn.scalars(select(AssignmentRow.user_id).where(AssignmentRow.item_id == item_id,
                                                                 AssignmentRow.phase == phase)
                             .order_by(AssignmentRow.id)))


def is_assigned(conn: Connection, item_id: str, user_id: int, phase: str) -> bool:
    return conn.scalar(select(AssignmentRow.id).where(AssignmentRow.item_id == item_id, AssignmentRow.user_id == user_id,
                                                      AssignmentRow.phase == phase)) is not None


def _tiebreak(item_id: str, user_id: int) -> str:
    return hashlib.sha256(f"{item_id}\x00{user_id}".encode()).hexdigest()


def assign(conn: Connection, item_ids: Iterable[str], phase: str, n: int, people: list[User],
           actor: str = "system", routing: RoutingConfig | None = None,
           fallbacks: set[str] | None = None) -> dict[str, list[str]]:
    """Bring every item up to n eligible assignees in `phase`, preferring people who fit the item (`fits`).
    When too few fit: routing.fallback "any" fills up from the other eligible people (the item goes into
    `fallbacks` and a routing_fallback event is logged), "wait" leaves the item short. Returns item -> names
    newly assigned (an item that cannot be filled gets what is available; the caller reports the shortfall)."""
    ids = list(dict.fromkeys(item_ids))
    made: dict[str, list[str]] = {}
    for start in range(0, len(ids), _CHUNK):
        made.update(_assign_chunk(conn, ids[start:start + _CHUNK], phase, n, people, actor,
                                  routing or RoutingConfig(), fallbacks))
    return made


def _item_routes(conn: Connection, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    return {r.id: (r.language, r.specialty) for r in conn.execute(
        select(ItemRow.id, ItemRow.language, ItemRow.specialty).where(ItemRow.id.in_(ids)))}


def _assign_chunk(conn: Connection, ids: list[str], phase: str, n: int, people: list[User], actor: str,
                  routing: RoutingConfig, fallbacks: set[str] | None) -> dict[str, list[str]]:
    if not ids or not people:
        return {}
    routes = _item_routes(conn, ids)
    load = Counter(dict(conn.execute(select(AssignmentRow.user_id, func.count()).where(
        AssignmentRow.phase == phase).group_by(AssignmentRow.user_id)).all()))
    existing: dict[str, set[int]] = {i: set() for i in ids}
    for item_id, uid in conn.execute(select(AssignmentRow.item_id, AssignmentRow.user_id).where(
            AssignmentRow.item_id.in_(ids), AssignmentRow.phase == phase)):
        existing[item_id].add(uid)
    excluded = _excluded(conn, ids, phase)
    rows, events, made = [], [], {}
    for item_id in ids:
        have = len(existing[item_id] - (excluded[item_id] if phase != "review" else set()))
        free = [u for u in people if u.id not in existing[item_id] and u.id not in excluded[item_id]]
        free.sort(key=lambda u: (load[u.id], _tiebreak(item_id, u.id)))
        language, specialty = routes.get(item_id, ("", None))
        fitting = [u for u in free if fits(u, language, specialty, routing)]
        want = max(0, n - have)
        chosen = fitting[:want]
        if len(chosen) < want and routing.fallback == "any" and len(fitting) < len(free):
            chosen += [u for u in free if u not in fitting][:want - len(chosen)]
            if fallbacks is not None:
                fallbacks.add(item_id)
            events.append(asdict(Event(kind="routing_fallback", item_id=item_id, stage=phase, actor=actor, payload={
                "phase": phase, "language": language, "specialty": specialty, "fitting": len(fitting),
                "reason": "too few reviewers fit the item's language/specialty: filled from the others"})))
        for user in chosen:
            load[user.id] += 1
            rows.append({"item_id": item_id, "user_id": user.id, "phase": phase})
            events.append(asdict(Event(kind="assigned", item_id=item_id, stage=phase, actor=actor,
                                       payload={"user": user.name, "kind": user.kind, "phase": phase})))
            made.setdefault(item_id, []).append(user.name)
    if rows:
        conn.execute(insert(AssignmentRow), rows)
    if events:
        conn.execute(insert(EventRow), events)
    return made


def shortfall(conn: Connection, item_ids: Iterable[str], phase: str, n: int) -> list[str]:
    """Items that still have fewer than n eligible assignees in this phase."""
    ids = list(item_ids)
    if len(ids) > _CHUNK:
        return [i for s in range(0, len(ids), _CHUNK) for i in shortfall(conn, ids[s:s + _CHUNK], phase, n)]
    if not ids:
        return []
    excluded = _excluded(conn, ids, phase)
    have: dict[str, set[int]] = {i: set() for i in ids}
    for item_id, uid in conn.execute(select(AssignmentRow.item_id, AssignmentRow.user_id).where(
            AssignmentRow.item_id.in_(ids), AssignmentRow.phase == phase)):
        have[item_id].add(uid)
    return [i for i in ids if len(have[i] - (excluded[i] if phase != "review" else set())) < n]


def unstaffable(conn: Connection, item_ids: Iterable[str], phase: str, n: int, people: list[User],
                routing: RoutingConfig | None = None) -> list[str]:
    """Items that cannot reach n eligible assignees even if everyone eligible who is free took them (a real
    shortfall: too few accounts, or all fitting reviewers deactivated), as opposed to items not assigned yet."""
    routing = routing or RoutingConfig()
    ids = list(item_ids)
    out: list[str] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        routes, excluded = _item_routes(conn, chunk), _excluded(conn, chunk, phase)
        existing: dict[str, set[int]] = {i: set() for i in chunk}
        for item_id, uid in conn.execute(select(AssignmentRow.item_id, AssignmentRow.user_id).where(
                AssignmentRow.item_id.in_(chunk), AssignmentRow.phase == phase)):
            existing[item_id].add(uid)
        for item_id in chunk:
            have = len(existing[item_id] - (excluded[item_id] if phase != "review" else set()))
            language, specialty = routes.get(item_id, ("", None))
            free = [u for u in people if u.id not in existing[item_id] and u.id not in excluded[item_id]
                    and (routing.fallback == "any" or fits(u, language, specialty, routing))]
            if have + len(free) < n:
                out.append(item_id)
    return out

"""Read everything the release needs from the store in a few bulk queries (one consistent read).

Items become `medcot.records.Item`s; CoT versions, decisions, reviews and rubric scores small typed records
(named tuples for the two that come in hundreds of thousands); attempts stay plain tuples (rows.py unpacks
them by position, so keep the column order of that select).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Row

from medcot.db import AttemptRow, CallRow, CandidateRow, EventRow, GenerationRow, ItemRow
from medcot.records import Item
from medcot.review_tables import DecisionRow, ReviewRow, RevisionRow, RubricScoreRow, UserRow
from medcot.store import Store

COT_PURPOSES = ("initial", "edited", "regenerated")
ITEM_FIELDS: tuple[str, ...] = Item.__slots__  # type: ignore[attr-defined]


@dataclass(slots=True)
class CotVersion:
    """One version of an item's CoT: "initial" (revision 0), "edited" by hand, or "regenerated" by the LLM."""

    item_id: str
    call_id: int | None
    purpose: str
    revision: int
    prompt_version: str
    cot: str
    answer: str | None
    reasoning: str | None = None  # the generator's thinking for this CoT (None: none returned, or a hand edit)


@dataclass(slots=True)
class Decision:
    item_id: str
    user_id: int | None
    kind: str
    human_approvals: int
    automated_approvals: int
    expert_validated: bool
    details: dict[str, Any] | None = None  # panel actions: round, answer, scores, revision_hash, blind, labels


class Review(NamedTuple):
    """A `reviews` row: an initial review (phase "review") or an adjudication verdict."""

    item_id: str
    user_id: int
    phase: str
    relevance: int
    correctness: int
    sufficiency: int
    answer: str | None
    approve: bool
    revision_hash: str | None
    blind: bool
    proposal: bool
    difficulty: str | None
    cognitive_level: str | None
    standard_version: str | None


class RubricScore(NamedTuple):
    item_id: str
    user_id: int
    round: int
    dimension: str
    score: int
    phase: str
    revision_hash: str | None
    standard_version: str | None


@dataclass
class Snapshot:
    items: list[Item]                                  # ordered by id
    users: dict[int, Row]                              # id -> (id, name, kind)
    cots: dict[str, list[CotVersion]]                  # item -> CoT versions by revision (initial first)
    revisions: dict[str, list[Row]] = field(default_factory=dict)    # item -> by id
    reviews: dict[str, list[Review]] = field(default_factory=dict)           # item -> by id
    rubric: dict[str, list[RubricScore]] = field(default_factory=dict)       # item -> by id
    decisions: dict[str, list[Decision]] = field(default_factory=dict)       # item -> by id (last = current)
    attempts: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # (item, round, no, template, letter, correct)
    calls: dict[int, str] = field(default_factory=dict)              # call id -> model, for CoT calls
    imported_models: dict[str, str] = field(default_factory=dict)    # item -> model named by `curate import-cot`
    prompt_versions: dict[str, list[str]] = field(default_factory=dict)  # item -> sorted distinct versions
    strike_escalated: set[str] = field(default_factory=set)  # failed five-strike ("escalated" event, stage strikes)
    escalated: set[str] = field(default_factory=set)         # escalated to the panel by any stage
    rejected_candidates: Counter[str] = field(default_factory=Counter)  # check -> count
    rejected_reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    def current_decision(self, item_id: str) -> Decision | None:
        rows = self.decisions.get(item_id)
        return rows[-1] if rows else None

    def initial_cot(self, item_id: str) -> CotVersion | None:
        """The raw LLM CoT before any review (purpose "initial", revision 0)."""
        rows = self.cots.get(item_id)
        return rows[0] if rows and rows[0].purpose == "initial" else None

    def current_cot(self, item_id: str) -> CotVersion | None:
        """The CoT as it stands: the highest revision (initial, hand-edited or regenerated)."""
        rows = self.cots.get(item_id)
        return rows[-1] if rows else None


def read_snapshot(store: Store) -> Snapshot:
    with store.engine.connect() as conn:
        items = [Item(*r) for r in conn.execute(select(*(ItemRow.__table__.c[f] for f in ITEM_FIELDS))
                                                .order_by(ItemRow.id)).all()]
        users = {r.id: r for r in conn.execute(select(UserRow.id, UserRow.name, UserRow.kind)).all()}
        g = GenerationRow
        cots = _grouped(conn, select(g.item_id, g.call_id, g.purpose, g.revision, g.prompt_version, g.cot, g.answer,
                               g.reasoning)
                        .where(g.purpose.in_(COT_PURPOSES)).order_by(g.item_id, g.revision, g.id), CotVersion)
        snap = Snapshot(items=items, users=users, cots=cots)
        snap.revisions = _grouped(conn, select(RevisionRow).order_by(RevisionRow.id))
        r = ReviewRow
        snap.reviews = _grouped(conn, select(r.item_id, r.user_id, r.phase, r.relevance, r.correctness, r.sufficiency,
                                             r.answer, r.approve, r.revision_hash, r.blind, r.proposal,
                                             r.difficulty, r.cognitive_level, r.standard_version).order_by(r.id),
                                _review)
        s = RubricScoreRow
        snap.rubric = _grouped(conn, select(s.item_id, s.user_id, s.round, s.dimension, s.score, s.phase,
                                            s.revision_hash, s.standard_version).order_by(s.id), RubricScore)
        d = DecisionRow
        snap.decisions = _grouped(conn, select(d.item_id, d.user_id, d.kind, d.human_approvals, d.automated_approvals,
                                               d.expert_validated, d.details).order_by(d.id), Decision)
        snap.attempts = _grouped(conn, select(AttemptRow.item_id, AttemptRow.round, AttemptRow.attempt_no,
                                              AttemptRow.template, AttemptRow.letter, AttemptRow.correct)
                                 .order_by(AttemptRow.item_id, AttemptRow.round, AttemptRow.attempt_no), tuple)
        _read_escalations(conn, snap)
        _read_calls(conn, snap)
        _read_candidates(conn, snap)
    return snap


def _review(*values: Any) -> Review:
    """`blind` and `proposal` as booleans ("proposed a change": a JSON null or empty proposal is none)."""
    review = Review(*values)
    return review._replace(blind=bool(review.blind), proposal=bool(review.proposal))


def _grouped(conn: Connection, query: Any, make: Any = None) -> dict[str, list[Any]]:
    """Rows grouped by their first column / `item_id` (order kept), each made into `make(*row)` if given."""
    out: dict[str, list[Any]] = defaultdict(list)
    if make is None:
        for r in conn.execute(query).all():
            out[r.item_id].append(r)
    elif make is tuple:
        for r in conn.execute(query).all():
            out[r[0]].append(tuple(r))
    else:
        for r in conn.execute(query).all():
            out[r[0]].append(make(*r))
    return dict(out)


def _read_escalations(conn: Connection, snap: Snapshot) -> None:
    query = (select(EventRow.item_id, EventRow.stage)
             .where(EventRow.kind == "escalated", EventRow.item_id.is_not(None)).distinct())
    for item_id, stage in conn.execute(query):
        snap.escalated.add(item_id)
        if stage == "strikes":
            snap.strike_escalated.add(item_id)


def _read_calls(conn: Connection, snap: Snapshot) -> None:
    """The model behind each CoT version, and every prompt version used on each item."""
    g = GenerationRow
    query = (select(CallRow.id, CallRow.model).join(g, g.call_id == CallRow.id)
             .where(g.purpose.in_(COT_PURPOSES)).distinct())
    snap.calls = {cid: model for cid, model in conn.execute(query).all()}
    imported = select(EventRow.item_id, EventRow.payload).where(EventRow.kind == "imported",
                                                                EventRow.stage == "import-cot")
    snap.imported_models = {item_id: str(payload["model"]) for item_id, payload in conn.execute(imported).all()
                            if item_id is not None and (payload or {}).get("model")}
    versions: dict[str, list[str]] = defaultdict(list)
    query = (select(CallRow.item_id, CallRow.prompt_version).where(CallRow.item_id.is_not(None)).distinct()
             .order_by(CallRow.item_id, CallRow.prompt_version))
    for item_id, prompt_version in conn.execute(query).all():
        if prompt_version:
            versions[item_id].append(prompt_version)
    snap.prompt_versions = dict(versions)


def _read_candidates(conn: Connection, snap: Snapshot) -> None:
    rows = conn.execute(select(CandidateRow.check, CandidateRow.reason, func.count())
                        .group_by(CandidateRow.check, CandidateRow.reason))
    for check, reason, n in rows:
        snap.rejected_candidates[check] += n
        snap.rejected_reasons[(check, reason)] += n

"""Consensus (paper 2.3.5): the rules that approve, adjudicate or remove an item, and the ONLY writer of them.

THE INVARIANT (curation.review.invariant, re-verified by the release builder from the raw votes):
an approval counts only if it was cast by a human, on the exact revision released (question, options, key
and CoT), blind (no other reviewer's verdict, answer, comment or edit was visible to that reviewer before
the vote), agrees with the key, proposes no change, and scores the rubric compatibly with approval.
expert_validated needs such approvals from >= 2 distinct HUMAN users, always. Automated approvals may approve
only where `review.automated: llm` was set explicitly (the demo), recorded with expert_validated = False.

- initial review (stage strikes_passed): `min_agree` approvals of the base revision and no fresh rejection
  and no proposal -> approved; all reject without proposals -> the panel; anything else (a split, a
  proposal to reconcile) -> adjudication. An item repaired since (a new revision) -> the panel judges it afresh.
- panel (stage panel_done): the panel's accept votes on the revision in force, by the same rule; all
  reject -> removed; otherwise adjudication.
- adjudication (reconciliation; the adjudicator sees everything, so their verdict is never a blind approval):
  reject -> removed; approve as is -> approved if the blind approvals on this revision suffice, else the panel
  confirms it; approve with edits -> a new revision (five-strike again if question, options or key changed),
  then the panel.

`record_outcome` recomputes the votes from the store under the item's lock and refuses an approval the
rules do not support, whoever calls it (web app, CLI, stage, import): ConsensusError.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from curation.review import assign as assigning
from curation.review.invariant import VoteRecord, problems, vote_from_panel, vote_from_review
from curation.review.items import get_item, item_revision, lock_item, revision_count, set_stage
from curation.review.records import OUTCOMES, PANEL_ACTIONS, Outcome, ReviewError, User, Vote
from medcot.config import ReviewConfig
from medcot.records import Event, Item
from medcot.review_tables import DecisionRow, ReviewRow, RubricScoreRow, UserRow
from medcot.store import Store

DECIDABLE = ("strikes_passed", "panel_done", "adjudication")
STALE = "cast on another revision"


class ConsensusError(ReviewError):
    def __init__(self, message: str):
        super().__init__(message, 409)


def _vote(rec: VoteRecord, name: str, revision: str, item: Item, cfg: ReviewConfig) -> Vote:
    found = problems(rec, revision, item.answer, cfg)
    fresh = rec.revision_hash is not None and rec.revision_hash == revision
    approve = not [p for p in found if not p.startswith(STALE)]
    return Vote(user_id=rec.user_id, user=name, kind=rec.kind, phase=rec.phase, answer=rec.answer, approve=approve,
                fresh=fresh, reason="; ".join(found), proposal=rec.proposal)


def review_scores(conn: Connection, item_id: str, phase: str) -> dict[tuple[int, str | None], dict[str, int]]:
    """(user id, revision hash) -> that rater's rubric scores in this phase."""
    out: dict[tuple[int, str | None], dict[str, int]] = {}
    for uid, rev, dim, score in conn.execute(select(RubricScoreRow.user_id, RubricScoreRow.revision_hash,
                                                    RubricScoreRow.dimension, RubricScoreRow.score)
                                             .where(RubricScoreRow.item_id == item_id, RubricScoreRow.phase == phase)):
        out.setdefault((uid, rev), {})[dim] = score
    return out


def review_votes(conn: Connection, item: Item, cfg: ReviewConfig, phase: str = "review") -> list[Vote]:
    rows = conn.execute(select(*ReviewRow.__table__.c, UserRow.name, UserRow.kind.label("user_kind"))
                        .join(UserRow, UserRow.id == ReviewRow.user_id)
                        .where(ReviewRow.item_id == item.id, ReviewRow.phase == phase)
                        .order_by(ReviewRow.id)).mappings().all()
    revision = item_revision(conn, item)
    scores = review_scores(conn, item.id, "review") if phase == "review" else {}
    return [_vote(vote_from_review(r, r["user_kind"], scores.get((r["user_id"], r["revision_hash"]))), r["name"],
                  revision, item, cfg) for r in rows]


def panel_decisions(conn: Connection, item_id: str, round_: int | None = None) -> list[dict[str, Any]]:
    """Panelists' actions (latest per panelist per round), with names and kinds."""
    rows = conn.execute(select(DecisionRow.id, DecisionRow.user_id, DecisionRow.kind, DecisionRow.details,
                               DecisionRow.created_at, UserRow.name, UserRow.kind.label("user_kind"))
                        .join(UserRow, UserRow.id == DecisionRow.user_id)
                        .where(DecisionRow.item_id == item_id, DecisionRow.kind.in_(PANEL_ACTIONS))
                        .order_by(DecisionRow.id)).mappings().all()
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for r in rows:
        rnd = int((r["details"] or {}).get("round", -1))
        if round_ is None or rnd == round_:
            latest[(r["user_id"], rnd)] = {**dict(r), "round": rnd}
    return list(latest.values())


def panel_votes(conn: Connection, item: Item, cfg: ReviewConfig) -> list[Vote]:
    revision = item_revision(conn, item)
    return [_vote(vote_from_panel(d["user_id"], d["user_kind"], d["kind"], d["details"]), d["name"], revision, item, cfg)
            for d in panel_decisions(conn, item.id, revision_count(conn, item.id))]


def went_to_panel(conn: Connection, item_id: str) -> bool:
    return conn.scalar(select(DecisionRow.id).where(DecisionRow.item_id == item_id,
                                                    DecisionRow.kind.in_(PANEL_ACTIONS)).limit(1)) is not None


def basis_votes(conn: Connection, item: Item, cfg: ReviewConfig) -> list[Vote]:
    """The votes of the last phase before any adjudication: the panel's if the item went there."""
    return panel_votes(conn, item, cfg) if went_to_panel(conn, item.id) else review_votes(conn, item, cfg)


def _count(votes: list[Vote], cfg: ReviewConfig) -> tuple[int, int, int]:
    """(human approvals, automated approvals, approvals that may approve under this config)."""
    human = sum(1 for v in votes if v.counts_as_approval and v.kind == "human")
    automated = sum(1 for v in votes if v.counts_as_approval and v.kind != "human")
    return human, automated, human + (automated if cfg.automated == "llm" else 0)


def verdict(votes: list[Vote], cfg: ReviewConfig) -> tuple[str, str]:
    """("approve" | "reject" | "split" | "waiting", reason) for one phase's votes."""
    if not votes:
        return "waiting", "no votes yet"
    if proposing := [v.user for v in votes if v.proposal and v.fresh]:
        return "split", f"proposed changes to reconcile ({', '.join(sorted(proposing))})"
    human, automated, counted = _count(votes, cfg)
    rejections = [v for v in votes if v.fresh and not v.approve]
    stale = [v for v in votes if not v.fresh]
    if counted >= cfg.consensus.min_agree and not rejections:
        return "approve", f"agreement: {counted} experts agree on the answer and approve the wording"
    if not any(v.counts_as_approval for v in votes) and not stale:
        return "reject", "all reject: " + "; ".join(sorted({f"{v.user} ({v.reason})" for v in rejections}))
    if stale and not rejections:
        return "split", "stale approvals: the wording changed after some approvals"
    if counted < cfg.consensus.min_agree and not rejections:
        return "split", f"too few approvals: only {counted} count (human {human}, automated {automated})"
    return "split", f"experts disagree: {len(votes) - len(rejections)} approve, {len(rejections)} reject"


def decide(conn: Connection, item: Item, cfg: ReviewConfig) -> Outcome:
    """What consensus says for an item now: kind approved|adjudication|removed|escalate, or "" (wait)."""
    if item.stage == "strikes_passed":
        if revision_count(conn, item.id):  # repaired by the panel or an adjudicator, and re-checked by five-strike
            return _outcome("escalate", "a new revision after repair: the panel judges it afresh", [], cfg)
        votes = review_votes(conn, item, cfg)
        v, reason = verdict(votes, cfg)
        kind = {"approve": "approved", "reject": "escalate", "split": "adjudication", "waiting": ""}[v]
        return _outcome(kind, "initial review failed: " + reason if v == "reject" else reason, votes, cfg)
    if item.stage == "panel_done":
        votes = panel_votes(conn, item, cfg)
        v, reason = verdict(votes, cfg)
        kind = {"approve": "approved", "reject": "removed", "split": "adjudication", "waiting": ""}[v]
        return _outcome(kind, "panel rejected: " + reason if v == "reject" else reason, votes, cfg)
    if item.stage == "adjudication":
        verdicts = conn.execute(select(ReviewRow.approve, ReviewRow.answer, ReviewRow.proposal).where(
            ReviewRow.item_id == item.id, ReviewRow.phase == "adjudication")).all()
        if not verdicts:
            return _outcome("", "awaiting adjudication", [], cfg)
        if not all(ok and answer == item.answer for ok, answer, _ in verdicts):
            return _outcome("removed", "no consensus after adjudication: adjudicator rejected", [], cfg)
        votes = basis_votes(conn, item, cfg)
        human, _, counted = _count(votes, cfg)
        if counted >= cfg.consensus.min_agree and (human >= 2 or cfg.automated == "llm"):
            return _outcome("approved", f"adjudicated: {counted} blind approvals of this revision", votes, cfg)
        return _outcome("escalate", f"adjudicator confirmed the text, but only {counted} blind approval(s) of this "
                                    "revision count: the panel judges it", votes, cfg)
    return _outcome("", f"stage {item.stage}: nothing to decide", [], cfg)


def send_to_panel(conn: Connection, item_id: str, reason: str, cfg: ReviewConfig) -> None:
    """The panel judges the revision in force afresh (blind: it never sees the earlier votes or proposals)."""
    set_stage(conn, item_id, "escalated", Event(kind="escalated", item_id=item_id, stage="panel",
                                                payload={"reason": reason, "source": "reconciliation"}))
    assigning.assign(conn, [item_id], "panel", cfg.panel.panelists_per_item, assigning.pool(conn, cfg, "panel"),
                     routing=cfg.routing)


def reconcile(conn: Connection, item_id: str, changed: list[str], cfg: ReviewConfig, reason: str) -> str:
    """After a repair (adjudicator or panelist): five-strike again when question, options or key changed
    (stage restrike), else straight back to the panel. Returns the new stage. Call under lock_item."""
    if set(changed) & {"question", "options", "answer"}:
        set_stage(conn, item_id, "restrike", Event(kind="restrike", item_id=item_id, stage="consensus",
                                                   payload={"reason": reason, "changed": changed}))
        return "restrike"
    send_to_panel(conn, item_id, reason, cfg)
    return "escalated"


def _outcome(kind: str, reason: str, votes: list[Vote], cfg: ReviewConfig) -> Outcome:
    human, automated, _ = _count(votes, cfg)
    return Outcome(kind=kind, reason=reason, human_approvals=human, automated_approvals=automated, votes=votes)


def record_outcome(conn: Connection, item_id: str, kind: str, cfg: ReviewConfig, actor: User | None = None,
                   reason: str = "") -> Outcome:
    """Write a consensus outcome. The votes are recomputed here; an approval the rules do not support is
    refused (ConsensusError), whoever asks. Locks the item."""
    if kind not in OUTCOMES:
        raise ReviewError(f"outcome must be one of {', '.join(OUTCOMES)}")
    stage = lock_item(conn, item_id)
    item = get_item(conn, item_id)
    if stage not in DECIDABLE + ("escalated",):
        raise ConsensusError(f"item {item_id} is at stage {stage}: no consensus outcome can be recorded")
    if stage == "escalated" and kind != "adjudication":
        raise ConsensusError(f"item {item_id} is still with the panel")
    current = decide(conn, item, cfg)
    if kind == "approved":
        _check_approval(item, current, cfg)
    outcome = Outcome(kind=kind, reason=reason or current.reason, human_approvals=current.human_approvals,
                      automated_approvals=current.automated_approvals, votes=current.votes)
    _write(conn, item, outcome, cfg, actor)
    return outcome


def _check_approval(item: Item, current: Outcome, cfg: ReviewConfig) -> None:
    if current.kind != "approved":
        raise ConsensusError(f"cannot approve {item.id} (stage {item.stage}): {current.reason}")
    counted = current.human_approvals + (current.automated_approvals if cfg.automated == "llm" else 0)
    if counted < cfg.consensus.min_agree or (cfg.automated != "llm" and current.human_approvals < 2):
        raise ConsensusError(f"cannot approve {item.id}: {current.human_approvals} human approval(s); "
                             f"at least {cfg.consensus.min_agree} needed")


def _write(conn: Connection, item: Item, outcome: Outcome, cfg: ReviewConfig, actor: User | None) -> None:
    basis = "automated" if outcome.kind == "approved" and outcome.human_approvals < 2 else "human"
    details = {"reason": outcome.reason, "votes": [v.as_dict() for v in outcome.votes],
               "rule": f"min_agree={cfg.consensus.min_agree}, automated={cfg.automated}"}
    if outcome.kind == "approved":
        details["basis"] = basis
    conn.execute(insert(DecisionRow).values(
        item_id=item.id, user_id=actor.id if actor else None, kind=outcome.kind,
        human_approvals=outcome.human_approvals, automated_approvals=outcome.automated_approvals,
        expert_validated=outcome.expert_validated, details=details))
    set_stage(conn, item.id, outcome.kind, Event(
        kind="decision", item_id=item.id, stage="consensus", actor=actor.name if actor else "system",
        actor_kind=actor.kind if actor else "system",
        payload={"outcome": outcome.kind, "reason": outcome.reason, "human_approvals": outcome.human_approvals,
                 "automated_approvals": outcome.automated_approvals,
                 "expert_validated": outcome.expert_validated}))
    if outcome.kind == "adjudication":
        assigning.assign(conn, [item.id], "adjudication", 1, assigning.pool(conn, cfg, "adjudication"),
                         routing=cfg.routing)


def escalate(conn: Connection, item_id: str, reason: str) -> None:
    """Send an item whose initial review failed to the panel (stage escalated). Locks the item."""
    stage = lock_item(conn, item_id)
    if stage != "strikes_passed":
        raise ReviewError(f"item {item_id} is at {stage}, not strikes_passed")
    set_stage(conn, item_id, "escalated", Event(kind="escalated", item_id=item_id, stage="panel",
                                                payload={"reason": reason, "source": "initial review"}))


@dataclass
class ConsensusSummary:
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    expert_validated: int = 0
    automated_only: int = 0
    waiting: Counter[str] = field(default_factory=Counter)


def run_consensus(store: Store, cfg: ReviewConfig,
                  progress: Callable[[int, int], None] | None = None) -> ConsensusSummary:
    """Decide every decidable item (one transaction each, so the write lock is held for one item at a time);
    rerunning continues where it stopped. `progress(done, total)` is called after each item."""
    summary = ConsensusSummary()
    todo = [item for item in store.items() if item.stage in DECIDABLE]
    for done, item in enumerate(todo, 1):
        if progress is not None:
            progress(done - 1, len(todo))
        with store.transaction() as conn:
            lock_item(conn, item.id)
            fresh = get_item(conn, item.id)
            out = decide(conn, fresh, cfg)
            if out.kind in ("", "escalate") or (out.kind == "adjudication" and fresh.stage == "adjudication"):
                summary.waiting[out.reason if out.kind == "" else "initial review failed: awaits the panel"] += 1
                continue
            outcome = record_outcome(conn, item.id, out.kind, cfg)
        summary.outcomes[outcome.kind] += 1
        summary.reasons[_short(outcome.reason)] += 1
        if outcome.kind == "approved":
            summary.expert_validated += int(outcome.expert_validated)
            summary.automated_only += int(not outcome.expert_validated)
    if progress is not None:
        progress(len(todo), len(todo))
    return summary


def consensus_job(store_url: str, cfg: ReviewConfig, progress: Callable[[int, int], None]) -> dict[str, Any]:
    """`run_consensus` on its own connection to the store (the review app runs it in a child process)."""
    store = Store(store_url, create=False)
    try:
        summary = run_consensus(store, cfg, progress)
    finally:
        store.close()
    return {"outcomes": dict(summary.outcomes), "expert_validated": summary.expert_validated,
            "automated_only": summary.automated_only, "waiting": dict(summary.waiting)}


def _short(reason: str) -> str:
    return reason.split(":")[0][:80]

"""Consensus (paper 2.3.5): the rules that approve, adjudicate or remove an item, and the ONLY writer of them.

A vote approves when the expert's answer equals the item's key AND they approve the wording (and, by
default, judged relevance, correctness and sufficiency all 1). A vote is fresh when it was cast on the
current wording (review: no edit after it; panel: the CoT revision in force).

- approved: at least `min_agree` fresh approvals and no fresh rejection. Only kind "human"
  approvals count, unless `review.automated: llm` was set explicitly (the demo): then automated approvals
  may approve, but the item is recorded with expert_validated = False. expert_validated needs >= 2 HUMAN
  approvals, always.
- all fresh votes reject: after the initial review the item goes to the panel; after the panel it is removed.
- anything else (a split, or approvals made stale by a later edit): adjudication by an admin or a third expert.
- after adjudication: approved if the adjudicator approves and the approvals (theirs included) meet the rule;
  otherwise removed (no consensus).

`record_outcome` recomputes the votes from the store under the item's lock and refuses an approval the
rules do not support, whoever calls it (web app, CLI, stage, import): ConsensusError.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from curation.review import assign as assigning
from curation.review.items import cot_round, get_item, last_revision_time, lock_item, set_stage
from curation.review.records import OUTCOMES, PANEL_ACTIONS, Outcome, ReviewError, User, Vote
from medcot.config import ReviewConfig
from medcot.records import Event, Item
from medcot.review_tables import DecisionRow, ReviewRow, UserRow
from medcot.store import Store

DECIDABLE = ("strikes_passed", "panel_done", "adjudication")


class ConsensusError(ReviewError):
    def __init__(self, message: str):
        super().__init__(message, 409)


def _vote_from_review(row: Any, item: Item, cfg: ReviewConfig, since: Any) -> Vote:
    agrees = row["answer"] == item.answer
    binary = all(row[d] == 1 for d in ("relevance", "correctness", "sufficiency"))
    approve = bool(row["approve"]) and agrees and (binary or not cfg.consensus.require_all_binary)
    reasons = [r for r, bad in (("answer differs from key", not agrees), ("wording not approved", not row["approve"]),
                                ("a binary judgement is 0", not binary)) if bad]
    fresh = since is None or row["created_at"] >= since
    return Vote(user_id=row["user_id"], user=row["name"], kind=row["user_kind"], phase=row["phase"], answer=row["answer"],
                approve=approve, fresh=fresh, reason="; ".join(reasons) + ("" if fresh else " (wording changed since)"))


def review_votes(conn: Connection, item: Item, cfg: ReviewConfig, phase: str = "review") -> list[Vote]:
    rows = conn.execute(select(*ReviewRow.__table__.c, UserRow.name, UserRow.kind.label("user_kind"))
                        .join(UserRow, UserRow.id == ReviewRow.user_id)
                        .where(ReviewRow.item_id == item.id, ReviewRow.phase == phase)
                        .order_by(ReviewRow.id)).mappings().all()
    since = last_revision_time(conn, item.id)
    return [_vote_from_review(r, item, cfg, since) for r in rows]


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


def panel_votes(conn: Connection, item: Item) -> list[Vote]:
    current = cot_round(conn, item.id)
    votes = []
    for d in panel_decisions(conn, item.id, current):
        answer = (d["details"] or {}).get("answer")
        approve = d["kind"] == "accept" and answer == item.answer
        reason = "" if approve else ("panel: " + d["kind"] if d["kind"] != "accept" else "answer differs from key")
        votes.append(Vote(user_id=d["user_id"], user=d["name"], kind=d["user_kind"], phase="panel", answer=answer,
                          approve=approve, fresh=True, reason=reason))
    return votes


def went_to_panel(conn: Connection, item_id: str) -> bool:
    return conn.scalar(select(DecisionRow.id).where(DecisionRow.item_id == item_id,
                                                    DecisionRow.kind.in_(PANEL_ACTIONS)).limit(1)) is not None


def basis_votes(conn: Connection, item: Item, cfg: ReviewConfig) -> list[Vote]:
    """The votes of the last phase before any adjudication: the panel's if the item went there."""
    return panel_votes(conn, item) if went_to_panel(conn, item.id) else review_votes(conn, item, cfg)


def _count(votes: list[Vote], cfg: ReviewConfig) -> tuple[int, int, int]:
    """(human approvals, automated approvals, approvals that may approve under this config)."""
    human = sum(1 for v in votes if v.counts_as_approval and v.kind == "human")
    automated = sum(1 for v in votes if v.counts_as_approval and v.kind != "human")
    return human, automated, human + (automated if cfg.automated == "llm" else 0)


def verdict(votes: list[Vote], cfg: ReviewConfig) -> tuple[str, str]:
    """("approve" | "reject" | "split" | "waiting", reason) for one phase's votes."""
    if not votes:
        return "waiting", "no votes yet"
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
        votes = review_votes(conn, item, cfg)
        v, reason = verdict(votes, cfg)
        kind = {"approve": "approved", "reject": "escalate", "split": "adjudication", "waiting": ""}[v]
        return _outcome(kind, "initial review failed: " + reason if v == "reject" else reason, votes, cfg)
    if item.stage == "panel_done":
        votes = panel_votes(conn, item)
        v, reason = verdict(votes, cfg)
        kind = {"approve": "approved", "reject": "removed", "split": "adjudication", "waiting": ""}[v]
        return _outcome(kind, "panel rejected: " + reason if v == "reject" else reason, votes, cfg)
    if item.stage == "adjudication":
        verdicts = review_votes(conn, item, cfg, phase="adjudication")
        if not verdicts:
            return _outcome("", "awaiting adjudication", [], cfg)
        votes = basis_votes(conn, item, cfg) + verdicts
        _, _, counted = _count(votes, cfg)
        if all(v.counts_as_approval for v in verdicts) and counted >= cfg.consensus.min_agree:
            return _outcome("approved", f"adjudicated: {counted} approvals", votes, cfg)
        why = "adjudicator rejected" if not all(v.counts_as_approval for v in verdicts) else \
            f"adjudicator approved but only {counted} approvals count"
        return _outcome("removed", f"no consensus after adjudication: {why}", votes, cfg)
    return _outcome("", f"stage {item.stage}: nothing to decide", [], cfg)


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
        assigning.assign(conn, [item.id], "adjudication", 1, assigning.pool(conn, cfg, "adjudication"))


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


def run_consensus(store: Store, cfg: ReviewConfig) -> ConsensusSummary:
    """Decide every decidable item (one transaction each); rerunning continues where it stopped."""
    summary = ConsensusSummary()
    for item in store.items():
        if item.stage not in DECIDABLE:
            continue
        with store.transaction() as conn:
            lock_item(conn, item.id)
            fresh = get_item(conn, item.id)
            out = decide(conn, fresh, cfg)
            if out.kind in ("", "escalate") or (out.kind == "adjudication" and fresh.stage == "adjudication"):
                summary.waiting[out.reason if out.kind == "" else "initial review failed: awaits the panel"] += 1
                continue
            done = record_outcome(conn, item.id, out.kind, cfg)
        summary.outcomes[done.kind] += 1
        summary.reasons[_short(done.reason)] += 1
        if done.kind == "approved":
            summary.expert_validated += int(done.expert_validated)
            summary.automated_only += int(not done.expert_validated)
    return summary


def _short(reason: str) -> str:
    return reason.split(":")[0][:80]

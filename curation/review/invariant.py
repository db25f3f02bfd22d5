"""THE invariant of "expert-validated", as one pure rule that consensus applies and the builder re-verifies.

    An approval counts only if it was cast by a human, on the exact revision released (question, options,
    key and CoT: `medcot.revision.content_hash`), blind (no other reviewer's verdict, answer, comment or edit
    was visible to that reviewer before the vote), agrees with the key, proposes no change, and its rubric
    scores (when given) are compatible with approval under the rubric policy. An item is expert-validated
    only with such approvals from at least two distinct human users.

Consensus (`curation.review.consensus`) counts votes with `counts_for`; the release builder rebuilds every
`VoteRecord` from the store's raw rows and calls the same function on the released text, so a decision row
that claims approvals the raw votes do not support fails the build.
Automated raters (kind "llm"/"demo") may approve in the demo (`review.automated: llm`), never as experts.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from curation.review.standard import policy_problems
from medcot.config import ReviewConfig

INVARIANT = ("An approval counts only if it was cast by a human, on the exact revision released (question, options, "
             "key and chain of thought), blind (no other reviewer's verdict, answer, comment or edit was visible to "
             "that reviewer before the vote), agrees with the key, proposes no change, and scores the rubric "
             "compatibly with approval; a row is expert-validated only with such approvals from at least two "
             "distinct human experts.")


@dataclass(frozen=True)
class VoteRecord:
    """One raw vote as stored: an initial review, a panel action or an adjudication verdict."""

    user_id: int
    kind: str  # actor kind: human | llm | demo
    phase: str  # review | panel | adjudication
    revision_hash: str | None
    approve: bool  # review: approves the text; panel: action "accept"
    answer: str | None
    blind: bool
    binary: tuple[int, ...] = ()  # review: relevance, correctness, sufficiency
    proposal: bool = False  # proposed an edit (its approval is of ITS text, not of this revision)
    scores: Mapping[str, int] = field(default_factory=dict)  # rubric scores given with the vote, if any


def problems(vote: VoteRecord, revision: str, key: str, cfg: ReviewConfig) -> list[str]:
    """Why this vote is not an approval of `revision` with key `key` ([] when it is one; kind is not checked)."""
    out = []
    if not vote.approve:
        out.append("wording not approved" if vote.phase != "panel" else "panel action is not accept")
    if vote.answer != key:
        out.append("answer differs from key")
    if vote.phase == "review" and cfg.consensus.require_all_binary and any(b != 1 for b in vote.binary):
        out.append("a binary judgement is 0")
    if vote.proposal:
        out.append("proposes a change (a proposal is reconciled, then judged afresh)")
    if vote.scores:
        out += policy_problems(vote.scores, cfg.rubric_policy.min_score, cfg.rubric_policy.required)
    elif vote.phase == "panel":
        out.append("no rubric scores")
    if vote.revision_hash is None or vote.revision_hash != revision:
        out.append("cast on another revision (the text changed since)")
    if not vote.blind:
        out.append("not blind (other reviewers' votes or edits were visible)")
    return out


def counts_for(vote: VoteRecord, revision: str, key: str, cfg: ReviewConfig) -> bool:
    return not problems(vote, revision, key, cfg)


def human_approvers(votes: Iterable[VoteRecord], revision: str, key: str, cfg: ReviewConfig) -> set[int]:
    """Distinct human users whose votes approve exactly this revision under the invariant."""
    return {v.user_id for v in votes if v.kind == "human" and counts_for(v, revision, key, cfg)}


def automated_approvers(votes: Iterable[VoteRecord], revision: str, key: str, cfg: ReviewConfig) -> set[int]:
    return {v.user_id for v in votes if v.kind != "human" and counts_for(v, revision, key, cfg)}


def vote_from_review(row: Mapping[str, object], user_kind: str, scores: Mapping[str, int] | None = None) -> VoteRecord:
    """From a `reviews` row (initial review or adjudication) and that user's rubric scores for it."""
    return VoteRecord(user_id=int(row["user_id"]), kind=user_kind, phase=str(row["phase"]),  # type: ignore[call-overload]
                      revision_hash=row.get("revision_hash"),  # type: ignore[arg-type]
                      approve=bool(row["approve"]), answer=row["answer"],  # type: ignore[arg-type]
                      blind=bool(row.get("blind", True)) and row["phase"] != "adjudication",
                      binary=tuple(int(row[d]) for d in ("relevance", "correctness", "sufficiency")),  # type: ignore[call-overload]
                      proposal=bool(row.get("proposal")), scores=dict(scores or {}))


def vote_from_panel(user_id: int, user_kind: str, action: str, details: Mapping[str, object] | None) -> VoteRecord:
    """From a panel `decisions` row (kind = the action; details hold answer, scores, revision_hash, blind)."""
    d = details or {}
    return VoteRecord(user_id=user_id, kind=user_kind, phase="panel", revision_hash=d.get("revision_hash"),  # type: ignore[arg-type]
                      approve=action == "accept", answer=d.get("answer"),  # type: ignore[arg-type]
                      blind=bool(d.get("blind", False)), proposal=bool(d.get("proposal")),
                      scores=dict(d.get("scores") or {}))  # type: ignore[call-overload]

"""Store snapshot -> typed release rows for each config.

- `unvalidated`: every item with an initial CoT, in its ORIGINAL wording with the raw LLM CoT, before any review.
- `validated`: items whose current decision is "approved" by >= 2 human experts (expert_validated), or, only
  when automated reviewers are allowed, approved by automated reviewers (labelled so). Current wording and CoT.
- `panel`: items escalated to the expert panel, with every rubric score and the outcome. Current wording.

Reviewed rows carry what the raw votes say about the RELEASED revision (`medcot.revision.content_hash` of the
question, options, key and CoT as written): the approvers under THE invariant (`curation.review.invariant`,
recomputed here from the snapshot, never read from the decision row; `integrity` fails the build on a claim
they do not support), the rubric scores given to that revision, their per-dimension medians, and the majority
difficulty and cognitive level. Rater pseudonyms are HMAC-SHA256 of the user id under the store's secret.
"""
from __future__ import annotations

import hashlib
import hmac
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from curation.review.invariant import VoteRecord, problems, vote_from_panel, vote_from_review
from dataset_builder.features import (
    DIMENSIONS,
    LETTERS,
    VALIDATION_NOTES,
    ReleaseRow,
    empty_consensus,
    empty_five_strike,
)
from dataset_builder.snapshot import CotVersion, RubricScore, Snapshot
from medcot.config import ReviewConfig
from medcot.records import Item
from medcot.review_tables import COGNITIVE_LEVELS, DIFFICULTIES
from medcot.revision import content_hash

PANEL_ACTIONS = ("accept", "revise", "regenerate", "discard")
PANEL_STAGES = ("escalated", "panel_done")
_DIMENSION_ORDER = {d: i for i, d in enumerate(("medical_correctness", "reasoning_structure", "information_sufficiency",
                                                "terminology_clarity", "clinical_utility"))}


@dataclass
class RowSets:
    rows: dict[str, list[ReleaseRow]]                       # config -> rows
    excluded: Counter[str] = field(default_factory=Counter)  # why approved items stayed out of `validated`
    no_cot: list[str] = field(default_factory=list)          # items without an initial CoT (in no config)


class RowMaker:
    """Builds rows from one snapshot; `key` (the store's secret) pseudonymises reviewer ids, `review` holds the
    rules of the invariant (rubric policy, binary judgements), `pipeline_version` goes in provenance."""

    def __init__(self, snap: Snapshot, key: str, pipeline_version: str, allow_automated: bool,
                 review: ReviewConfig | None = None):
        self.snap = snap
        self.pipeline_version = pipeline_version
        self.allow_automated = allow_automated
        self.review = review or ReviewConfig()
        self.kinds: dict[int | None, str | None] = {uid: u.kind for uid, u in snap.users.items()}
        self.hashes: dict[int | None, str | None] = {uid: rater_hash(key, uid) for uid in snap.users}

    # ---- selection ---------------------------------------------------------------------------------
    def build(self) -> RowSets:
        out = RowSets(rows={"validated": [], "unvalidated": [], "panel": []})
        for item in self.snap.items:
            if self.snap.initial_cot(item.id) is None:
                out.no_cot.append(item.id)
                continue
            out.rows["unvalidated"].append(self.unvalidated_row(item))
            label = self.validation_label(item.id)
            reviewed = None
            if label == "expert" or (label == "automated" and self.allow_automated):
                reviewed = self.reviewed_row(item, label)
                out.rows["validated"].append(reviewed)
            elif label == "automated":
                out.excluded["approved by automated reviewers only (build.allow_automated_reviewers is false)"] += 1
            if self.in_panel(item):
                out.rows["panel"].append(reviewed or self.reviewed_row(item, label))
        return out

    def validation_label(self, item_id: str) -> str:
        """What the current decision claims: "expert" (approved, expert_validated or >= 2 human approvals),
        "automated" (approved otherwise: automated reviewers counted) or "none". integrity.check_consensus then
        verifies every claim that enters `validated` (both flags, two human users on record), so an inconsistent
        record fails the build by name instead of silently dropping out."""
        dec = self.snap.current_decision(item_id)
        if dec is None or dec.kind != "approved":
            return "none"
        if dec.expert_validated or dec.human_approvals >= 2:
            return "expert"
        return "automated"

    def in_panel(self, item: Item) -> bool:
        s = self.snap
        return (item.id in s.escalated or item.stage in PANEL_STAGES
                or any(r.phase == "panel" for r in s.rubric.get(item.id, ()))
                or any(d.kind in PANEL_ACTIONS for d in s.decisions.get(item.id, ())))

    # ---- rows --------------------------------------------------------------------------------------
    def unvalidated_row(self, item: Item) -> ReleaseRow:
        gen = self.snap.initial_cot(item.id)
        assert gen is not None
        question, options, answer = original_texts(item, self.snap.revisions.get(item.id, []))
        return self._row(item, question, options, answer, gen, five_strike=empty_five_strike(), reviews=[],
                         rubric=[], consensus=empty_consensus(), validation="none", revision_status="unchanged")

    def reviewed_row(self, item: Item, label: str) -> ReleaseRow:
        gen = self.snap.current_cot(item.id)
        assert gen is not None
        released = content_hash(item.question, item.options, item.answer, gen.cot)
        scores = [r for r in self.snap.rubric.get(item.id, ()) if r.revision_hash == released]
        row = self._row(item, item.question, item.options, item.answer, gen,
                        five_strike=self.five_strike(item.id), reviews=self.reviews(item.id),
                        rubric=self.rubric(scores), consensus=self.consensus(item.id), validation=label,
                        revision_status=self.revision_status(item.id))
        self.summarise(row, item.id, released, scores)
        self.check_votes(row, item, released)
        return row

    # ---- the invariant, from the raw votes ---------------------------------------------------------
    def votes(self, item_id: str) -> list[VoteRecord]:
        """Every vote on the item as stored: initial reviews and adjudications (with the reviewer's rubric scores
        of the revision they judged) and the panel's actions (the latest per panelist and round)."""
        scores: dict[tuple[int, str | None], dict[str, int]] = {}
        for r in self.snap.rubric.get(item_id, ()):
            if r.phase == "review":
                scores.setdefault((r.user_id, r.revision_hash), {})[r.dimension] = r.score
        out = [vote_from_review(r._asdict(), self.kinds.get(r.user_id) or "unknown",
                                scores.get((r.user_id, r.revision_hash)))
               for r in self.snap.reviews.get(item_id, ())]
        latest: dict[tuple[int | None, int], Any] = {}
        for d in self.snap.decisions.get(item_id, ()):
            if d.kind in PANEL_ACTIONS and d.user_id is not None:
                latest[(d.user_id, int((d.details or {}).get("round", -1)))] = d
        out += [vote_from_panel(d.user_id, self.kinds.get(d.user_id) or "unknown", d.kind, d.details)
                for d in latest.values()]
        return out

    def check_votes(self, row: ReleaseRow, item: Item, released: str) -> None:
        """Distinct users whose raw votes approve the released revision under the invariant (row.extra, for
        integrity.check_consensus), and why the other human votes do not count."""
        human: set[int] = set()
        automated: set[int] = set()
        refused: list[str] = []
        for vote in self.votes(item.id):
            found = problems(vote, released, item.answer, self.review)
            if not found:
                (human if vote.kind == "human" else automated).add(vote.user_id)
            elif vote.kind == "human":
                refused.append(f"{vote.phase} vote of {self.rater(vote.user_id)}: {'; '.join(found)}")
        row.extra.update(human_approvers=len(human), automated_approvers=len(automated), refused_votes=refused)

    # ---- rubric summary ----------------------------------------------------------------------------
    def summarise(self, row: ReleaseRow, item_id: str, released: str, scores: list[RubricScore]) -> None:
        """rubric_median / rubric_raters / difficulty / cognitive_level over one group of raters of the released
        text: the humans for an expert row (or wherever humans scored), else the automated raters."""
        labels = self.labels(item_id, released)
        kinds = {self.kinds.get(r.user_id) for r in scores} | {self.kinds.get(uid) for uid, *_ in labels}
        group = "human" if row.validation == "expert" or "human" in kinds else (
            "automated" if kinds - {None} else None)
        if group is None:
            return

        def in_group(uid: int | None) -> bool:
            return (self.kinds.get(uid) == "human") == (group == "human")
        per_rater: dict[int, dict[str, int]] = {}
        versions = set()
        for r in scores:  # in id order: a later score of the same rater and dimension wins
            if in_group(r.user_id):
                per_rater.setdefault(r.user_id, {})[r.dimension] = r.score
                versions.add(r.standard_version)
        row.rubric_median = {d: _median([s[d] for s in per_rater.values() if d in s]) for d in DIMENSIONS}
        row.rubric_raters = sum(1 for s in per_rater.values() if all(d in s for d in DIMENSIONS))
        row.rubric_raters_kind = group if per_rater or labels else None
        mine = {uid: (diff, cog) for uid, diff, cog, version in labels if in_group(uid)}
        versions |= {version for uid, _, _, version in labels if in_group(uid)}
        row.difficulty = majority((d for d, _ in mine.values()), DIFFICULTIES)
        row.cognitive_level = majority((c for _, c in mine.values()), COGNITIVE_LEVELS)
        named = sorted(v for v in versions if v)
        row.annotation_standard = ", ".join(named) if named else None

    def labels(self, item_id: str, released: str) -> list[tuple[int, str | None, str | None, str | None]]:
        """(user, difficulty, cognitive level, standard version) given with a vote on the released revision."""
        out: dict[int, tuple[int, str | None, str | None, str | None]] = {}
        for r in self.snap.reviews.get(item_id, ()):
            if r.revision_hash == released and (r.difficulty or r.cognitive_level):
                out[r.user_id] = (r.user_id, r.difficulty, r.cognitive_level, r.standard_version)
        for d in self.snap.decisions.get(item_id, ()):
            det = d.details or {}
            if d.kind in PANEL_ACTIONS and d.user_id is not None and det.get("revision_hash") == released \
                    and (det.get("difficulty") or det.get("cognitive_level")):
                out[d.user_id] = (d.user_id, det.get("difficulty"), det.get("cognitive_level"),
                                  det.get("standard_version"))
        return list(out.values())

    def _row(self, item: Item, question: str, options: dict[str, Any], answer: str, gen: CotVersion,
             **parts: Any) -> ReleaseRow:
        return ReleaseRow(
            id=item.id, family_id=item.family_id, parent_id=item.parent_id, origin=item.origin,
            language=item.language, question=question, options={k: options.get(k) for k in LETTERS},
            answer=answer, cot=gen.cot, cot_answer=gen.answer, reasoning=gen.reasoning, specialty=item.specialty,
            subject=item.subject, aspect=item.aspect, source=item.source, licence=item.licence,
            validation_note=VALIDATION_NOTES[parts["validation"]], provenance=self.provenance(item.id, gen),
            extra={"extra_options": sorted(set(options) - set(LETTERS))}, **parts)

    def five_strike(self, item_id: str) -> dict[str, Any]:
        rows = self.snap.attempts.get(item_id, [])
        if not rows:
            return empty_five_strike()
        last_round = max(r[1] for r in rows)
        first = next((no for _, rnd, no, _, _, ok in rows if rnd == last_round and ok), None)
        return {"attempts": [{"round": rnd, "attempt": no, "template": tpl, "letter": letter, "correct": bool(ok)}
                             for _, rnd, no, tpl, letter, ok in rows],
                "first_correct_attempt": first, "escalated": item_id in self.snap.strike_escalated}

    def reviews(self, item_id: str) -> list[dict[str, Any]]:
        kinds, hashes = self.kinds, self.hashes
        return [{"phase": r.phase, "reviewer_kind": kinds.get(r.user_id), "reviewer_id_hash": hashes.get(r.user_id),
                 "relevance": r.relevance, "correctness": r.correctness, "sufficiency": r.sufficiency,
                 "answer": r.answer, "approve": bool(r.approve)} for r in self.snap.reviews.get(item_id, ())]

    def rubric(self, scores: Iterable[RubricScore]) -> list[dict[str, Any]]:
        kinds, hashes = self.kinds, self.hashes
        rows = sorted(scores, key=lambda r: (r.phase != "review", r.round, hashes.get(r.user_id) or "",
                                             _DIMENSION_ORDER.get(r.dimension, 99), r.dimension))
        return [{"phase": r.phase, "round": r.round, "dimension": r.dimension, "score": r.score,
                 "rater_kind": kinds.get(r.user_id), "rater_id_hash": hashes.get(r.user_id),
                 "standard_version": r.standard_version} for r in rows]

    def consensus(self, item_id: str) -> dict[str, Any]:
        dec = self.snap.current_decision(item_id)
        if dec is None:
            return empty_consensus()
        return {"outcome": dec.kind, "human_approvals": dec.human_approvals,
                "automated_approvals": dec.automated_approvals, "expert_validated": bool(dec.expert_validated)}

    def revision_status(self, item_id: str) -> str:
        purposes = {g.purpose for g in self.snap.cots.get(item_id, [])}
        if "regenerated" in purposes:
            return "regenerated"
        if "edited" in purposes or self.snap.revisions.get(item_id):
            return "modified"
        return "unchanged"

    def provenance(self, item_id: str, gen: CotVersion) -> dict[str, Any]:
        """Model of the LLM call behind the CoT (for a hand edit: the latest LLM-made version before it; for a
        CoT brought in by `curate import-cot`: the model its file named)."""
        versions = self.snap.cots.get(item_id, [])
        made_by = gen if gen.call_id is not None else next(
            (g for g in reversed(versions) if g.call_id is not None and g.revision <= gen.revision), None)
        model = self.snap.calls.get(made_by.call_id) if made_by is not None else self.snap.imported_models.get(item_id)
        return {"model": model, "prompt_version": gen.prompt_version,
                "prompt_versions": self.snap.prompt_versions.get(item_id, []),
                "pipeline_version": self.pipeline_version}

    # ---- reviewers ---------------------------------------------------------------------------------
    def rater(self, user_id: int | None) -> str | None:
        """The published pseudonym of a reviewer (HMAC of the user id under the store's secret)."""
        return self.hashes.get(user_id)


def rater_hash(key: str, user_id: int) -> str:
    """HMAC-SHA256 of the user id under the store's secret key: stable across releases of one store, not
    reversible from user ids without the key (which stays in the store)."""
    return hmac.new(key.encode(), f"rater:{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def majority(labels: Iterable[str | None], order: tuple[str, ...]) -> str | None:
    """The most frequent label; a tie goes to the label later in `order` (the harder one)."""
    counts = Counter(x for x in labels if x in order)
    if not counts:
        return None
    return max(counts, key=lambda x: (counts[x], order.index(x)))


def original_texts(item: Item, revisions: list[Any]) -> tuple[str, dict[str, Any], str]:
    """The wording before any review: the first revision's `old` value of each field, else the item's own."""
    values = {"question": item.question, "options": item.options, "answer": item.answer}
    seen: set[str] = set()
    for rev in revisions:
        if rev.field in values and rev.field not in seen:
            values[rev.field] = rev.old
            seen.add(rev.field)
    return values["question"], values["options"], values["answer"]

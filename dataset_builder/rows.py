"""Store snapshot -> typed release rows for each config.

- `unvalidated`: every item with an initial CoT, in its ORIGINAL wording with the raw LLM CoT, before any review.
- `validated`: items whose current decision is "approved" by >= 2 human experts (expert_validated), or, only
  when automated reviewers are allowed, approved by automated reviewers (labelled so). Current wording and CoT.
- `panel`: items escalated to the expert panel, with every rubric score and the outcome. Current wording.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dataset_builder.features import LETTERS, VALIDATION_NOTES, ReleaseRow, empty_consensus, empty_five_strike
from dataset_builder.snapshot import CotVersion, Snapshot
from medcot.records import Item

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
    """Builds rows from one snapshot; `salt` pseudonymises reviewer ids, `pipeline_version` goes in provenance."""

    def __init__(self, snap: Snapshot, salt: str, pipeline_version: str, allow_automated: bool):
        self.snap = snap
        self.salt = salt
        self.pipeline_version = pipeline_version
        self.allow_automated = allow_automated
        self.kinds: dict[int | None, str | None] = {uid: u.kind for uid, u in snap.users.items()}
        self.hashes: dict[int | None, str | None] = {uid: rater_hash(salt, uid) for uid in snap.users}

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
        return (item.id in s.escalated or item.id in s.rubric or item.stage in PANEL_STAGES
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
        row = self._row(item, item.question, item.options, item.answer, gen,
                        five_strike=self.five_strike(item.id), reviews=self.reviews(item.id),
                        rubric=self.rubric(item.id), consensus=self.consensus(item.id), validation=label,
                        revision_status=self.revision_status(item.id))
        if label == "expert":
            row.extra["human_actors"] = len(self.human_actors(item.id))
        return row

    def _row(self, item: Item, question: str, options: dict[str, Any], answer: str, gen: CotVersion,
             **parts: Any) -> ReleaseRow:
        return ReleaseRow(
            id=item.id, family_id=item.family_id, parent_id=item.parent_id, origin=item.origin,
            language=item.language, question=question, options={k: options.get(k) for k in LETTERS},
            answer=answer, cot=gen.cot, cot_answer=gen.answer, specialty=item.specialty, subject=item.subject,
            aspect=item.aspect, source=item.source, licence=item.licence,
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
        return [{"phase": phase, "reviewer_kind": kinds.get(uid), "reviewer_id_hash": hashes.get(uid),
                 "relevance": rel, "correctness": cor, "sufficiency": suf, "answer": ans, "approve": bool(ok)}
                for _, uid, phase, rel, cor, suf, ans, ok in self.snap.reviews.get(item_id, ())]

    def rubric(self, item_id: str) -> list[dict[str, Any]]:
        kinds, hashes = self.kinds, self.hashes
        rows = sorted(self.snap.rubric.get(item_id, ()),
                      key=lambda r: (r[2], hashes.get(r[1]) or "", _DIMENSION_ORDER.get(r[3], 99), r[3]))
        return [{"round": rnd, "dimension": dim, "score": score, "rater_kind": kinds.get(uid),
                 "rater_id_hash": hashes.get(uid)} for _, uid, rnd, dim, score in rows]

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
        """Model of the LLM call behind the CoT (for a hand edit: the latest LLM-made version before it)."""
        versions = self.snap.cots.get(item_id, [])
        made_by = gen if gen.call_id is not None else next(
            (g for g in reversed(versions) if g.call_id is not None and g.revision <= gen.revision), None)
        model = self.snap.calls.get(made_by.call_id) if made_by is not None else None
        return {"model": model, "prompt_version": gen.prompt_version,
                "prompt_versions": self.snap.prompt_versions.get(item_id, []),
                "pipeline_version": self.pipeline_version}

    # ---- reviewers ---------------------------------------------------------------------------------
    def rater(self, user_id: int | None) -> str | None:
        """The published pseudonym of a reviewer (salted hash of the user id)."""
        return self.hashes.get(user_id)

    def human_actors(self, item_id: str) -> set[int]:
        """Distinct human users with a recorded review, rubric score or decision on the item."""
        s = self.snap
        ids = {r[1] for r in s.reviews.get(item_id, ())} | {r[1] for r in s.rubric.get(item_id, ())}
        ids |= {d.user_id for d in s.decisions.get(item_id, ()) if d.user_id is not None}
        return {u for u in ids if self.kinds.get(u) == "human"}


def rater_hash(salt: str, user_id: int) -> str:
    return hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()[:16]


def original_texts(item: Item, revisions: list[Any]) -> tuple[str, dict[str, Any], str]:
    """The wording before any review: the first revision's `old` value of each field, else the item's own."""
    values = {"question": item.question, "options": item.options, "answer": item.answer}
    seen: set[str] = set()
    for rev in revisions:
        if rev.field in values and rev.field not in seen:
            values[rev.field] = rev.old
            seen.add(rev.field)
    return values["question"], values["options"], values["answer"]

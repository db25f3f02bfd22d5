"""Typed records of the expert review (paper 2.3): what a form submits, what a vote is, what an outcome is.

They are defined once and used by the web app, the LLM judge, the Label Studio import and the stages,
so that every route into the store goes through the same checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medcot.review_tables import BINARY_DIMENSIONS, COGNITIVE_LEVELS, DIFFICULTIES, RUBRIC_DIMENSIONS

PANEL_ACTIONS = ("accept", "revise", "regenerate", "discard")
OUTCOMES = ("approved", "adjudication", "removed")
CONTENT_FIELDS = ("question", "options", "answer", "cot")


class ReviewError(ValueError):
    """A submission that breaks a rule. `status` is the HTTP status the web app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class User:
    id: int
    name: str
    role: str  # reviewer | panelist | admin
    kind: str  # human | llm | demo
    active: bool = True
    languages: tuple[str, ...] = ()  # routing profile; empty = any
    specialties: tuple[str, ...] = ()
    ui_language: str | None = None  # interface language of the review pages (None: from languages / browser)

    @property
    def is_human(self) -> bool:
        return self.kind == "human"


@dataclass(slots=True)
class Edits:
    """Changes to an item's text: only the fields that are set change. In the initial review they are a private
    proposal (never applied by the review itself); the panel and adjudication apply them as a new revision."""

    question: str | None = None
    options: dict[str, str] | None = None
    answer: str | None = None
    cot: str | None = None

    def any(self) -> bool:
        return any(getattr(self, f) is not None for f in CONTENT_FIELDS)


@dataclass(slots=True)
class ReviewInput:
    """The initial review form (2.3.1), also used for adjudication verdicts."""

    relevance: int
    correctness: int
    sufficiency: int
    answer: str | None  # the letter the reviewer holds correct
    approve: bool  # approves the text of `revision` (with edits: approves it only as changed by the proposal)
    comment: str = ""
    revision: str | None = None  # content hash of the revision the form showed; a submission without it is refused
    edits: Edits = field(default_factory=Edits)
    scores: dict[str, int] | None = None  # the five rubric dimensions 0-2 (required when review.rubric is "all")
    difficulty: str | None = None  # DIFFICULTIES
    cognitive_level: str | None = None  # COGNITIVE_LEVELS

    def __post_init__(self) -> None:
        for dim in BINARY_DIMENSIONS:
            if getattr(self, dim) not in (0, 1):
                raise ReviewError(f"{dim} must be 1 or 0")
        if self.answer is not None and (len(self.answer) != 1 or not self.answer.isalpha()):
            raise ReviewError("answer must be one option letter")
        check_labels(self.scores, self.difficulty, self.cognitive_level)


@dataclass(slots=True)
class PanelInput:
    """The panel's rubric form (2.3.4): five dimensions 0-2, an action, the panelist's answer, feedback."""

    round: int  # the CoT revision the form was scored on
    scores: dict[str, int]
    action: str
    answer: str | None
    feedback: str = ""
    comment: str = ""
    revised_cot: str | None = None  # action "revise": the new CoT (and/or `edits` of question, options, key)
    revision: str | None = None  # content hash of the revision the form showed
    edits: Edits = field(default_factory=Edits)  # action "revise": repaired question / options / key
    difficulty: str | None = None
    cognitive_level: str | None = None

    def __post_init__(self) -> None:
        check_labels(self.scores, self.difficulty, self.cognitive_level)
        if self.action not in PANEL_ACTIONS:
            raise ReviewError(f"action must be one of {', '.join(PANEL_ACTIONS)}")
        if self.edits.cot is not None:
            raise ReviewError("the panel's revised CoT goes in revised_cot")
        if self.action == "revise" and not (self.revised_cot or "").strip() and not self.edits.any():
            raise ReviewError("action 'revise' needs the revised chain of thought or a repaired question, options "
                              "or key")
        if self.action != "revise" and (self.edits.any() or (self.revised_cot or "").strip()):
            raise ReviewError("changes to the text go with action 'revise'")
        if self.action == "regenerate" and not self.feedback.strip():
            raise ReviewError("a regeneration request needs feedback for the model")


def check_labels(scores: dict[str, int] | None, difficulty: str | None, cognitive_level: str | None) -> None:
    if scores is not None:
        if set(scores) != set(RUBRIC_DIMENSIONS):
            raise ReviewError(f"scores must cover exactly {', '.join(RUBRIC_DIMENSIONS)}")
        if any(v not in (0, 1, 2) or isinstance(v, bool) for v in scores.values()):
            raise ReviewError("rubric scores are 0, 1 or 2")
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise ReviewError(f"difficulty must be one of {', '.join(DIFFICULTIES)}")
    if cognitive_level is not None and cognitive_level not in COGNITIVE_LEVELS:
        raise ReviewError(f"cognitive level must be one of {', '.join(COGNITIVE_LEVELS)}")


@dataclass(slots=True)
class Vote:
    """One expert's position on the item's final wording and answer, as consensus counts it."""

    user_id: int
    user: str
    kind: str
    phase: str  # review | panel | adjudication
    answer: str | None
    approve: bool  # an approval under the invariant, revision aside (curation.review.invariant)
    fresh: bool  # cast on the current revision (content hash of question, options, key, CoT)
    reason: str = ""
    proposal: bool = False  # the voter proposed a change (to be reconciled)

    @property
    def counts_as_approval(self) -> bool:
        return self.approve and self.fresh

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "kind": self.kind, "phase": self.phase, "answer": self.answer,
                "approve": self.approve, "fresh": self.fresh, "reason": self.reason, "proposal": self.proposal}


@dataclass(slots=True)
class Outcome:
    """A consensus outcome (2.3.5) with its reason; `kind` is one of OUTCOMES or "" (nothing to decide yet)."""

    kind: str
    reason: str
    human_approvals: int = 0
    automated_approvals: int = 0
    votes: list[Vote] = field(default_factory=list)

    @property
    def expert_validated(self) -> bool:
        return self.kind == "approved" and self.human_approvals >= 2

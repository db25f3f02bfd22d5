"""The release schema, defined once: `datasets.Features` shared by every config (validated, unvalidated,
panel), and the typed row that the builder fills before anything is written.

Absent information is null (or an empty list), never a made-up value: an item the five-strike stage has
not seen has `five_strike.escalated = null`; an item without a decision has `consensus.outcome = null`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import ClassLabel, Features, List, Value

from medcot.review_tables import RUBRIC_DIMENSIONS

LETTERS = ("A", "B", "C", "D", "E")
CONFIGS = ("validated", "unvalidated", "panel")
SPLITS = ("train", "validation", "test")
VALIDATION_LABELS = ("expert", "automated", "none")
VALIDATION_NOTES = {
    "expert": "expert-validated: approved by consensus of at least two human experts",
    "automated": "automated, NOT expert-validated: approved by automated (LLM/demo) reviewers",
    "none": "not validated: raw LLM output before any review",
}
REVISION_STATUSES = ("unchanged", "modified", "regenerated")

_S = Value("string")

FIVE_STRIKE = {
    "attempts": List({"round": Value("int32"), "attempt": Value("int32"), "template": _S, "letter": _S,
                      "correct": Value("bool")}),
    "first_correct_attempt": Value("int32"),  # in the latest round; null = none correct (or not run)
    "escalated": Value("bool"),               # null = five-strike not run for this item
}
REVIEW = {"phase": _S, "reviewer_kind": _S, "reviewer_id_hash": _S, "relevance": Value("int8"),
          "correctness": Value("int8"), "sufficiency": Value("int8"), "answer": _S, "approve": Value("bool")}
RUBRIC = {"phase": _S, "round": Value("int32"), "dimension": _S, "score": Value("int8"), "rater_kind": _S,
          "rater_id_hash": _S, "standard_version": _S}
DIMENSIONS = RUBRIC_DIMENSIONS
RUBRIC_MEDIAN = {d: Value("float32") for d in DIMENSIONS}
RATER_GROUPS = ("human", "automated")
CONSENSUS = {"outcome": _S, "human_approvals": Value("int32"), "automated_approvals": Value("int32"),
             "expert_validated": Value("bool")}
PROVENANCE = {"model": _S, "prompt_version": _S, "prompt_versions": List(_S), "pipeline_version": _S}

FEATURES = Features({
    "id": _S,
    "family_id": _S,
    "parent_id": _S,
    "origin": _S,
    "language": _S,
    "question": _S,
    "options": {k: _S for k in LETTERS},
    "answer": ClassLabel(names=list(LETTERS)),
    "answer_letter": _S,
    "cot": _S,
    "cot_answer": _S,
    "reasoning": _S,
    "specialty": _S,
    "subject": _S,
    "aspect": _S,
    "source": _S,
    "licence": _S,
    "five_strike": FIVE_STRIKE,
    "reviews": List(REVIEW),
    "rubric": List(RUBRIC),
    "consensus": CONSENSUS,
    "validation": _S,
    "validation_note": _S,
    "revision_status": _S,
    "provenance": PROVENANCE,
    "rubric_median": RUBRIC_MEDIAN,
    "rubric_raters": Value("int32"),
    "rubric_raters_kind": _S,
    "difficulty": _S,
    "cognitive_level": _S,
    "annotation_standard": _S,
})

COLUMN_HELP = {
    "id": "item id (seed id, or a derived id for expanded items)",
    "family_id": "id of the seed the item derives from; splits are made by family",
    "parent_id": "the item it was expanded from (null for seeds)",
    "origin": "seed or expanded",
    "language": "zh or en",
    "question": "question text (validated/panel: after expert revisions; unvalidated: original)",
    "options": "options A-E; a missing option is null",
    "answer": "answer key, ClassLabel A-E",
    "answer_letter": "the same key as a letter (A-E), comparable with `cot_answer` and the reviewers' answers",
    "cot": "chain of thought ending in a final-answer line (unvalidated: the initial LLM output)",
    "cot_answer": "letter the CoT commits to (project extractor; null = no answer found)",
    "reasoning": "the generator's raw thinking (e.g. DeepSeek-R1's <think> trace) behind `cot`; NEVER expert-validated "
                 "(experts validated `cot`); null when the model returned none or the CoT was edited by hand",
    "specialty": "clinical specialty key (null = not assigned)",
    "subject": "subject label of the seed source (null if none)",
    "aspect": "question type of an expanded item (null for seeds)",
    "source": "seed provenance: repository@commit path",
    "licence": "licence of the seed source",
    "five_strike": "re-answering attempts without the explanation; first correct attempt; escalated",
    "reviews": "initial reviews: reviewer kind, hashed reviewer id, binary judgements, answer, approval",
    "rubric": "every rubric score (5 dimensions, 0-2) given to the released text: phase (initial review or panel), "
              "round, rater kind, rater pseudonym (HMAC), annotation standard version (unvalidated: empty)",
    "consensus": "current decision: outcome, human/automated approvals, expert_validated",
    "validation": "expert, automated or none",
    "validation_note": "the validation label in words",
    "revision_status": "unchanged, modified (edited by a person) or regenerated (by the LLM, panel-guided)",
    "provenance": "generator model, CoT prompt version, all prompt versions used on the item, pipeline version",
    "rubric_median": "per dimension, the median score over the raters of `rubric_raters_kind` on the released text",
    "rubric_raters": "how many raters of `rubric_raters_kind` scored all five dimensions on the released text",
    "rubric_raters_kind": "human (experts) or automated (LLM/demo raters, never experts); null = no scores",
    "difficulty": "easy, moderate or hard: the raters' majority label (a tie goes to the harder label)",
    "cognitive_level": "recall, interpretation or problem-solving: the raters' majority (a tie goes to the harder)",
    "annotation_standard": "version of the annotation standard (rubric anchors, labels) the scores were given under",
}


@dataclass(slots=True)
class ReleaseRow:
    """One row of the release, in the shape of FEATURES (nested values are plain dicts/lists)."""

    id: str
    family_id: str
    parent_id: str | None
    origin: str
    language: str
    question: str
    options: dict[str, str | None]
    answer: str  # a letter; encoded to the ClassLabel index when written
    cot: str
    cot_answer: str | None
    specialty: str | None
    subject: str | None
    aspect: str | None
    source: str
    licence: str | None
    five_strike: dict[str, Any]
    reviews: list[dict[str, Any]]
    rubric: list[dict[str, Any]]
    consensus: dict[str, Any]
    validation: str
    validation_note: str
    revision_status: str
    provenance: dict[str, Any]
    rubric_median: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS))
    rubric_raters: int = 0
    rubric_raters_kind: str | None = None
    difficulty: str | None = None
    cognitive_level: str | None = None
    annotation_standard: str | None = None
    reasoning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # builder-only facts for the checks (not written)


def empty_five_strike() -> dict[str, Any]:
    return {"attempts": [], "first_correct_attempt": None, "escalated": None}


def empty_consensus() -> dict[str, Any]:
    return {"outcome": None, "human_approvals": 0, "automated_approvals": 0, "expert_validated": False}

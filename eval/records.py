"""Typed records of the eval harness: an item to answer, a model's prediction, a judge's rubric score."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RUBRIC_DIMENSIONS = ("medical_correctness", "reasoning_structure", "information_sufficiency",
                     "terminology_clarity", "clinical_utility")


@dataclass(slots=True)
class EvalItem:
    """One multiple-choice question of an eval set (the release's test split or an external set)."""

    set: str
    id: str
    language: str
    question: str
    options: dict[str, str]
    answer: str | None  # None: an external set that comes without answers (a submission only, no accuracy)
    specialty: str | None = None
    family_id: str | None = None
    source: str | None = None  # the file the item came from (a leaderboard submission names its file after it)
    upstream: dict[str, Any] | None = None  # an external file's line as it was (`other` included), for submissions


@dataclass(slots=True)
class Prediction:
    """A model's answer to one item: raw output, the extracted letter (None = no answer), how found."""

    set: str
    id: str
    model: str
    language: str
    specialty: str | None
    question: str
    options: dict[str, str]
    gold: str | None  # None: the set has no answers (no accuracy; a leaderboard submission only)
    response: str
    reasoning: str | None
    finish_reason: str | None
    prediction: str | None
    matched_by: str
    correct: bool | None  # None when there is no gold answer
    prompt_version: str
    extractor_version: str
    call_id: int | None = None
    # the item's family (an item and its paraphrases/expansions share it): the unit the comparison resamples.
    # Release rows carry it; an external set without families uses the item id (each item its own family).
    # None only in prediction files written before the field existed (compare then uses the item id too).
    family_id: str | None = None
    source: str | None = None  # EvalItem.source
    upstream: dict[str, Any] | None = None  # EvalItem.upstream

    @property
    def key(self) -> tuple[str, str]:
        return (self.set, self.id)

    @property
    def labelled(self) -> bool:
        return self.gold is not None


@dataclass(slots=True)
class JudgeScore:
    """An LLM judge's rubric scores (0-2 per dimension) for one CoT; scores empty = the judge failed."""

    set: str
    id: str
    model: str
    judge: str
    prompt_version: str
    scores: dict[str, int] = field(default_factory=dict)
    rationale: str = ""
    error: str | None = None
    call_id: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.set, self.id)

    @property
    def total(self) -> int:
        return sum(self.scores.values())


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write dataclass records (or dicts) as JSONL, atomically (a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            row = rec if isinstance(rec, dict) else asdict(rec)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_records(path: Path, cls: type) -> list[Any]:
    """Read JSONL written by write_jsonl back into ``cls``; unknown or missing fields are errors."""
    names = {f.name for f in fields(cls)}
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        extra = set(row) - names
        if extra:
            raise ValueError(f"{path}:{n}: unknown field(s) {sorted(extra)} for {cls.__name__}")
        try:
            out.append(cls(**row))
        except TypeError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return out

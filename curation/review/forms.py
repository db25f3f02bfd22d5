"""Parse submitted HTML forms into the typed records (every field checked; bad input is a 400, not a guess)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from curation.review.records import Edits, PanelInput, ReviewError, ReviewInput
from medcot.review_tables import RUBRIC_DIMENSIONS

MAX_FIELD = 100_000


def text(form: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or (isinstance(value, str) and value == "" and not required):
        if required:
            raise ReviewError(f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        raise ReviewError(f"field {name!r} must be text")
    if len(value) > MAX_FIELD:
        raise ReviewError(f"field {name!r} is too long")
    return value.replace("\r\n", "\n").replace("\r", "\n")  # browsers send textarea newlines as CRLF


def flag(form: Mapping[str, Any], name: str) -> int:
    value = text(form, name, required=True)
    if value not in ("0", "1"):
        raise ReviewError(f"{name} must be 1 or 0")
    return int(value)


def integer(form: Mapping[str, Any], name: str) -> int:
    value = text(form, name, required=True) or ""
    if not value.isdigit():
        raise ReviewError(f"{name} must be a whole number")
    return int(value)


def _edits(form: Mapping[str, Any], letters: list[str]) -> Edits:
    options = {k: text(form, f"edit_option_{k}") for k in letters}
    return Edits(question=text(form, "edit_question"),
                 options={k: v for k, v in options.items() if v is not None} if any(options.values()) else None,
                 answer=text(form, "edit_answer"), cot=text(form, "edit_cot"))


def review_input(form: Mapping[str, Any], letters: list[str], allow_edits: bool) -> ReviewInput:
    answer = text(form, "answer", required=True)
    if answer not in letters:
        raise ReviewError(f"answer must be one of {', '.join(letters)}")
    base = text(form, "base_revision")
    edits = _edits(form, letters) if allow_edits else Edits()
    if edits.options is not None and set(edits.options) != set(letters):
        raise ReviewError("every option needs its text")
    return ReviewInput(relevance=flag(form, "relevance"), correctness=flag(form, "correctness"),
                       sufficiency=flag(form, "sufficiency"), answer=answer, approve=bool(flag(form, "approve")),
                       comment=text(form, "comment") or "", base_revision=int(base) if base and base.isdigit() else None,
                       edits=edits)


def panel_input(form: Mapping[str, Any], letters: list[str]) -> PanelInput:
    scores = {}
    for dim in RUBRIC_DIMENSIONS:
        value = text(form, f"score_{dim}", required=True)
        if value not in ("0", "1", "2"):
            raise ReviewError(f"{dim} must be scored 0, 1 or 2")
        scores[dim] = int(value)
    answer = text(form, "answer", required=True)
    if answer not in letters:
        raise ReviewError(f"answer must be one of {', '.join(letters)}")
    return PanelInput(round=integer(form, "round"), scores=scores, action=text(form, "action", required=True) or "",
                      answer=answer, feedback=text(form, "feedback") or "", comment=text(form, "comment") or "",
                      revised_cot=text(form, "revised_cot"))

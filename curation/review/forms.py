"""Parse submitted HTML forms into the typed records (every field checked; bad input is a 400, not a guess)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from curation.review.records import Edits, PanelInput, ReviewError, ReviewInput
from curation.review.submit import MAX_COMMENT
from medcot.review_tables import RUBRIC_DIMENSIONS
from medcot.revision import normalize_newlines

MAX_BODY = 4_000_000  # bytes of one url-encoded form (a 100,000-character CoT is at most 1.2 MB of it)
MAX_FIELDS = 200
MAX_FIELD = 100_000  # characters (after CRLF -> LF), the longest field: a CoT
MAX_SHORT = 200  # every field not listed below: choices, hidden fields, tokens
LIMITS = {"comment": MAX_COMMENT, "feedback": MAX_COMMENT, "edit_question": 20_000, "edit_cot": MAX_FIELD,
          "revised_cot": MAX_FIELD, "name": 120, "password": 1024, "next": 2_000}
OPTION_LIMIT = 5_000  # edit_option_<letter>


def max_length(name: str) -> int:
    """The most characters field `name` may hold (the templates' maxlength and the server's check)."""
    return OPTION_LIMIT if name.startswith("edit_option_") else LIMITS.get(name, MAX_SHORT)


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, strictly: UTF-8 only (never replacement characters), no NUL,
    no field twice, no field longer than its limit. Bad input is a 400 naming the field."""
    if len(body) > MAX_BODY:
        raise ReviewError(f"the form is too large (at most {MAX_BODY} bytes)", 413)
    out: dict[str, str] = {}
    for part in body.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = _utf8(raw_name, "a field name")
        value = _utf8(raw_value, f"field {name!r}")
        if name in out:
            raise ReviewError(f"field {name!r} is sent twice")
        if "\x00" in name or "\x00" in value:
            raise ReviewError(f"field {name!r} contains a NUL character")
        out[name] = value
        if len(out) > MAX_FIELDS:
            raise ReviewError(f"the form has more than {MAX_FIELDS} fields")
        _check_length(name, normalize_newlines(value))
    return out


def _utf8(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise ReviewError(f"{what} is not valid UTF-8: send the form as UTF-8") from None


def _check_length(name: str, value: str) -> None:
    limit = max_length(name)
    if len(value) > limit:
        raise ReviewError(f"field {name!r} is too long: at most {limit} characters (got {len(value)})")


def text(form: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or (isinstance(value, str) and value == "" and not required):
        if required:
            raise ReviewError(f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        raise ReviewError(f"field {name!r} must be text")
    value = normalize_newlines(value)  # browsers send textarea newlines as CRLF (and count them as one)
    _check_length(name, value)
    return value


def flag(form: Mapping[str, Any], name: str) -> int:
    value = text(form, name, required=True)
    if value not in ("0", "1"):
        raise ReviewError(f"{name} must be 1 or 0")
    return int(value)


def integer(form: Mapping[str, Any], name: str) -> int:
    value = text(form, name, required=True) or ""
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise ReviewError(f"{name} must be a whole number (ASCII digits 0-9)")
    return int(value)


def _edits(form: Mapping[str, Any], letters: list[str], cot_field: str = "edit_cot") -> Edits:
    """Only the fields the reviewer explicitly chose to change (a `change_<field>` box per field): an
    untouched form, however the browser re-encodes its text, proposes nothing."""
    def chosen(name: str) -> bool:
        return form.get(f"change_{name}") in ("1", "on")

    options = None
    if chosen("options"):
        options = {k: text(form, f"edit_option_{k}") or "" for k in letters}
        if not all(v.strip() for v in options.values()):
            raise ReviewError("every option needs its text")
    return Edits(question=text(form, "edit_question", required=True) if chosen("question") else None,
                 options=options, answer=text(form, "edit_answer", required=True) if chosen("answer") else None,
                 cot=text(form, cot_field, required=True) if chosen("cot") else None)


def _labels(form: Mapping[str, Any], required: bool) -> tuple[dict[str, int] | None, str | None, str | None]:
    """The rubric scores (all five or none), difficulty and cognitive level."""
    given = {d: text(form, f"score_{d}") for d in RUBRIC_DIMENSIONS}
    if required or any(v is not None for v in given.values()):
        for dim, value in given.items():
            if value not in ("0", "1", "2"):
                raise ReviewError(f"{dim} must be scored 0, 1 or 2")
        scores: dict[str, int] | None = {d: int(v) for d, v in given.items() if v is not None}
    else:
        scores = None
    difficulty, level = text(form, "difficulty", required=required), text(form, "cognitive_level", required=required)
    return scores, difficulty, level


def review_input(form: Mapping[str, Any], letters: list[str], allow_edits: bool, rubric: bool = False) -> ReviewInput:
    answer = text(form, "answer", required=True)
    if answer not in letters:
        raise ReviewError(f"choose the correct answer: one of {', '.join(letters)}")
    edits = _edits(form, letters) if allow_edits else Edits()
    scores, difficulty, level = _labels(form, required=rubric)
    return ReviewInput(relevance=flag(form, "relevance"), correctness=flag(form, "correctness"),
                       sufficiency=flag(form, "sufficiency"), answer=answer, approve=bool(flag(form, "approve")),
                       comment=text(form, "comment") or "", revision=text(form, "revision"), edits=edits,
                       scores=scores, difficulty=difficulty, cognitive_level=level)


def panel_input(form: Mapping[str, Any], letters: list[str]) -> PanelInput:
    scores, difficulty, level = _labels(form, required=False)
    if scores is None:
        raise ReviewError("score all five rubric dimensions")
    answer = text(form, "answer", required=True)
    if answer not in letters:
        raise ReviewError(f"choose the correct answer: one of {', '.join(letters)}")
    action = text(form, "action", required=True) or ""
    edits = _edits(form, letters, cot_field="revised_cot") if action == "revise" else Edits()
    revised_cot, edits.cot = edits.cot, None
    return PanelInput(round=integer(form, "round"), scores=scores, action=action, answer=answer,
                      feedback=text(form, "feedback") or "", comment=text(form, "comment") or "",
                      revised_cot=revised_cot, revision=text(form, "revision"), edits=edits,
                      difficulty=difficulty, cognitive_level=level)

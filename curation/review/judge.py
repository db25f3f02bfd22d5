"""The automated reviewer: an LLM judge through the project's client, with structured outputs.

It stands in for humans only where a config says `review.automated: llm` (the demo), and it triages nothing
silently: each persona is a user of kind "llm" whose reviews and rubric scores go through the same
submission code as a human's, and consensus never counts them as experts. A judgement that does not parse
is retried with the next seed and then reported as a failure (the item waits; nothing is invented).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from curation.review.prompts import load as load_prompt
from curation.review.records import PanelInput, ReviewError, ReviewInput
from curation.review.standard import load_standard, policy_problems
from medcot.config import ReviewConfig
from medcot.llm import LLMClient, json_schema_format
from medcot.prompts import format_options
from medcot.records import ChatRequest, Item
from medcot.review_tables import BINARY_DIMENSIONS, COGNITIVE_LEVELS, DIFFICULTIES, RUBRIC_DIMENSIONS

MAX_TEXT = 120  # characters of comment/feedback: a tiny model rambles to max_tokens otherwise


@dataclass(slots=True)
class JudgeResult:
    """One judgement: the parsed form (None on failure), the raw text, why it failed, the stored call."""

    form: ReviewInput | PanelInput | None
    raw: str
    reason: str = ""
    call_ids: list[int | None] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.form is not None


def _allowed(dim: str, approving: bool, cfg: ReviewConfig) -> list[int]:
    """The scores a dimension may take in a verdict: an approval only those the rubric policy allows."""
    floor = max(cfg.rubric_policy.min_score, cfg.rubric_policy.required.get(dim, 0)) if approving else 0
    return [s for s in (0, 1, 2) if s >= floor]


def _verdict_schema(verdict: dict[str, Any], approving: bool, key: str, letters: list[str], cfg: ReviewConfig,
                    binary: bool, text_field: str) -> dict[str, Any]:
    """One branch of a judgement's grammar. The verdict comes first, so the model's first choice decides the
    branch; an approving branch only admits scores the rubric policy allows and the key as the answer (an
    approval asserts the key), so the grammar cannot produce an incoherent approval (the parser still checks)."""
    props: dict[str, Any] = dict(verdict)
    if binary:
        ones = approving and cfg.consensus.require_all_binary
        props |= {d: {"type": "integer", "enum": [1] if ones else [0, 1]} for d in BINARY_DIMENSIONS}
    props |= {d: {"type": "integer", "enum": _allowed(d, approving, cfg)} for d in RUBRIC_DIMENSIONS}
    props |= {"difficulty": {"type": "string", "enum": list(DIFFICULTIES)},
              "cognitive_level": {"type": "string", "enum": list(COGNITIVE_LEVELS)},
              "answer": {"type": "string", "enum": [key] if approving else letters},
              text_field: {"type": "string", "maxLength": MAX_TEXT}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def review_schema(letters: list[str], key: str, cfg: ReviewConfig) -> dict[str, Any]:
    branches = [_verdict_schema({"approve": {"type": "boolean", "enum": [ok]}}, ok, key, letters, cfg, True,
                                "comment") for ok in (False, True)]
    return {"anyOf": branches}


def panel_schema(letters: list[str], key: str, cfg: ReviewConfig) -> dict[str, Any]:
    accept = _verdict_schema({"action": {"type": "string", "enum": ["accept"]}}, True, key, letters, cfg, False,
                             "feedback")
    other = _verdict_schema({"action": {"type": "string", "enum": ["regenerate", "discard"]}}, False, key, letters,
                            cfg, False, "feedback")
    return {"anyOf": [other, accept]}


def _messages(name: str, item: Item, persona: str, **fields: Any) -> tuple[list[dict[str, str]], str]:
    prompt = load_prompt(name, item.language)
    standard = load_standard()
    user = prompt.user.format(question=item.question, options=format_options(item.options), key=item.answer,
                              standard=standard.version, rubric=standard.prompt_text(item.language), **fields)
    return [{"role": "system", "content": prompt.system.format(persona=persona)},
            {"role": "user", "content": user}], prompt.tag


def history_text(attempts: list[dict[str, Any]]) -> str:
    if not attempts:
        return "-"
    return "\n".join(f"#{a['attempt_no']} (round {a['round']}, {a['template']}, order {''.join(a['permutation'])}): "
                     f"{a['letter'] or 'no answer'} ({'correct' if a['correct'] else 'wrong'})" for a in attempts)


class Judge:
    """`await judge.review(item, cot, persona_index)` / `await judge.panel(item, cot, attempts, round, i)`."""

    def __init__(self, client: LLMClient, cfg: ReviewConfig, model: str):
        self.client, self.cfg, self.model = client, cfg, model

    async def _ask(self, item: Item, stage: str, messages: list[dict[str, str]], tag: str, schema: dict[str, Any],
                   persona_index: int, parse: Any) -> JudgeResult:
        j = self.cfg.judge
        result = JudgeResult(form=None, raw="")
        for attempt in range(j.attempts):
            seed = j.seed + 1000 * persona_index + attempt
            req = ChatRequest(messages=messages, model=self.model, stage=stage, item_id=item.id, prompt_version=tag,
                              params={"temperature": j.temperature, "max_tokens": j.max_tokens, "seed": seed},
                              response_format=json_schema_format(stage, schema))
            reply = await self.client.chat(req)
            result.raw, result.call_ids = reply.content, result.call_ids + [reply.call_id]
            try:
                result.form, result.reason = parse(json.loads(reply.content)), ""
                return result
            except (ValueError, TypeError, KeyError, ReviewError) as exc:
                result.reason = f"attempt {attempt + 1} (seed {seed}, finish {reply.finish_reason}): unusable " \
                                f"judgement: {exc}"
        return result

    async def review(self, item: Item, cot: str, persona_index: int, revision: str) -> JudgeResult:
        persona = self.cfg.judge.personas[persona_index]
        messages, tag = _messages("review_judge", item, persona, cot=cot)
        return await self._ask(item, "review_judge", messages, tag, review_schema(sorted(item.options), item.answer, self.cfg),
                               persona_index, lambda d: _review_form(d, item, self.cfg, revision))

    async def panel(self, item: Item, cot: str, attempts: list[dict[str, Any]], round_: int,
                    persona_index: int, revision: str) -> JudgeResult:
        persona = self.cfg.judge.personas[persona_index]
        messages, tag = _messages("panel_judge", item, persona, cot=cot, round=round_, history=history_text(attempts))
        return await self._ask(item, "panel_judge", messages, tag, panel_schema(sorted(item.options), item.answer, self.cfg),
                               persona_index, lambda d: _panel_form(d, item, round_, self.cfg, revision))


def _letter(d: dict[str, Any], item: Item) -> str:
    letter = d["answer"]
    if letter not in item.options:
        raise ReviewError(f"answer {letter!r} is not an option")
    return letter


def _coherent(approving: bool, scores: dict[str, int], cfg: ReviewConfig) -> None:
    """An automated approval that the rubric policy rules out is refused like a human's (retried, never fixed up)."""
    bad = policy_problems(scores, cfg.rubric_policy.min_score, cfg.rubric_policy.required) if approving else []
    if bad:
        raise ReviewError("incoherent: approves although " + "; ".join(bad))


def _review_form(d: dict[str, Any], item: Item, cfg: ReviewConfig, revision: str) -> ReviewInput:
    approve = d["approve"]
    if not isinstance(approve, bool):
        raise ReviewError("approve must be true or false")
    scores = {k: d[k] for k in RUBRIC_DIMENSIONS}
    _coherent(approve, scores, cfg)
    rubric = cfg.rubric == "all"
    return ReviewInput(relevance=d["relevance"], correctness=d["correctness"], sufficiency=d["sufficiency"],
                       answer=_letter(d, item), approve=approve, comment=str(d["comment"])[:MAX_TEXT],
                       revision=revision, scores=scores if rubric else None,
                       difficulty=d["difficulty"] if rubric else None,
                       cognitive_level=d["cognitive_level"] if rubric else None)


def _panel_form(d: dict[str, Any], item: Item, round_: int, cfg: ReviewConfig, revision: str) -> PanelInput:
    feedback = str(d["feedback"])[:MAX_TEXT]
    if d["action"] == "regenerate" and not feedback.strip():
        feedback = "(no feedback given by the automated panelist)"
    scores = {k: d[k] for k in RUBRIC_DIMENSIONS}
    _coherent(d["action"] == "accept", scores, cfg)
    return PanelInput(round=round_, scores=scores, action=d["action"], answer=_letter(d, item), feedback=feedback,
                      revision=revision, difficulty=d["difficulty"], cognitive_level=d["cognitive_level"])

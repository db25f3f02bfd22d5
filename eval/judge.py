"""LLM judge of chains of thought on the paper's five rubric dimensions (0-2 each).

Structured output (json_schema) with a versioned prompt (medcot/prompts/eval_judge.yaml). A reply that
does not parse is a JudgeScore with `error` set and no scores: counted as a judge failure, never as 0.
Where a release has expert rubric scores, `judge_release` reports judge-expert agreement
(quadratic-weighted kappa per dimension) so users know how far to trust the judge.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from eval.config import EvalSampling, JudgeConfig
from eval.records import RUBRIC_DIMENSIONS, JudgeScore, Prediction
from eval.stats import bootstrap_mean
from medcot.llm import LLMClient, gather_all, json_schema_format
from medcot.prompts import format_options, load_prompt
from medcot.records import ChatRequest

EXPERT_KINDS = ("expert", "human")
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**{d: {"type": "integer", "enum": [0, 1, 2]} for d in RUBRIC_DIMENSIONS},
                   "rationale": {"type": "string", "maxLength": 400}},
    "required": [*RUBRIC_DIMENSIONS, "rationale"],
    "additionalProperties": False,
}


def _params(s: EvalSampling) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    if s.seed is not None:
        params["seed"] = s.seed
    return params


def judge_request(*, question: str, options: dict[str, str], answer: str, cot: str, language: str,
                  cfg: JudgeConfig, model: str, item_id: str, identity: str = "") -> ChatRequest:
    """``identity``: the judge model's fingerprint, part of the cache key (a changed judge never hits)."""
    prompt = load_prompt(cfg.prompt, language)
    messages = prompt.messages(question=question, options=format_options(options), answer=answer, cot=cot)
    version = f"{prompt.tag}+judge={identity}" if identity else prompt.tag
    return ChatRequest(messages=messages, model=model, params=_params(cfg.sampling), prompt_version=version,
                       stage="eval_judge", item_id=item_id,
                       response_format=json_schema_format("rubric_scores", JUDGE_SCHEMA))


def parse_judge(content: str) -> tuple[dict[str, int], str, str | None]:
    """(scores, rationale, error). Scores are all five dimensions in 0..2, or empty with an error."""
    try:
        data = json.loads(content)
    except (TypeError, ValueError) as exc:
        return {}, "", f"judge reply is not JSON: {exc}"
    if not isinstance(data, dict):
        return {}, "", "judge reply is not a JSON object"
    scores = {}
    for dim in RUBRIC_DIMENSIONS:
        value = data.get(dim)
        if isinstance(value, bool) or value not in (0, 1, 2):
            return {}, "", f"judge reply: {dim} = {value!r} is not 0, 1 or 2"
        scores[dim] = int(value)
    return scores, str(data.get("rationale", "")), None


async def judge_one(client: LLMClient, req: ChatRequest, *, set_name: str, item_id: str, model: str,
                    judge_name: str) -> JudgeScore:
    result = await client.chat(req)
    scores, rationale, error = parse_judge(result.content)
    if error is None and result.finish_reason == "length":
        error = "judge reply truncated (max_tokens)"
    return JudgeScore(set=set_name, id=item_id, model=model, judge=judge_name,
                      prompt_version=req.prompt_version.split("+")[0],
                      scores=scores if error is None else {}, rationale=rationale, error=error,
                      call_id=result.call_id)


async def judge_predictions(client: LLMClient, preds: list[Prediction], cfg: JudgeConfig,
                            request_model: str, identity: str = "") -> list[JudgeScore]:
    """Judge each prediction's CoT (the response content), at most cfg.max_items per model. Items without a
    gold answer are not judged: the rubric's medical correctness is judged against the key."""
    per_model: dict[str, int] = defaultdict(int)
    todo = []
    for p in preds:
        if p.gold is None:
            continue
        if cfg.max_items is not None and per_model[p.model] >= cfg.max_items:
            continue
        per_model[p.model] += 1
        todo.append(p)
    out: list[JudgeScore | None] = [None] * len(todo)

    async def one(i: int, p: Prediction) -> None:
        req = judge_request(question=p.question, options=p.options, answer=p.gold or "", cot=p.response,
                            language=p.language, cfg=cfg, model=request_model, item_id=f"{p.model}/{p.set}/{p.id}",
                            identity=identity)
        out[i] = await judge_one(client, req, set_name=p.set, item_id=p.id, model=p.model, judge_name=cfg.model)

    await gather_all([one(i, p) for i, p in enumerate(todo)], desc="judge", unit="answer")
    return [s for s in out if s is not None]


def judge_summary(scores: list[JudgeScore], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean score per dimension (bootstrap CI) and the number of judge failures, for one model."""
    ok = [s for s in scores if s.error is None]
    dims = {d: bootstrap_mean([s.scores[d] for s in ok], resamples, seed).as_dict() for d in RUBRIC_DIMENSIONS}
    total = bootstrap_mean([s.total for s in ok], resamples, seed).as_dict()
    return {"judged": len(scores), "failures": len(scores) - len(ok), "dimensions": dims, "total": total}


def expert_scores(row: dict[str, Any]) -> dict[str, list[int]]:
    """dimension -> human expert scores of one release row (`rubric`: list of {round, dimension, score,
    rater_kind}). Only the latest panel round counts: earlier rounds scored a CoT since revised."""
    entries = [e for e in row.get("rubric") or [] if e.get("rater_kind") in EXPERT_KINDS
               and e.get("dimension") in RUBRIC_DIMENSIONS and e.get("score") is not None]
    last = max((e.get("round") or 0 for e in entries), default=0)
    out: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        if (e.get("round") or 0) == last:
            out[e["dimension"]].append(int(e["score"]))
    return dict(out)


def agreement(judged: list[tuple[JudgeScore, dict[str, list[int]]]]) -> dict[str, Any]:
    """Quadratic-weighted kappa per dimension over (judge score, expert score) pairs: each expert's score
    of an item is paired with the judge's score of that item."""
    from eval.scoring import load_metric
    metric = load_metric("rubric_kappa")
    out: dict[str, Any] = {}
    for dim in RUBRIC_DIMENSIONS:
        pairs = [(j.scores[dim], e) for j, ex in judged if j.error is None for e in ex.get(dim, [])]
        if not pairs:
            out[dim] = {"n": 0, "qwk": None, "exact_agreement": None}
            continue
        res = metric.compute(predictions=[p for p, _ in pairs], references=[e for _, e in pairs])
        out[dim] = {k: (None if isinstance(v, float) and v != v else v) for k, v in res.items()}
    return out

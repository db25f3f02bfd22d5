"""Five-strike re-answering (paper 2.3.2-2.3.3): each item's current question is answered again WITHOUT any
explanation, up to `max_attempts` times; the first correct attempt ends it, five failures escalate it to
the expert panel.

Attempts vary the prompt template (rotated), the option order (a permutation recorded per attempt,
deterministic from item id, round and attempt number, mapped back before scoring) and the sampling seed
(seed + attempt number). The work runs in waves: wave k sends one attempt for every item still
unresolved, all at once (the client bounds concurrency), so an item never costs more calls than it needs.
An unparseable answer (the extractor returns no letter) is a failed attempt, counted on its own.
A reply cut at max_tokens (`finish_reason: length`, or a `<think>` never closed) is "truncated": it is
retried once with a larger budget (`truncated_retry_factor`); still truncated, the attempt is stored as such
and is NEVER a strike (long thinking must not send items to the panel). An item with `max_truncated`
truncated attempts in a round is held: neither passed nor escalated, reported as such, and left alone by
reruns (raise strikes.sampling.max_tokens and strikes.max_truncated to try it again).

Several answerers (`strikes.models`): attempt k is answered by models[(k-1) % len] (each its own client, model id
and sampling), so a question one model keeps failing gets other models' attempts before it reaches the panel.
The model of each stored attempt is the one of its call (the calls table), counted per model in the report.

Every attempt is stored; the attempt that resolves an item is stored in ONE transaction with the item's
stage change ("strikes_passed" or "escalated") and its event. Resumable: stored attempts are never redone,
and the client's cache makes a repeated request free.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from tqdm.auto import tqdm

from medcot.config import DEFAULT_MODEL, StrikesConfig
from medcot.db import AttemptRow, CallRow
from medcot.extract import EXTRACTOR_VERSION, extract_answer
from medcot.llm import LLMClient, gather_all, sampling_params
from medcot.models import ModelHandle
from medcot.pipeline import RunContext, stage
from medcot.prompts import format_options, load_prompt
from medcot.records import LETTERS, Attempt, ChatRequest, Event, Item
from medcot.store import Store

PASSED, ESCALATED, RESTRIKE = "strikes_passed", "escalated", "restrike"


@dataclass
class StrikesSummary:
    eligible: int = 0
    resumed: int = 0  # items that already had attempts of this round
    attempts_made: int = 0  # this run (requests or cache hits)
    waves: int = 0
    passed: int = 0
    escalated: int = 0
    no_answer_attempts: int = 0  # unparseable replies (strikes), truncated ones apart
    truncated_attempts: int = 0  # replies cut at max_tokens even after the retry: never strikes
    held_truncated: int = 0  # items held (max_truncated truncated attempts this round), whole store
    already_stored: int = 0


def permutation(item_id: str, letters: list[str], attempt_no: int, round: int = 0, shuffle: bool = True) -> list[str]:
    """The option order shown at an attempt: the original order first, then a deterministic shuffle that
    differs from the original order (when there is more than one option)."""
    letters = sorted(letters)
    if not shuffle or attempt_no == 1 or len(letters) < 2:
        return letters
    rng = random.Random(hashlib.sha256(f"{item_id}|{round}|{attempt_no}".encode()).digest())
    perm = letters[:]
    while perm == letters:
        rng.shuffle(perm)
    return perm


def shown_options(item: Item, perm: list[str]) -> dict[str, str]:
    return {LETTERS[i]: item.options[orig] for i, orig in enumerate(perm)}


def map_back(shown_letter: str | None, perm: list[str]) -> str | None:
    return None if shown_letter is None else perm[LETTERS.index(shown_letter)]


def strike_request(item: Item, attempt_no: int, cfg: StrikesConfig, model: str) -> tuple[ChatRequest, list[str]]:
    perm = permutation(item.id, list(item.options), attempt_no, cfg.round, cfg.shuffle_options)
    prompt = load_prompt(cfg.templates[(attempt_no - 1) % len(cfg.templates)], item.language)
    messages = prompt.messages(question=item.question, options=format_options(shown_options(item, perm)))
    params = sampling_params(cfg.sampling)
    if cfg.sampling.seed is not None:
        params["seed"] = cfg.sampling.seed + attempt_no
    return ChatRequest(messages=messages, model=model, params=params, stage="strikes", item_id=item.id,
                       prompt_version=f"{prompt.tag}+{EXTRACTOR_VERSION}"), perm


TRUNCATED = "none:truncated"


def is_truncated(a: Attempt) -> bool:
    return a.matched_by == TRUNCATED


def strikes_of(attempts: list[Attempt]) -> int:
    """Failed attempts that count toward escalation: wrong or unparseable, never truncated."""
    return sum(1 for a in attempts if not a.correct and not is_truncated(a))


async def attempt_one(client: LLMClient, item: Item, attempt_no: int, cfg: StrikesConfig, model: str) -> Attempt:
    req, perm = strike_request(item, attempt_no, cfg, model)
    res = await client.chat(req)
    budget = req.params.get("max_tokens")
    if res.finish_reason == "length" and cfg.truncated_retry_factor > 1 and isinstance(budget, int):
        bigger = {**req.params, "max_tokens": int(budget * cfg.truncated_retry_factor)}
        res = await client.chat(replace(req, params=bigger))
    found = extract_answer(res.content, shown_options(item, perm), finish_reason=res.finish_reason)
    letter = map_back(found.letter, perm)
    return Attempt(item_id=item.id, round=cfg.round, attempt_no=attempt_no, template=req.prompt_version.split("+")[0],
                   permutation=perm, seed=req.params.get("seed"), call_id=res.call_id, raw=res.content,  # type: ignore[arg-type]
                   reasoning=res.reasoning, shown_letter=found.letter, letter=letter, matched_by=found.matched_by,
                   correct=letter is not None and letter == item.answer, prompt_tokens=res.prompt_tokens,
                   completion_tokens=res.completion_tokens)


def resolution(att: Attempt, history: list[Attempt], cfg: StrikesConfig) -> tuple[str | None, Event | None]:
    """(new stage, event) when this attempt resolves the item, else (None, None)."""
    if not att.correct and strikes_of([*history, att]) < cfg.max_attempts:
        return None, None
    kind = PASSED if att.correct else ESCALATED
    payload: dict[str, Any] = {"round": att.round, "attempts": att.attempt_no, "call_id": att.call_id}
    if kind == ESCALATED:
        payload["history"] = [{"attempt_no": a.attempt_no, "template": a.template, "permutation": a.permutation,
                               "letter": a.letter, "matched_by": a.matched_by, "call_id": a.call_id}
                              for a in [*history, att]]
    return kind, Event(kind=kind, item_id=att.item_id, stage="strikes", actor="llm", actor_kind="llm",
                       payload=payload)


def answerer(rotation: Sequence[ModelHandle], attempt_no: int) -> ModelHandle:
    """The model that answers attempt `attempt_no` (1-based): rotation[(attempt_no - 1) % len(rotation)]."""
    return rotation[(attempt_no - 1) % len(rotation)]


async def run_strikes(store: Store, client: LLMClient, cfg: StrikesConfig, model: str,
                      progress: bool = True, rotation: Sequence[ModelHandle] = ()) -> StrikesSummary:
    """Waves of attempts over every eligible item until each passed or used up its attempts. `rotation`: the
    answerer models rotated over the attempts; empty: (client, model) answers every attempt."""
    answerers = list(rotation) or [ModelHandle(DEFAULT_MODEL, model, client)]
    history: dict[str, list[Attempt]] = defaultdict(list)
    for a in store.attempts(cfg.round):
        history[a.item_id].append(a)
    items = [it for it in store.items() if it.stage in cfg.eligible_stages and it.stage != RESTRIKE][:cfg.limit]
    rounds = restrike_rounds(store, cfg)
    for item_id, rnd in rounds.items():  # repaired items: a new round of their own, after every earlier one
        history[item_id] = [a for a in store.attempts(rnd) if a.item_id == item_id]
    items += [it for it in store.items(stage=RESTRIKE) if it.id in rounds]
    item_cfg = {it.id: replace(cfg, round=rounds[it.id]) if it.id in rounds else cfg for it in items}
    summary = StrikesSummary(eligible=len(items), resumed=sum(1 for it in items if history.get(it.id)))
    pending = [it for it in items if not _resolved(history[it.id], cfg)]
    bar = tqdm(total=len(pending), desc="five-strike", unit="item", disable=not progress)

    async def one(item: Item) -> None:
        past = history[item.id]
        m = answerer(answerers, len(past) + 1)
        att = await attempt_one(m.client, item, len(past) + 1, m.tuned(item_cfg[item.id], "sampling"), m.model)
        new_stage, event = resolution(att, past, cfg)
        if not store.save_attempt(att, new_stage, event):
            summary.already_stored += 1
        summary.attempts_made += 1
        summary.no_answer_attempts += att.letter is None and not is_truncated(att)
        summary.truncated_attempts += is_truncated(att)
        past.append(att)
        if new_stage is not None:
            summary.passed += new_stage == PASSED
            summary.escalated += new_stage == ESCALATED
            bar.update(1)

    try:
        while pending:
            summary.waves += 1
            await gather_all([one(it) for it in pending])
            pending = [it for it in pending if not _resolved(history[it.id], cfg)]
    finally:
        bar.close()
    summary.held_truncated = sum(1 for it in items if held(history[it.id], cfg))
    return summary


def restrike_rounds(store: Store, cfg: StrikesConfig) -> dict[str, int]:
    """Item id -> the five-strike round of each item at stage restrike: one past every round it has had (the
    restrike event that sent it back counts the rounds), stable across reruns so that work resumes."""
    out: dict[str, int] = {}
    for item in store.items(stage=RESTRIKE):
        sent_back = len(store.events(item_id=item.id, kind="restrike"))
        out[item.id] = cfg.round + sent_back
    return out


def held(past: list[Attempt], cfg: StrikesConfig) -> bool:
    """Truncated max_truncated times this round, without a correct answer or a full set of strikes."""
    return (not any(a.correct for a in past) and strikes_of(past) < cfg.max_attempts
            and sum(map(is_truncated, past)) >= cfg.max_truncated)


def _resolved(past: list[Attempt], cfg: StrikesConfig) -> bool:
    return bool(past) and (past[-1].correct or strikes_of(past) >= cfg.max_attempts or held(past, cfg))


# ---- the report ------------------------------------------------------------------------------------
@dataclass
class StrikesStats:
    items: int = 0
    passed_at: dict[int, int] = field(default_factory=dict)  # attempt number of the first success -> items
    escalated: int = 0
    unresolved: int = 0
    attempts: int = 0
    no_answer_attempts: int = 0
    truncated_attempts: int = 0
    matched_by: dict[str, int] = field(default_factory=dict)
    tokens_spent: int = 0
    tokens_always5_estimate: int = 0
    token_ratio_vs_always5: float | None = None
    escalation_rate: float | None = None


def strikes_stats(attempts: list[Attempt], max_attempts: int = 5) -> StrikesStats:
    """Histogram, escalation rate and tokens vs an always-`max_attempts` baseline.

    The baseline would make every attempt for every item. Its tokens are estimated per item as
    `max_attempts x (mean tokens per attempt of that item's measured attempts)`: the same question is
    sent each time, so prompt tokens vary only with the template, and the completion length measured on
    that item is its best predictor. Items escalated after all attempts are counted exactly."""
    by_item: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_item[a.item_id].append(a)
    st = StrikesStats(items=len(by_item), attempts=len(attempts))
    passed: Counter[int] = Counter()
    for atts in by_item.values():
        atts.sort(key=lambda a: a.attempt_no)
        first = next((a.attempt_no for a in atts if a.correct), None)
        if first is not None:
            passed[first] += 1
        elif strikes_of(atts) >= max_attempts:
            st.escalated += 1
        else:
            st.unresolved += 1
        spent = sum(a.tokens for a in atts)
        st.tokens_spent += spent
        st.tokens_always5_estimate += round(max_attempts * spent / len(atts))
    st.passed_at = {k: passed.get(k, 0) for k in range(1, max_attempts + 1)}
    st.no_answer_attempts = sum(a.letter is None and not is_truncated(a) for a in attempts)
    st.truncated_attempts = sum(is_truncated(a) for a in attempts)
    st.matched_by = dict(Counter(a.matched_by for a in attempts).most_common())
    if st.tokens_always5_estimate:
        st.token_ratio_vs_always5 = round(st.tokens_spent / st.tokens_always5_estimate, 4)
    finished = sum(passed.values()) + st.escalated
    st.escalation_rate = round(st.escalated / finished, 4) if finished else None
    return st


@dataclass
class ModelStrikeStats:
    """One answerer model's attempts: right, wrong letter, no answer (both strikes), truncated (never a strike)."""

    attempts: int = 0
    right: int = 0
    wrong: int = 0
    no_answer: int = 0
    truncated: int = 0
    strikes: int = 0
    accuracy: float | None = None  # right / (right + wrong + no answer)

    def add(self, letter: str | None, correct: bool, matched_by: str) -> None:
        self.attempts += 1
        if matched_by == TRUNCATED:
            self.truncated += 1
        elif correct:
            self.right += 1
        elif letter is None:
            self.no_answer += 1
        else:
            self.wrong += 1
        self.strikes = self.wrong + self.no_answer
        answered = self.attempts - self.truncated
        self.accuracy = round(self.right / answered, 4) if answered else None


NO_CALL = "(no call recorded)"


def strikes_by_model(store: Store, round: int | None = 0) -> dict[str, ModelStrikeStats]:
    """Model id (of each attempt's stored call) -> its attempts, of one round (None: every round)."""
    query = (select(CallRow.model, AttemptRow.letter, AttemptRow.correct, AttemptRow.matched_by)
             .outerjoin(CallRow, CallRow.id == AttemptRow.call_id))
    if round is not None:
        query = query.where(AttemptRow.round == round)
    out: dict[str, ModelStrikeStats] = defaultdict(ModelStrikeStats)
    with store.engine.connect() as conn:
        for model, letter, correct, matched_by in conn.execute(query):
            out[model if model is not None else NO_CALL].add(letter, bool(correct), matched_by)
    return dict(sorted(out.items()))


def by_model_markdown(by_model: dict[str, ModelStrikeStats], names: dict[str, str]) -> list[str]:
    """The per-model table; `names`: model id -> its config name."""
    lines = ["", "Per answerer model (this round):", "",
             "| model | attempts | right | wrong | no answer | truncated | strikes | accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, m in by_model.items():
        name = f"{names[model]} (`{model}`)" if model in names else f"`{model}`"
        acc = "n/a" if m.accuracy is None else f"{100 * m.accuracy:.1f} %"
        lines.append(f"| {name} | {m.attempts} | {m.right} | {m.wrong} | {m.no_answer} | {m.truncated} | "
                     f"{m.strikes} | {acc} |")
    return lines + ["", "(accuracy: right / (right + wrong + no answer); truncated replies are never strikes)"]


def strikes_markdown(st: StrikesStats, run: StrikesSummary, max_attempts: int) -> str:
    lines = [f"Five-strike re-answering (whole store, this round): {st.items} items, {st.attempts} attempts.", "",
             "| first correct at attempt | items |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in st.passed_at.items()]
    lines += [f"| escalated (failed all {max_attempts}) | {st.escalated} |"]
    if st.unresolved:
        lines += [f"| unresolved (interrupted, or held after truncated replies) | {st.unresolved} |"]
    rate = "n/a" if st.escalation_rate is None else f"{100 * st.escalation_rate:.1f} %"
    ratio = "n/a" if st.token_ratio_vs_always5 is None else f"{st.token_ratio_vs_always5:.3f}"
    lines += ["", f"- escalation rate: {rate}",
              f"- unparseable answers (no letter, counted as failed attempts): {st.no_answer_attempts} of "
              f"{st.attempts} attempts",
              f"- truncated replies (cut at max_tokens after one retry with a larger budget; never a strike): "
              f"{st.truncated_attempts} attempts; items held (truncated strikes.max_truncated times; raise max_tokens): "
              f"{run.held_truncated}",
              f"- tokens spent: {st.tokens_spent}; always-{max_attempts} baseline (estimated): "
              f"{st.tokens_always5_estimate}; ratio {ratio}",
              f"  (estimate: per item, {max_attempts} x its mean measured tokens per attempt)",
              f"- this run: {run.attempts_made} attempts in {run.waves} waves over {run.eligible} eligible items "
              f"({run.resumed} resumed); {run.passed} passed, {run.escalated} escalated"]
    return "\n".join(lines)


@stage("strikes", needs_llm=True)
async def _strikes_stage(ctx: RunContext) -> dict[str, Any]:
    from dataclasses import asdict
    cfg = ctx.cfg.strikes
    rotation = [ctx.model(name) for name in cfg.models or [DEFAULT_MODEL]]
    first = rotation[0]
    run = await run_strikes(ctx.store, first.client, cfg, first.model, ctx.progress, rotation=rotation)
    st = strikes_stats(ctx.store.attempts(cfg.round), cfg.max_attempts)
    by_model = strikes_by_model(ctx.store, cfg.round)
    md = strikes_markdown(st, run, cfg.max_attempts)
    if len(by_model) > 1 or len({m.name for m in rotation}) > 1:
        md += "\n" + "\n".join(by_model_markdown(by_model, {m.model: m.name for m in ctx.models.values()}))
    return {"run": asdict(run), "stats": asdict(st), "models": [m.name for m in rotation],
            "by_model": {k: asdict(v) for k, v in by_model.items()}, "markdown": md}

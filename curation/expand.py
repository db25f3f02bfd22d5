"""Expansion (paper 2.2): each seed family grows by `factor` new single-choice questions.

Per seed: (1) key facts and reasoning steps are extracted from the seed's CoT (structured output);
(2) one new question per slot, each on a named aspect (structured output); (3) every candidate goes
through checks that keep their reason (unusable output, structure, copy of the seed's stem, the seed's
options and key again, near-duplicate of the seed, a sibling or any store item by the one rule of
medcot.neardup); rejects are stored as `candidates` rows, accepted ones become items of the
family (origin "expanded", id `{seed}~x{slot}`), all in ONE transaction with a family `expansion_done`
event; (4) accepted items get their CoT from the generate stage, like seeds.

Cross-check (`expand.check_model`): a second model answers every well-formed candidate with an answerer prompt
(`expand.check_prompt`, the five-strike one by default); an answer that is not the key (or no answer) is a
disagreement, with its reason. `expand.check_action: flag` (default) keeps the question and records an
`expand_check` event on it (the reviewers and the panel decide); `reject` stores it as a rejected candidate
(check `cross_check`). Agreement records no check (the expanded event names the check call).

Resumable per family: a family with an `expansion_done` event is never expanded again, and the
client's cache makes an interrupted family's calls free to repeat.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import yaml

from curation.generate import run_generate, summary_dict
from medcot.config import ExpandConfig, SamplingConfig
from medcot.extract import EXTRACTOR_VERSION, extract_answer
from medcot.llm import LLMClient, gather_all, json_schema_format, sampling_params
from medcot.models import ModelHandle
from medcot.neardup import RULE_VERSION, THRESHOLD, DupText, NearDupIndex, stem_similarity
from medcot.pipeline import RunContext, stage
from medcot.prompts import PROMPT_DIR, format_options, load_prompt
from medcot.records import LETTERS, Candidate, ChatRequest, ChatResult, Event, Generation, Item
from medcot.store import Store, normalize_text

_CJK = re.compile(r"[\u3400-\u9fff]")
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)
MIN_STEM_CHARS = 8


@dataclass(slots=True)
class Facts:
    facts: list[str]
    steps: list[str]
    call_id: int | None
    prompt_version: str


@dataclass
class ExpandSummary:
    families_eligible: int = 0
    families_done_before: int = 0
    families_expanded: int = 0
    families_without_cot: int = 0
    families_facts_unusable: int = 0
    candidates: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    cross_checked: int = 0  # candidates that passed every other check and were answered by the check model
    cross_check_disagreed: int = 0  # of those, answered otherwise than the key, or not at all (flagged or rejected)


# ---- schemas ---------------------------------------------------------------------------------------
def facts_schema(max_items: int) -> dict[str, Any]:
    strings = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 400},
               "minItems": 1, "maxItems": max_items}
    return {"type": "object", "properties": {"facts": strings, "steps": strings},
            "required": ["facts", "steps"], "additionalProperties": False}


QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 1, "maxLength": 1200},
        "options": {"type": "object",
                    "properties": {L: {"type": "string", "minLength": 1, "maxLength": 300} for L in LETTERS},
                    "required": list(LETTERS[:4]), "additionalProperties": False},
        "answer": {"type": "string", "enum": list(LETTERS)},
    },
    "required": ["question", "options", "answer"], "additionalProperties": False,
}


@cache
def aspect_descriptions(prompt_name: str) -> dict[str, dict[str, str]]:
    """aspect -> {language: description}, from the `aspects:` block of the questions prompt file."""
    data = yaml.safe_load((PROMPT_DIR / f"{prompt_name}.yaml").read_text(encoding="utf-8"))
    aspects = data.get("aspects")
    if not isinstance(aspects, dict) or not aspects:
        raise ValueError(f"{PROMPT_DIR / prompt_name}.yaml: needs an `aspects:` mapping")
    return aspects


def check_aspects(cfg: ExpandConfig) -> None:
    from medcot.config import ConfigError
    known = aspect_descriptions(cfg.questions_prompt)
    unknown = [a for a in cfg.aspects if a not in known]
    if unknown:
        raise ConfigError(f"expand.aspects: unknown {unknown} (known in {cfg.questions_prompt}.yaml: {', '.join(known)})")


# ---- requests --------------------------------------------------------------------------------------
def _params(s: SamplingConfig, offset: int) -> dict[str, object]:
    params = sampling_params(s)
    if s.seed is not None:
        params["seed"] = s.seed + offset  # each slot samples differently, reproducibly
    return params


def facts_request(seed: Item, gen: Generation, cfg: ExpandConfig, model: str) -> ChatRequest:
    prompt = load_prompt(cfg.facts_prompt, seed.language)
    messages = prompt.messages(question=seed.question, options=format_options(seed.options), answer=seed.answer,
                               cot=gen.cot, max_facts=cfg.max_facts)
    return ChatRequest(messages=messages, model=model, params=_params(cfg.facts_sampling, 0),
                       prompt_version=prompt.tag, stage="expand", item_id=seed.id,
                       response_format=json_schema_format("expand_facts", facts_schema(cfg.max_facts)))


def question_request(seed: Item, facts: Facts, slot: int, aspect: str, cfg: ExpandConfig, model: str) -> ChatRequest:
    prompt = load_prompt(cfg.questions_prompt, seed.language)
    described = aspect_descriptions(cfg.questions_prompt)[aspect]
    bullets = lambda xs: "\n".join(f"- {x}" for x in xs)  # noqa: E731
    messages = prompt.messages(question=seed.question, options=format_options(seed.options), answer=seed.answer,
                               aspect=described.get(seed.language) or described["en"],
                               facts=bullets(facts.facts), steps=bullets(facts.steps))
    return ChatRequest(messages=messages, model=model, params=_params(cfg.questions_sampling, slot),
                       prompt_version=prompt.tag, stage="expand", item_id=f"{seed.id}~x{slot}",
                       response_format=json_schema_format("expand_question", QUESTION_SCHEMA))


# ---- parsing and checks (each returns a reason, never raises on model output) ----------------------
def parse_json_object(result: ChatResult) -> tuple[dict[str, Any] | None, str]:
    """The reply as a JSON object, or (None, reason)."""
    text = result.content.strip()
    if (m := _FENCE.match(text)) is not None:
        text = m.group(1)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        cut = " (truncated at max_tokens)" if result.finish_reason == "length" else ""
        return None, f"invalid JSON{cut}: {exc}"
    if not isinstance(obj, dict):
        return None, f"invalid JSON: expected an object, got {type(obj).__name__}"
    return obj, ""


def parse_facts(result: ChatResult, prompt_version: str, max_items: int) -> tuple[Facts | None, str, str]:
    """(facts, check, reason): check is "facts_json" or "facts_missing_key" on failure."""
    obj, reason = parse_json_object(result)
    if obj is None:
        return None, "facts_json", reason
    lists = {}
    for key in ("facts", "steps"):
        value = obj.get(key)
        if not isinstance(value, list) or not [x for x in value if isinstance(x, str) and x.strip()]:
            return None, "facts_missing_key", f"'{key}' missing or not a non-empty list of strings"
        lists[key] = [" ".join(x.split()) for x in value if isinstance(x, str) and x.strip()][:max_items]
    return Facts(lists["facts"], lists["steps"], result.call_id, prompt_version), "", ""


def dup_text(item_id: str, question: str, options: dict[str, str], language: str) -> DupText:
    """An item as the near-duplicate rule (medcot.neardup) sees it."""
    return DupText(item_id, question, options, language)


def structure_problem(obj: dict[str, Any], language: str) -> tuple[str, str]:
    """("missing_key" | "structure", reason) for a malformed question object, or ("", "")."""
    for key, kind in (("question", str), ("options", dict), ("answer", str)):
        if not isinstance(obj.get(key), kind):
            return "missing_key", f"'{key}' missing or not a {kind.__name__}"
    stem, options, answer = obj["question"].strip(), obj["options"], obj["answer"].strip().upper()
    letters = sorted(options)
    if letters not in (list(LETTERS[:4]), list(LETTERS[:5])):
        return "structure", f"options must be A-D or A-E: got {', '.join(map(str, letters)) or 'none'}"
    texts = [options[k].strip() if isinstance(options[k], str) else "" for k in letters]
    if not all(texts):
        return "structure", "an option is empty"
    if len({normalize_text(t) for t in texts}) != len(texts):
        return "structure", "options are not unique"
    if answer not in letters:
        return "structure", f"answer not among the options: {obj['answer']!r}"
    if len(normalize_text(stem)) < MIN_STEM_CHARS:
        return "structure", f"question stem too short: {stem!r}"
    if (language == "zh") != bool(_CJK.search(stem)):
        return "structure", f"question is not in the family's language ({language})"
    return "", ""


@dataclass
class ExistingItems:
    """Every item of the store, and those accepted during this run, indexed under the near-duplicate rule
    (shared by all families of a run, so a candidate is checked against other families' items too)."""

    index: NearDupIndex = field(default_factory=NearDupIndex)
    family_of: dict[str, str] = field(default_factory=dict)  # item id -> family id

    @classmethod
    def of(cls, items: Iterable[Item]) -> ExistingItems:
        existing = cls()
        for item in items:
            existing.add(item)
        return existing

    def add(self, item: Item) -> None:
        self.index.add(dup_text(item.id, item.question, item.options, item.language))
        self.family_of[item.id] = item.family_id


@dataclass
class FamilyChecker:
    """Checks candidates of one family in slot order, with the one near-duplicate rule (medcot.neardup):
    a copy of the seed's stem, the seed's options and key again, or a near-duplicate of the seed, a sibling
    accepted so far or any other item of the store."""

    seed: Item
    existing: ExistingItems
    keys: dict[tuple[frozenset[str], str], str] = field(default_factory=dict)  # (option texts, key text) -> id

    def __post_init__(self) -> None:
        if self.seed.id not in self.existing.family_of:
            self.existing.add(self.seed)
        self.seed_text = dup_text(self.seed.id, self.seed.question, self.seed.options, self.seed.language)
        self.keys[answer_key(self.seed.options, self.seed.answer)] = self.seed.id

    def check(self, obj: dict[str, Any], candidate_id: str = "") -> tuple[str, str]:
        kind, reason = structure_problem(obj, self.seed.language)
        if kind:
            return kind, reason
        stem, options = obj["question"].strip(), {k: v.strip() for k, v in obj["options"].items()}
        text = dup_text(candidate_id, stem, options, self.seed.language)
        if (sim := stem_similarity(text, self.seed_text)) >= THRESHOLD:
            return "copy", f"stem copies the seed's stem: {RULE_VERSION} stem similarity {sim:.2f} >= {THRESHOLD}"
        if (other := self.keys.get(answer_key(options, obj["answer"].strip().upper()))) is not None:
            return "near_duplicate", f"same options and same correct option as another item: {other}"
        matches = self.existing.index.query(text, exclude_id=candidate_id or None)
        if not matches:
            return "", ""
        best = matches[0]
        return "near_duplicate", (f"near-duplicate of {self._whom(best.matched_id)}: {best.matched_id}, "
                                  f"{RULE_VERSION} similarity {best.similarity:.2f} >= {THRESHOLD}")

    def _whom(self, item_id: str) -> str:
        if item_id == self.seed.id:
            return "the seed"
        return "a sibling" if self.existing.family_of.get(item_id) == self.seed.family_id else "an existing item"

    def accept(self, item: Item) -> None:
        self.existing.add(item)
        self.keys[answer_key(item.options, item.answer)] = item.id


def answer_key(options: dict[str, str], answer: str) -> tuple[frozenset[str], str]:
    """The option set and the correct option's text: two questions that share both ask the same thing."""
    return frozenset(normalize_text(t) for t in options.values()), normalize_text(options.get(answer, ""))


def expanded_item(seed: Item, slot: int, aspect: str, obj: dict[str, Any]) -> Item:
    """The new item: lineage to the seed, licence and source inherited with a note that it is LLM-derived."""
    options = {k: v.strip() for k, v in sorted(obj["options"].items())}
    source = f"{seed.source} | LLM-derived by medcot expansion from seed {seed.id}".lstrip(" |")
    return Item(id=f"{seed.id}~x{slot}", family_id=seed.family_id, language=seed.language,
                question=" ".join(obj["question"].split()), options=options, answer=obj["answer"].strip().upper(),
                origin="expanded", parent_id=seed.id, aspect=aspect, subject=seed.subject, source=source,
                licence=seed.licence, stage="imported")


# ---- cross-check -----------------------------------------------------------------------------------
CROSS_CHECK = "cross_check"
CHECK_EVENT = "expand_check"


@dataclass(slots=True)
class CrossCheck:
    """The check model's answer to one candidate, against the candidate's key."""

    model: str
    call_id: int | None
    letter: str | None  # None: no answer
    matched_by: str
    key: str
    prompt_version: str

    @property
    def agrees(self) -> bool:
        return self.letter is not None and self.letter == self.key

    @property
    def reason(self) -> str:
        if self.letter is None:
            return f"check model gives no answer: {self.model} ({self.matched_by}), key {self.key}"
        return f"check model disagrees with the key: {self.model} answered {self.letter}, key {self.key}"

    def payload(self) -> dict[str, Any]:
        return {"model": self.model, "call_id": self.call_id, "answer": self.letter, "matched_by": self.matched_by,
                "key": self.key, "agrees": self.agrees, "prompt_version": self.prompt_version}


def check_request(item: Item, cfg: ExpandConfig, model: str) -> ChatRequest:
    prompt = load_prompt(cfg.check_prompt, item.language)
    messages = prompt.messages(question=item.question, options=format_options(item.options))
    return ChatRequest(messages=messages, model=model, params=sampling_params(cfg.check_sampling),
                       prompt_version=f"{prompt.tag}+{EXTRACTOR_VERSION}", stage="expand_check", item_id=item.id)


async def cross_check(check: ModelHandle, item: Item, cfg: ExpandConfig) -> CrossCheck:
    req = check_request(item, check.tuned(cfg, "check_sampling"), check.model)
    res = await check.client.chat(req)
    found = extract_answer(res.content, item.options, finish_reason=res.finish_reason)
    return CrossCheck(check.model, res.call_id, found.letter, found.matched_by, item.answer, req.prompt_version)


async def cross_checks(check: ModelHandle, seed: Item, slots: list[tuple[int, str]], results: list[ChatResult],
                       cfg: ExpandConfig) -> list[CrossCheck | None]:
    """The check model's answer to every well-formed candidate (None for the others), all at once: before the
    duplicate checks, which run in slot order, so that a rejected question never enters the family's index."""
    out: list[CrossCheck | None] = [None] * len(results)

    async def one(i: int, item: Item) -> None:
        out[i] = await cross_check(check, item, cfg)

    todo = []
    for i, ((slot, aspect), res) in enumerate(zip(slots, results)):
        obj, _ = parse_json_object(res)
        if obj is not None and not structure_problem(obj, seed.language)[0]:
            todo.append(one(i, expanded_item(seed, slot, aspect, obj)))
    await gather_all(todo)
    return out


# ---- one family ------------------------------------------------------------------------------------
@dataclass
class FamilyResult:
    items: list[Item]
    events: list[Event]
    candidates: list[Candidate]
    facts_ok: bool
    cross_checked: int = 0
    cross_check_disagreed: int = 0


async def expand_family(client: LLMClient, seed: Item, gen: Generation, cfg: ExpandConfig, model: str,
                        existing: ExistingItems, check_by: ModelHandle | None = None) -> FamilyResult:
    freq = facts_request(seed, gen, cfg, model)
    fres = await client.chat(freq)
    facts, check, reason = parse_facts(fres, freq.prompt_version, cfg.max_facts)
    if facts is None:
        bad = Candidate(seed.family_id, seed.id, -1, None, fres.call_id, check, reason,
                        {"raw": fres.content, "finish_reason": fres.finish_reason})
        return FamilyResult([], [], [bad], facts_ok=False)
    slots = [(slot, cfg.aspects[slot % len(cfg.aspects)]) for slot in range(cfg.factor)]
    reqs = [question_request(seed, facts, slot, aspect, cfg, model) for slot, aspect in slots]
    results = [None] * len(reqs)

    async def ask(i: int) -> None:
        results[i] = await client.chat(reqs[i])

    await gather_all([ask(i) for i in range(len(reqs))])
    checks: list[CrossCheck | None] = [None] * len(reqs)
    if check_by is not None:
        checks = await cross_checks(check_by, seed, slots, results, cfg)  # type: ignore[arg-type]
    checker = FamilyChecker(seed, existing)
    out = FamilyResult([], [], [], facts_ok=True)
    for (slot, aspect), req, res, cc in zip(slots, reqs, results, checks):
        _judge(checker, out, seed, slot, aspect, req, res, facts, cc, cfg.check_action == "reject")  # type: ignore[arg-type]
    return out


def _judge(checker: FamilyChecker, out: FamilyResult, seed: Item, slot: int, aspect: str, req: ChatRequest,
           res: ChatResult, facts: Facts, cc: CrossCheck | None, reject_disagreement: bool) -> None:
    obj, reason = parse_json_object(res)
    kind = "json" if obj is None else ""
    if obj is not None:
        kind, reason = checker.check(obj, req.item_id)
    disagrees = not kind and cc is not None and not cc.agrees
    if not kind and cc is not None:
        out.cross_checked += 1
        out.cross_check_disagreed += disagrees
        if disagrees and reject_disagreement:
            kind, reason = CROSS_CHECK, cc.reason
    payload: dict[str, Any] = obj if obj is not None else {"raw": res.content, "finish_reason": res.finish_reason}
    if kind == CROSS_CHECK:
        payload = {**payload, "cross_check": cc.payload()}  # type: ignore[union-attr]
    out.candidates.append(Candidate(seed.family_id, seed.id, slot, aspect, res.call_id, kind, reason, payload))
    if kind:
        return
    item = expanded_item(seed, slot, aspect, obj)  # type: ignore[arg-type]
    checker.accept(item)
    out.items.append(item)
    out.events.append(Event(kind="expanded", item_id=item.id, stage="expand", actor="llm", actor_kind="llm", payload={
        "family_id": seed.family_id, "parent_id": seed.id, "aspect": aspect, "slot": slot,
        "facts_call_id": facts.call_id, "question_call_id": res.call_id, "model": req.model,
        "prompt_versions": {"facts": facts.prompt_version, "question": req.prompt_version},
        "cross_check": None if cc is None else {"model": cc.model, "call_id": cc.call_id, "agrees": cc.agrees}}))
    if disagrees:  # flagged, kept: the check with its reason, on the item
        out.events.append(Event(kind=CHECK_EVENT, item_id=item.id, stage="expand", actor="llm", actor_kind="llm",
                                payload={"check": CROSS_CHECK, "reason": cc.reason, **cc.payload()}))  # type: ignore[union-attr]


# ---- the stage -------------------------------------------------------------------------------------
async def run_expand(store: Store, client: LLMClient, cfg: ExpandConfig, model: str,
                     progress: bool = True, check: ModelHandle | None = None) -> ExpandSummary:
    """Expand every seed family not expanded yet (families whose seed has no CoT yet are skipped); `check`: the
    model that cross-checks every new question's key (None: no cross-check)."""
    check_aspects(cfg)
    done = store.expanded_families()
    gens = {g.item_id: g for g in store.generations()}
    seeds = [it for it in store.items() if it.origin == "seed"]
    summary = ExpandSummary(families_eligible=len(seeds), families_done_before=sum(s.id in done for s in seeds))
    todo = [s for s in seeds if s.id not in done]
    summary.families_without_cot = sum(s.id not in gens for s in todo)
    todo = [s for s in todo if s.id in gens][:cfg.limit]
    existing = ExistingItems.of(store.items())

    async def one(seed: Item) -> None:
        result = await expand_family(client, seed, gens[seed.id], cfg, model, existing, check)
        done_event = Event(kind="expansion_done", item_id=seed.id, stage="expand", actor="llm", actor_kind="llm",
                           payload={"factor": cfg.factor, "accepted": len(result.items),
                                    "rejected": sum(1 for c in result.candidates if c.check),
                                    "facts_ok": result.facts_ok, "check_model": check.model if check else None,
                                    "cross_check_disagreed": result.cross_check_disagreed})
        if store.save_expansion(result.items, result.events, [c for c in result.candidates if c.check], done_event):
            _count(summary, result)

    await gather_all([one(s) for s in todo], desc="expand families", progress=progress, unit="family")
    return summary


def _count(summary: ExpandSummary, result: FamilyResult) -> None:
    summary.families_expanded += 1
    summary.families_facts_unusable += not result.facts_ok
    summary.cross_checked += result.cross_checked
    summary.cross_check_disagreed += result.cross_check_disagreed
    for c in result.candidates:
        if c.slot >= 0:
            summary.candidates += 1
        if c.check:
            summary.rejected[c.check] = summary.rejected.get(c.check, 0) + 1
        else:
            summary.accepted += 1


def funnel(store: Store) -> dict[str, Any]:
    """The expansion funnel over the whole store (stable across reruns)."""
    rejected = store.rejected_candidates()
    expanded = [it for it in store.items() if it.origin == "expanded"]
    question_rejects = [c for c in rejected if c.slot >= 0]
    by_check = Counter(c.check for c in rejected)
    reasons = Counter(f"{c.check}: {_reason_kind(c.reason)}" for c in rejected)
    return {"families_expanded": len(store.expanded_families()),
            "families_facts_unusable": sum(1 for c in rejected if c.slot < 0),
            "candidates_generated": len(expanded) + len(question_rejects), "accepted": len(expanded),
            "rejected_by_check": dict(sorted(by_check.items())),
            "near_duplicates_removed": by_check.get("near_duplicate", 0),
            "top_reasons": dict(reasons.most_common(8)),
            "accepted_by_aspect": dict(sorted(Counter(it.aspect or "?" for it in expanded).items())),
            "cross_check_flagged": len(store.events(kind=CHECK_EVENT)),
            "cross_check_rejected": by_check.get(CROSS_CHECK, 0)}


def _reason_kind(reason: str) -> str:
    """A reason without its specifics (every reason is "kind: details"), so that reasons can be counted."""
    return reason.split(":", 1)[0].strip()[:80]


def funnel_markdown(f: dict[str, Any], run: dict[str, Any]) -> str:
    lines = ["Expansion funnel (whole store):", "", "| measure | value |", "|---|---|",
             f"| seed families expanded | {f['families_expanded']} |",
             f"| families whose facts extraction was unusable | {f['families_facts_unusable']} |",
             f"| candidate questions generated | {f['candidates_generated']} |",
             f"| accepted (new items) | {f['accepted']} |"]
    lines += [f"| dropped by check `{k}` | {v} |" for k, v in f["rejected_by_check"].items()]
    lines += [f"| near-duplicates removed | {f['near_duplicates_removed']} |"]
    if f["cross_check_flagged"] or f["cross_check_rejected"] or run.get("check_model"):
        lines += [f"| kept, flagged by the cross-check (`{CHECK_EVENT}` events) | {f['cross_check_flagged']} |",
                  f"| rejected by the cross-check | {f['cross_check_rejected']} |"]
    lines += [""]
    if f["top_reasons"]:
        lines += ["Most frequent reasons:", ""] + [f"- {k}: {v}" for k, v in f["top_reasons"].items()] + [""]
    if f["accepted_by_aspect"]:
        lines += ["Accepted by aspect: " + ", ".join(f"{k} {v}" for k, v in f["accepted_by_aspect"].items()), ""]
    lines += [f"This run: {run['families_expanded']} families expanded ({run['families_done_before']} done before, "
              f"{run['families_without_cot']} without a CoT yet), {run['candidates']} candidates, "
              f"{run['accepted']} accepted."]
    if run.get("check_model"):
        lines += ["", f"Cross-check by `{run['check_model']}` ({run['check_action']}): {run['cross_checked']} new "
                  f"questions answered, {run['cross_check_disagreed']} not with their key (or not at all)."]
    if run.get("cot"):
        cot = run["cot"]
        lines += ["", f"CoT for new items: {cot['generated']} generated ({cot['agree_with_key']} agree with the key, "
                  f"{cot['disagree_with_key']} disagree, {cot['no_answer']} no answer)."]
    return "\n".join(lines)


@stage("expand", needs_llm=True)
async def _expand_stage(ctx: RunContext) -> dict[str, Any]:
    m = ctx.model(ctx.cfg.expand.model)
    cfg = m.tuned(ctx.cfg.expand, "facts_sampling", "questions_sampling")
    check = ctx.model(cfg.check_model) if cfg.check_model else None
    summary = await run_expand(ctx.store, m.client, cfg, m.model, ctx.progress, check=check)
    out: dict[str, Any] = {**asdict(summary), "model": m.label, "check_model": check.label if check else None,
                           "check_action": cfg.check_action}
    if cfg.generate_cot:
        g = ctx.model(ctx.cfg.generate.model)
        out["cot"] = summary_dict(await run_generate(ctx.store, g.client, g.tuned(ctx.cfg.generate, "sampling"),
                                                     g.model, ctx.progress))
    out["funnel"] = funnel(ctx.store)
    out["markdown"] = funnel_markdown(out["funnel"], out)
    return out

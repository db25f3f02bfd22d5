"""CoT generation (paper 2.2): think aloud, judge EACH option, end with a fixed final-answer line.

Resumable per item: an item with a stored generation is never generated again, and the client's
cache makes an interrupted request free to repeat.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from medcot.config import GenerateConfig
from medcot.extract import EXTRACTOR_VERSION, extract_answer, parse_option_explanations
from medcot.llm import LLMClient, gather_all, sampling_params
from medcot.prompts import format_options, load_prompt
from medcot.records import ChatRequest, Generation, Item
from medcot.store import Store


@dataclass
class GenerateSummary:
    todo: int = 0
    generated: int = 0
    already_done: int = 0
    no_answer: int = 0
    agree_with_key: int = 0
    disagree_with_key: int = 0
    truncated: int = 0  # CoTs stored although cut at max_tokens (generate.keep_truncated)
    retried_truncated: int = 0  # CoTs cut at max_tokens and asked again with a larger budget
    held_truncated: int = 0  # still cut (or empty) after the retry: not stored, never reviewed
    matched_by: dict[str, int] = field(default_factory=dict)

    def count(self, gen: Generation, finish_reason: str | None) -> None:
        self.generated += 1
        self.matched_by[gen.matched_by] = self.matched_by.get(gen.matched_by, 0) + 1
        if finish_reason == "length":
            self.truncated += 1
        if gen.answer is None:
            self.no_answer += 1
        elif gen.agrees_with_key:
            self.agree_with_key += 1
        else:
            self.disagree_with_key += 1


def cot_request(item: Item, cfg: GenerateConfig, model: str, stage: str = "generate",
                extra_user: str = "") -> ChatRequest:
    prompt = load_prompt(cfg.prompt, item.language)
    messages = prompt.messages(question=item.question, options=format_options(item.options))
    if extra_user:
        messages[-1]["content"] += "\n\n" + extra_user
    return ChatRequest(messages=messages, model=model, params=sampling_params(cfg.sampling),
                       prompt_version=f"{prompt.tag}+{EXTRACTOR_VERSION}", stage=stage, item_id=item.id)


def parse_cot(item: Item, content: str, reasoning: str | None, finish_reason: str | None, call_id: int | None,
              prompt_version: str, purpose: str = "initial", revision: int = 0) -> Generation:
    found = extract_answer(content, item.options, finish_reason=finish_reason)
    return Generation(item_id=item.id, call_id=call_id, prompt_version=prompt_version, cot=content,
                      reasoning=reasoning, answer=found.letter, matched_by=found.matched_by,
                      option_explanations=parse_option_explanations(content, item.options),
                      agrees_with_key=None if found.letter is None else found.letter == item.answer,
                      purpose=purpose, revision=revision)


async def generate_one(client: LLMClient, store: Store, item: Item, cfg: GenerateConfig, model: str,
                       summary: GenerateSummary) -> None:
    """One CoT. A reply cut at max_tokens (a reasoning model that thinks past its budget leaves an empty or
    half-written explanation) is asked again once with `truncated_retry_factor` times the budget; still cut, it
    is held: no generation is stored, so the item never reaches the experts (a rerun asks the same cached
    requests, and a rerun with a larger max_tokens writes it). Both requests are cached like any other."""
    req = cot_request(item, cfg, model)
    result = await client.chat(req)
    if result.finish_reason == "length" and cfg.truncated_retry_factor > 1:
        summary.retried_truncated += 1
        budget = int(cfg.sampling.max_tokens * cfg.truncated_retry_factor)
        req = dataclasses.replace(req, params={**req.params, "max_tokens": budget})
        result = await client.chat(req)
    if not result.content.strip() or (result.finish_reason == "length" and not cfg.keep_truncated):
        summary.held_truncated += 1
        return
    gen = parse_cot(item, result.content, result.reasoning, result.finish_reason, result.call_id,
                    req.prompt_version)
    if store.save_generation(gen):
        summary.count(gen, result.finish_reason)
    else:
        summary.already_done += 1


async def run_generate(store: Store, client: LLMClient, cfg: GenerateConfig, model: str,
                       progress: bool = True) -> GenerateSummary:
    """Generate a CoT for every item that has none yet (seeds and expanded items alike)."""
    done = store.generated_item_ids()
    todo = [it for it in store.items() if it.id not in done]
    if cfg.limit is not None:
        todo = todo[:cfg.limit]
    summary = GenerateSummary(todo=len(todo), already_done=len(done))
    bar = tqdm(total=len(todo), desc="generate CoT", unit="item", disable=not progress)

    async def one(item: Item) -> None:
        await generate_one(client, store, item, cfg, model, summary)
        bar.update(1)

    try:
        await gather_all([one(it) for it in todo])
    finally:
        bar.close()
    return summary


def summary_dict(summary: GenerateSummary) -> dict[str, object]:
    return asdict(summary)


__all__ = ["run_generate", "cot_request", "parse_cot", "GenerateSummary"]

"""Expansion, specialty and five-strike on the real vLLM CPU server (SmolLM2): a few seeds, factor 2,
small max_tokens. The model is plumbing-grade, so this checks the flow and the bookkeeping (structured
outputs parse or are rejected with a reason, every attempt stored, every item resolved), not quality."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from curation.expand import funnel, run_expand
from curation.generate import run_generate
from curation.specialty import run_specialty
from curation.strikes import run_strikes, strikes_of, strikes_stats
from medcot.config import ExpandConfig, GenerateConfig, LLMConfig, SpecialtyConfig, StrikesConfig
from medcot.llm import LLMClient
from medcot.seeds import import_seeds
from medcot.store import Store

pytestmark = pytest.mark.vllm
SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"


def configs() -> tuple[GenerateConfig, ExpandConfig, StrikesConfig]:
    gen = GenerateConfig(truncated_retry_factor=1, keep_truncated=True)  # the tiny model, as in the demo config
    gen.sampling.max_tokens = 128
    exp = ExpandConfig(factor=2)
    exp.facts_sampling.max_tokens = 192
    exp.questions_sampling.max_tokens = 200
    strikes = StrikesConfig()
    strikes.sampling.max_tokens = 64
    return gen, exp, strikes


async def run_all(store: Store, url: str, model: str) -> dict[str, int]:
    gen, exp, strikes = configs()
    async with LLMClient(LLMConfig(endpoints=[url], model=model, concurrency=16, timeout_s=300), store) as client:
        await run_generate(store, client, gen, model, progress=False)
        await run_expand(store, client, exp, model)
        await run_generate(store, client, gen, model, progress=False)
        await run_specialty(store, client, SpecialtyConfig(), model)
        await run_strikes(store, client, strikes, model, progress=False)
        return client.stats.as_dict()


async def test_expand_specialty_strikes_on_vllm(vllm_server, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "vllm.db"))
    import_seeds(SEEDS / "demo_en.jsonl", store, limit=1)
    import_seeds(SEEDS / "demo_zh.jsonl", store, limit=1)
    stats = await run_all(store, vllm_server.base_url, vllm_server.model_name)
    assert stats["requests"] > 0 and stats["failures"] == 0

    # expansion: every slot of every family with usable facts is an item or a rejected candidate with a reason
    rejected = store.rejected_candidates()
    assert all(c.check and c.reason for c in rejected)
    facts_failed = {c.family_id for c in rejected if c.slot < 0}
    assert store.expanded_families() == {"medmcqa-1318", "cmexam-117"}
    items = store.items()
    for fam in store.expanded_families() - facts_failed:
        new = [it for it in items if it.family_id == fam and it.origin == "expanded"]
        dropped = [c for c in rejected if c.family_id == fam and c.slot >= 0]
        assert len(new) + len(dropped) == 2
        assert all(it.parent_id == fam and it.aspect and "LLM-derived" in it.source for it in new)
    f = funnel(store)
    assert f["candidates_generated"] == f["accepted"] + sum(1 for c in rejected if c.slot >= 0)

    # specialty: assigned from the taxonomy, or recorded as failed; never defaulted
    failed = {e.item_id for e in store.events(kind="specialty_failed")}
    assert all((it.specialty is not None) != (it.id in failed) for it in items)

    # five-strike: every item resolved (passed, escalated, or held after truncated replies), attempts consistent
    # with the outcome; a reply cut at max_tokens is never a strike
    store_items = store.items()
    assert {it.stage for it in store_items} <= {"strikes_passed", "escalated", "generated"}
    attempts = store.attempts()
    by_item = Counter(a.item_id for a in attempts)
    for it in store_items:
        mine = sorted((a for a in attempts if a.item_id == it.id), key=lambda a: a.attempt_no)
        assert [a.attempt_no for a in mine] == list(range(1, len(mine) + 1))
        if it.stage == "escalated":
            assert strikes_of(mine) == 5 and not any(a.correct for a in mine)
        elif it.stage == "generated":  # held: truncated max_truncated (2) times, fewer than 5 strikes
            assert sum(a.matched_by == "none:truncated" for a in mine) == 2 and strikes_of(mine) < 5
        else:
            assert mine[-1].correct and not any(a.correct for a in mine[:-1])
    st = strikes_stats(attempts)
    assert st.attempts == sum(by_item.values()) and st.tokens_spent > 0
    assert st.token_ratio_vs_always5 is not None and 0 < st.token_ratio_vs_always5 <= 1.0

    # a rerun of every stage is free
    again = await run_all(store, vllm_server.base_url, vllm_server.model_name)
    assert again["requests"] == 0
    store.close()

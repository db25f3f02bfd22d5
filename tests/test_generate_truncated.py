"""CoT generation when the model thinks past its budget (R1): a reply cut at max_tokens is asked again once with a
larger budget; still cut, or empty, the CoT is held (no generation stored, never reviewed); reruns ask nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from curation.generate import run_generate
from medcot.config import ConfigError, GenerateConfig, LLMConfig, load_config
from medcot.llm import LLMClient
from medcot.records import Item
from medcot.scripted_server import Reply, ScriptedServer
from medcot.store import Store

COT = "A. no\nB. no\nC. yes: atropine was removed in 2010.\nD. no\nThe answer is (C)."


def items(n: int) -> list[Item]:
    return [Item(id=f"t{i}", family_id=f"t{i}", language="en", question=f"(t{i}) Which drug was removed?",
                 options={"A": "adrenaline", "B": "vasopressin", "C": "atropine", "D": "amiodarone"}, answer="C")
            for i in range(n)]


def responder(body: dict) -> Reply:
    """t0 answers at once; t1 needs the larger budget; t2 is cut even then; t3 writes only thinking."""
    text, budget = body["messages"][-1]["content"], body["max_tokens"]
    if "(t1)" in text and budget <= 100:
        return Reply(content="A. no\nB. n", reasoning="long thinking", finish_reason="length")
    if "(t2)" in text:
        return Reply(content="", reasoning="thinking that never ends", finish_reason="length")
    if "(t3)" in text:
        return Reply(content="  ", reasoning="all thought, no explanation")
    return Reply(content=COT, reasoning="short thinking")


async def test_cut_cots_are_retried_then_held(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "g.db"))
    store.add_items(items(4))
    cfg = load_config(None, ["generate.sampling.max_tokens=100"]).generate
    async with ScriptedServer(responder=responder) as srv:
        async with LLMClient(LLMConfig(endpoints=[srv.base_url], model="m", max_retries=0), store) as client:
            summary = await run_generate(store, client, cfg, "m", progress=False)
            budgets = sorted(b["max_tokens"] for b in srv.bodies)
            assert budgets == [100, 100, 100, 100, 200, 200]  # t1 and t2 asked again with twice the budget
            assert (summary.generated, summary.retried_truncated, summary.held_truncated) == (2, 2, 2)
            gens = {g.item_id: g for g in store.generations()}
            assert sorted(gens) == ["t0", "t1"] and gens["t1"].cot == COT  # t2, t3: nothing for the experts
            again = await run_generate(store, client, cfg, "m", progress=False)
            assert srv.count == 6 and again.held_truncated == 2  # a rerun: cached requests, still held
    assert {it.id: it.stage for it in store.items()}["t2"] == "imported"
    store.close()


async def test_tiny_models_may_keep_cut_cots(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "k.db"))
    store.add_items(items(3))
    cfg = GenerateConfig(truncated_retry_factor=1, keep_truncated=True)
    async with ScriptedServer(responder=lambda body: Reply(content="A. no\nB. no\nC. ye", finish_reason="length")) as srv:
        async with LLMClient(LLMConfig(endpoints=[srv.base_url], model="m", max_retries=0), store) as client:
            summary = await run_generate(store, client, cfg, "m", progress=False)
        assert srv.count == 3
    assert (summary.generated, summary.truncated, summary.held_truncated) == (3, 3, 0)
    with pytest.raises(ConfigError, match="truncated_retry_factor must be >= 1"):
        load_config(None, ["generate.truncated_retry_factor=0.5"])
    store.close()

"""The R1 rehearsal server (medcot.rehearsal): thinking lengths, answers in the prompt's format with the
configured rates, valid JSON, truncation at max_tokens, usage consistent with the text, the replica's decode
rate and concurrency cap, and faults (503s, hangs beyond the client timeout, a replica that dies and comes back).
Time is scaled so that everything runs in well under a second per test."""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from curation.expand import QUESTION_SCHEMA, facts_schema, structure_problem
from curation.review.judge import review_schema
from medcot.config import LLMConfig, ReviewConfig
from medcot.extract import extract_answer
from medcot.llm import LLMClient, json_schema_format, split_reasoning
from medcot.prompts import format_options, load_prompt
from medcot.records import ChatRequest
from medcot.rehearsal import (
    AnswerKeys,
    Death,
    R1Config,
    R1Responder,
    RehearsalFleet,
    Replica,
    ThinkLengths,
    approx_tokens,
    hash_key,
    think_text,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [ROOT / "data" / "seeds" / "demo_en.jsonl", ROOT / "data" / "seeds" / "demo_zh.jsonl"]


def seeds(lang: str) -> list[dict[str, Any]]:
    path = SEEDS[0] if lang == "en" else SEEDS[1]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int,
                         "number": (int, float), "null": type(None)}


def schema_errors(obj: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The violations of the JSON-schema subset the project's schemas use (no jsonschema in the venv)."""
    if "anyOf" in schema:
        branches = [schema_errors(obj, s, path) for s in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{path}: no anyOf branch matches: {branches}"]
    if "enum" in schema and obj not in schema["enum"]:
        return [f"{path}: {obj!r} not in {schema['enum']}"]
    kind = schema.get("type")
    if kind and not isinstance(obj, TYPES[kind]) or (kind == "integer" and isinstance(obj, bool)):
        return [f"{path}: {obj!r} is not {kind}"]
    errors: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        errors += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in obj]
        if schema.get("additionalProperties") is False:
            errors += [f"{path}: extra {k}" for k in obj if k not in props]
        for k, v in obj.items():
            errors += schema_errors(v, props.get(k, {}), f"{path}.{k}")
    if isinstance(obj, list):
        if not schema.get("minItems", 0) <= len(obj) <= schema.get("maxItems", len(obj)):
            errors.append(f"{path}: {len(obj)} items")
        for i, v in enumerate(obj):
            errors += schema_errors(v, schema.get("items") or {}, f"{path}[{i}]")
    if isinstance(obj, str) and not schema.get("minLength", 0) <= len(obj) <= schema.get("maxLength", len(obj)):
        errors.append(f"{path}: length {len(obj)}")
    return errors


@pytest.fixture(scope="module")
def keys() -> AnswerKeys:
    return AnswerKeys([str(p) for p in SEEDS])


def cot_body(rec: dict[str, Any], seed: int, prompt: str = "cot", max_tokens: int = 8192,
             options: dict[str, str] | None = None) -> dict[str, Any]:
    p = load_prompt(prompt, rec["language"])
    msgs = p.messages(question=rec["question"], options=format_options(options or rec["options"]))
    return {"model": "r1", "messages": msgs, "max_tokens": max_tokens, "seed": seed, "temperature": 0.6}


# ---- text, tokens, thinking lengths -------------------------------------------------------------------
@pytest.mark.parametrize("zh", [False, True])
def test_thinking_has_exactly_the_drawn_number_of_tokens(zh: bool) -> None:
    rng = random.Random(1)
    for n in (1, 2, 7, 50, 1999):
        assert approx_tokens(think_text(rng, n, zh)) == n
    assert approx_tokens("答案：B") == 3 and approx_tokens("Answer: B or C") == 4


def test_thinking_length_distribution_is_r1_shaped() -> None:
    rng = random.Random(0)
    lengths = ThinkLengths()
    draws = [lengths.sample(rng) for _ in range(5000)]
    assert 1400 <= statistics.median(draws) <= 1600
    assert 1650 <= statistics.mean(draws) <= 1850  # log-normal: mean = median * exp(sigma^2 / 2)
    assert 0.08 <= sum(d > 3000 for d in draws) / len(draws) <= 0.13  # P(z > ln 2 / 0.55) = 0.104
    assert min(draws) >= 200
    custom = ThinkLengths(median=300, sigma=0.1, minimum=10, maximum=320)
    assert max(custom.sample(rng) for _ in range(500)) == 320


# ---- answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_answers_follow_the_prompt_format_and_the_configured_rates(keys: AnswerKeys, lang: str) -> None:
    cfg = R1Config(p_right=0.7, p_hedge=0.1, p_absent=0.05)
    responder = R1Responder(cfg, keys)
    outcomes: dict[str, int] = {"right": 0, "wrong": 0, "none": 0}
    n = 0
    for rec in seeds(lang):
        for seed in range(40):
            reply = responder.compose(cot_body(rec, seed, max_tokens=40000))
            assert reply.finish_reason == "stop" and reply.reasoning_content
            assert reply.completion_tokens == approx_tokens(reply.reasoning_content) + approx_tokens(reply.content)
            found = extract_answer(reply.content, rec["options"])
            if found.letter is None:
                outcomes["none"] += 1
            else:
                outcomes["right" if found.letter == rec["answer"] else "wrong"] += 1
                assert reply.content.rstrip().endswith(("答案：" if lang == "zh" else "Answer: ") + found.letter)
            n += 1
    assert abs(outcomes["right"] / n - 0.7) < 0.04
    assert abs(outcomes["none"] / n - 0.15) < 0.03  # hedged and absent answers are no answer to the extractor
    assert responder.outcomes["hedged"] + responder.outcomes["absent"] == outcomes["none"]


def test_the_key_is_found_under_permuted_options_and_for_unknown_questions(keys: AnswerKeys) -> None:
    rec = seeds("en")[0]
    letters = sorted(rec["options"])
    shuffled = dict(zip(letters, [rec["options"][k] for k in reversed(letters)]))
    key_text = rec["options"][rec["answer"]]
    assert keys.key_letter(shuffled) == next(k for k, v in shuffled.items() if v == key_text)
    unknown = {"A": "alpha option", "B": "beta option", "C": "gamma option", "D": "delta option"}
    moved = dict(zip("ABCD", [unknown[k] for k in "DCBA"]))
    assert moved[keys.key_letter(moved)] == unknown[keys.key_letter(unknown)] == unknown[hash_key(unknown)]


def test_a_question_the_server_wrote_is_answered_with_its_own_key(keys: AnswerKeys) -> None:
    responder = R1Responder(R1Config(p_right=1.0, p_hedge=0.0, p_absent=0.0), keys)
    fmt = json_schema_format("expand_question", QUESTION_SCHEMA)
    for seed in range(20):
        body = {**cot_body(seeds("en")[1], seed, max_tokens=40000), "response_format": fmt}
        obj = json.loads(responder.compose(body).content)
        rec = {"question": obj["question"], "options": obj["options"], "language": "en"}
        reply = responder.compose(cot_body(rec, 0, "strike_direct", max_tokens=40000))
        assert extract_answer(reply.content, obj["options"]).letter == obj["answer"]


def test_the_answer_format_the_prompt_asks_for() -> None:
    responder = R1Responder(R1Config(p_right=1.0, p_hedge=0.0, p_absent=0.0), AnswerKeys())
    body = {"messages": [{"role": "user", "content": 'Say "The answer is (X)".\nA. one\nB. two\nC. three'}],
            "max_tokens": 9000}
    assert responder.compose(body).content.rstrip().splitlines()[-1].startswith("The answer is (")


# ---- JSON ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_json_requests_get_valid_varied_instances(keys: AnswerKeys, lang: str) -> None:
    responder = R1Responder(R1Config(), keys)
    schemas = {"facts": facts_schema(8), "question": QUESTION_SCHEMA,
               "review": review_schema(list("ABCD"), "B", ReviewConfig())}
    rec = seeds(lang)[2]
    for name, schema in schemas.items():
        seen = set()
        for seed in range(30):
            body = {**cot_body(rec, seed), "response_format": json_schema_format(name, schema)}
            reply = responder.compose(body)
            obj = json.loads(reply.content)
            assert schema_errors(obj, schema) == []
            seen.add(reply.content)
            assert reply.completion_tokens == approx_tokens(reply.reasoning_content) + approx_tokens(reply.content)
            if name == "question":
                assert structure_problem(obj, lang) == ("", "")
        assert len(seen) == 30  # the seed varies the instance
    approvals = [json.loads(responder.compose({**cot_body(rec, s), "response_format": json_schema_format(
        "review", schemas["review"])}).content)["approve"] for s in range(60)]
    assert 10 < sum(approvals) < 50  # both branches of the anyOf are drawn


def test_structured_outputs_field_is_honoured(keys: AnswerKeys) -> None:
    schema = {"type": "object", "properties": {"specialty": {"type": "string", "enum": ["cardiology", "other"]}},
              "required": ["specialty"]}
    reply = R1Responder(R1Config(), keys).compose({**cot_body(seeds("en")[0], 0), "structured_outputs":
                                                   {"json": schema}})
    assert json.loads(reply.content)["specialty"] in ("cardiology", "other")


# ---- truncation, reasoning fields ---------------------------------------------------------------------
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning", "inline"])
def test_thinking_beyond_max_tokens_is_cut_with_finish_reason_length(keys: AnswerKeys, field: str) -> None:
    responder = R1Responder(R1Config(reasoning_field=field, think=ThinkLengths(median=3000, sigma=0.01),
                                     p_right=1.0, p_hedge=0.0, p_absent=0.0), keys)
    reply = responder.compose(cot_body(seeds("en")[0], 0, max_tokens=1000))
    assert reply.finish_reason == "length" and reply.completion_tokens == 1000
    if field == "inline":
        assert reply.content.startswith("<think>") and "</think>" not in reply.content
        assert approx_tokens(reply.content) == 1000
    else:
        assert reply.content is None and approx_tokens(getattr(reply, field)) == 1000
    fits = responder.compose(cot_body(seeds("en")[0], 0, max_tokens=5000))
    assert fits.finish_reason == "stop"
    content, reasoning = split_reasoning({"content": fits.content, field: getattr(fits, field, None)})
    assert reasoning and approx_tokens(reasoning) >= 2900 and "</think>" not in content
    assert extract_answer(content, seeds("en")[0]["options"]).letter == seeds("en")[0]["answer"]


# ---- the replica --------------------------------------------------------------------------------------
async def test_replica_shares_its_rate_like_continuous_batching() -> None:
    replica = Replica(tok_s=1000, max_concurrency=8, time_scale=20)  # 20,000 tokens per wall second
    start = time.monotonic()
    await replica.generate(2000)
    single = time.monotonic() - start
    start = time.monotonic()
    await asyncio.gather(*(replica.generate(2000) for _ in range(4)))
    four = time.monotonic() - start
    await replica.close()
    assert 0.09 <= single <= 0.16
    assert 0.38 <= four <= 0.5  # 8,000 tokens at 20,000 tok/s: the four share one rate
    assert replica.tokens_done == 10000 and replica.max_active == 4
    assert abs(replica.decoded - 10000) < 50


async def test_replica_sequence_cap_and_concurrency_queue() -> None:
    capped = Replica(tok_s=1000, max_concurrency=2, seq_tok_s=250, time_scale=20)  # 5,000 tok/s per sequence
    start = time.monotonic()
    await capped.generate(500)
    single = time.monotonic() - start
    start = time.monotonic()
    await asyncio.gather(*(capped.generate(1000) for _ in range(6)))  # 2 at a time, 0.2 s per pair
    queued = time.monotonic() - start
    await capped.close()
    assert 0.09 <= single <= 0.15
    assert capped.max_active == 2
    assert 0.58 <= queued <= 0.75


async def test_cancelled_requests_free_the_replica_and_count_as_lost() -> None:
    replica = Replica(tok_s=1000, max_concurrency=4, time_scale=10)  # 10,000 tok/s
    task = asyncio.ensure_future(replica.generate(100000))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    start = time.monotonic()
    await replica.generate(1000)
    await replica.close()
    assert time.monotonic() - start < 0.15
    assert 800 <= replica.tokens_lost <= 1300 and replica.tokens_done == 1000


# ---- faults and the fleet -----------------------------------------------------------------------------
def test_fault_rates() -> None:
    responder = R1Responder(R1Config(p_503=0.1, p_hang=0.05, fault_seed=3), AnswerKeys())
    faults = [responder.fault() for _ in range(4000)]
    assert abs(responder.faults["503"] / 4000 - 0.1) < 0.015
    assert abs(responder.faults["hang"] / 4000 - 0.05) < 0.012
    assert sum(f is None for f in faults) == 4000 - responder.faults["503"] - responder.faults["hang"]


def llm_cfg(urls: list[str], **kw: Any) -> LLMConfig:
    base: dict[str, Any] = dict(model="r1", concurrency=16, timeout_s=2.0, connect_timeout_s=0.5, max_retries=6,
                                backoff_base_s=0.02, backoff_max_s=0.2)
    return LLMConfig(endpoints=urls, **{**base, **kw})


def chat(rec: dict[str, Any], seed: int, max_tokens: int = 8192) -> ChatRequest:
    body = cot_body(rec, seed, max_tokens=max_tokens)
    return ChatRequest(messages=body["messages"], model="r1", params={"max_tokens": max_tokens, "seed": seed},
                       prompt_version="cot@1", stage="generate", item_id=rec["id"])


async def test_client_reads_r1_replies_end_to_end_with_503s(keys: AnswerKeys) -> None:
    cfg = R1Config(time_scale=200, p_503=0.2, think=ThinkLengths(median=500))
    async with RehearsalFleet(cfg, 2, keys) as fleet, LLMClient(llm_cfg(fleet.urls)) as client:
        results = await asyncio.gather(*(client.chat(chat(rec, s)) for rec in seeds("en")[:5] for s in range(8)))
        stats = fleet.stats()
    assert all(r.reasoning and r.finish_reason == "stop" for r in results)
    assert sum(r.completion_tokens for r in results) == stats["tokens_done"]
    assert stats["faults"]["503"] >= 3 and client.stats.retries == stats["faults"]["503"]
    assert stats["requests"] == len(results) + stats["faults"]["503"]
    assert all(p["requests"] > 0 for p in stats["replicas"])


async def test_a_hang_beyond_the_client_timeout_is_retried(keys: AnswerKeys) -> None:
    cfg = R1Config(time_scale=500, p_hang=1.0, hang_s=5.0, think=ThinkLengths(median=300))
    async with RehearsalFleet(cfg, 1, keys) as fleet:
        responder = fleet.responders[0]
        async with LLMClient(llm_cfg(fleet.urls, timeout_s=0.3, max_retries=2)) as client:
            task = asyncio.ensure_future(client.chat(chat(seeds("en")[0], 0)))
            await asyncio.sleep(0.45)  # the first attempt has timed out, the second hangs too
            responder.cfg.p_hang = 0.0
            result = await task
    assert result.reasoning and responder.faults["hang"] == 2 and client.stats.retries == 2


async def test_a_replica_dies_mid_run_and_comes_back(keys: AnswerKeys) -> None:
    cfg = R1Config(time_scale=10, think=ThinkLengths(median=2000, sigma=0.1))  # 64k tokens at 50k tok/s
    async with RehearsalFleet(cfg, 2, keys, deaths=[Death(0, 0.15, 0.4)]) as fleet:
        dead_url = fleet.urls[0]
        async with LLMClient(llm_cfg(fleet.urls)) as client:
            task = asyncio.gather(*(client.chat(chat(rec, s)) for rec in seeds("en")[:8] for s in range(4)))
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await session.get(dead_url.rsplit("/v1", 1)[0] + "/health")
            results = await task
            await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - fleet.started_at)))
            async with aiohttp.ClientSession() as session, session.get(dead_url + "/models") as resp:
                assert resp.status == 200
        stats = fleet.stats()
    assert len(results) == 32 and all(r.reasoning for r in results)
    assert [e[1:] for e in stats["events"]] == [(0, "died"), (0, "back")]
    assert 0.14 <= stats["events"][0][0] <= 0.25 and 0.5 <= stats["events"][1][0] <= 0.7
    assert stats["replicas"][0]["tokens_lost"] > 0  # the requests in flight at the death were lost ...
    assert sum(r.completion_tokens for r in results) == stats["tokens_done"]  # ... and redone elsewhere


def test_command_line_serves_r1_replicas(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "medcot.scripted_server", "--mode", "r1", "--replicas", "2", "--time-scale", "1000",
           "--think-median", "200", "--keys", str(SEEDS[0])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[1] for _ in range(2)]
        rec = seeds("en")[0]

        async def ask(url: str) -> dict[str, Any]:
            async with aiohttp.ClientSession() as session, \
                    session.post(url + "/chat/completions", json=cot_body(rec, 1)) as resp:
                return await resp.json()

        for url in urls:
            body = asyncio.run(ask(url))
            message = body["choices"][0]["message"]
            assert message["reasoning_content"] and body["usage"]["completion_tokens"] == \
                approx_tokens(message["reasoning_content"]) + approx_tokens(message["content"])
            assert body["usage"]["prompt_tokens"] == approx_tokens("\n".join(m["content"]
                                                                             for m in cot_body(rec, 1)["messages"]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_truncated_rehearsal_reply_is_never_a_strike(keys: AnswerKeys, tmp_path: Path) -> None:
    """Five-strike against a rehearsal replica that thinks past every budget: each attempt is cut (and retried
    with twice the budget, cut again), stored as truncated, never a strike: the item is held, not escalated."""
    from curation.strikes import run_strikes
    from medcot.config import StrikesConfig
    from medcot.records import Item
    from medcot.store import Store
    store = Store(str(tmp_path / "s.db"))
    rec = seeds("en")[0]
    store.add_items([Item(id=rec["id"], family_id=rec["id"], language="en", question=rec["question"],
                          options=rec["options"], answer=rec["answer"], stage="reviewed")])
    cfg = R1Config(time_scale=500, think=ThinkLengths(median=5000, sigma=0.01, minimum=4000))
    strikes = StrikesConfig(eligible_stages=["reviewed"])
    strikes.sampling.max_tokens = 300  # thinking of ~5,000 tokens never fits, even at 600
    async with RehearsalFleet(cfg, 1, keys) as fleet, LLMClient(llm_cfg(fleet.urls), store) as client:
        summary = await run_strikes(store, client, strikes, "r1", progress=False)
    attempts = store.attempts(0)
    assert attempts and all(a.matched_by == "none:truncated" and a.letter is None and not a.correct
                            for a in attempts)
    assert summary.escalated == 0 and summary.held_truncated == 1
    assert store.items()[0].stage == "reviewed"  # held: neither passed nor sent to the panel
    store.close()

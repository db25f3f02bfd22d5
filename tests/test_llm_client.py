"""LLMClient against the scripted OpenAI-compatible server: accounting, reasoning, retries, failover,
load balancing, bounded concurrency, structured outputs and the persistent response cache."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from medcot.config import ConfigError, LLMConfig
from medcot.llm import LLMClient, LLMError, LLMUnavailable, cache_key, json_schema_format, split_reasoning
from medcot.records import ChatRequest
from medcot.scripted_server import Drop, Hang, Malformed, Reply, ScriptedServer, Status
from medcot.server import free_port
from medcot.store import Store

MODEL = "scripted-model"


def cfg(*endpoints: str, **kw: Any) -> LLMConfig:
    base: dict[str, Any] = dict(model=MODEL, concurrency=8, timeout_s=2.0, connect_timeout_s=1.0, max_retries=3,
                                backoff_base_s=0.01, backoff_max_s=1.0)
    base.update(kw)
    return LLMConfig(endpoints=list(endpoints), **base)


def req(text: str = "Which option is right?", **kw: Any) -> ChatRequest:
    base: dict[str, Any] = dict(model=MODEL, params={"temperature": 0.0, "max_tokens": 32, "seed": 0},
                                prompt_version="test@1", stage="test", item_id="item-1")
    base.update(kw)
    return ChatRequest(messages=[{"role": "user", "content": text}], **base)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "calls.db"))
    yield s
    s.close()


# ---- success, accounting, reasoning -------------------------------------------------------------------
async def test_success_tokens_and_latency(server: ScriptedServer) -> None:
    server.push(Reply("Answer: B", prompt_tokens=11, completion_tokens=5, finish_reason="length", delay_s=0.05),
                Reply("Answer: C", prompt_tokens=13, completion_tokens=3))
    async with LLMClient(cfg(server.base_url)) as client:
        first = await client.chat(req("q1"))
        second = await client.chat(req("q2", stage="other"))
    assert (first.content, first.finish_reason, first.prompt_tokens, first.completion_tokens) == \
        ("Answer: B", "length", 11, 5)
    assert first.latency_s >= 0.05 and second.latency_s > 0 and not first.cached
    assert first.endpoint == server.base_url and first.cache_key == cache_key(req("q1"))
    stats = client.stats.as_dict()
    assert (stats["requests"], stats["prompt_tokens"], stats["completion_tokens"], stats["retries"]) == (2, 24, 8, 0)
    assert stats["latency_s"] >= 0.05
    assert stats["by_stage"]["test"]["completion_tokens"] == 5 and stats["by_stage"]["other"]["requests"] == 1
    assert server.count == 1 + 1 and server.by_path["/v1/chat/completions"] == 2
    body = server.bodies[0]
    assert body["model"] == MODEL and body["messages"] == [{"role": "user", "content": "q1"}]
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.0, 32, 0)


@pytest.mark.parametrize("reply, content, reasoning", [
    (Reply("B", reasoning="vllm thinks"), "B", "vllm thinks"),
    (Reply("B", reasoning_content="deepseek thinks"), "B", "deepseek thinks"),
    (Reply("<think>\ninline thinks\n</think>\n\nThe answer is B"), "The answer is B", "inline thinks"),
    (Reply("The answer is B"), "The answer is B", None),
])
async def test_reasoning_from_every_place(server: ScriptedServer, reply: Reply, content: str,
                                         reasoning: str | None) -> None:
    server.push(reply)
    async with LLMClient(cfg(server.base_url)) as client:
        result = await client.chat(req())
    assert (result.content, result.reasoning) == (content, reasoning)


async def test_system_prompt_merge_sends_no_system_message(server: ScriptedServer, store: Store) -> None:
    """llm.system_prompt=merge (reasoning models): the instructions arrive in the first user turn, and what
    is cached is what was sent; keep (the default) sends the system message as it is."""
    messages = [{"role": "system", "content": "You are a careful examiner."},
                {"role": "user", "content": "Which option is right?"}]
    r = ChatRequest(messages=messages, model=MODEL, params={"max_tokens": 8})
    async with LLMClient(cfg(server.base_url, system_prompt="merge"), store) as client:
        await client.chat(r)
        again = await client.chat(r)
    assert server.bodies[0]["messages"] == [{"role": "user",
                                             "content": "You are a careful examiner.\n\nWhich option is right?"}]
    assert again.cached and server.count == 1 and r.messages[0]["role"] == "system"  # the caller's request untouched
    async with LLMClient(cfg(server.base_url), store) as client:
        await client.chat(r)
    assert server.bodies[1]["messages"] == messages
    with pytest.raises(ConfigError, match="system_prompt"):
        cfg(server.base_url, system_prompt="drop")


def test_split_reasoning_prefers_server_fields() -> None:
    assert split_reasoning({"content": "<think>x</think>y", "reasoning_content": "r"}) == ("<think>x</think>y", "r")
    assert split_reasoning({"content": None}) == ("", None)


# ---- retries ------------------------------------------------------------------------------------------
async def test_5xx_then_success_with_backoff(server: ScriptedServer) -> None:
    server.push(Status(500), Status(503), Status(502), Reply("finally"))
    async with LLMClient(cfg(server.base_url, backoff_base_s=0.05, max_retries=3)) as client:
        start = time.perf_counter()
        result = await client.chat(req())
        elapsed = time.perf_counter() - start
    assert result.content == "finally" and server.count == 4 and client.stats.retries == 3
    assert elapsed >= 0.5 * (0.05 + 0.1 + 0.2)  # exponential backoff with jitter in [0.5, 1]


async def test_429_retry_after_is_honoured(server: ScriptedServer) -> None:
    server.push(Status(429, retry_after=0.2), Reply("after the wait"))
    async with LLMClient(cfg(server.base_url, backoff_base_s=0.001)) as client:
        start = time.perf_counter()
        result = await client.chat(req())
        elapsed = time.perf_counter() - start
    assert result.content == "after the wait" and server.count == 2
    assert elapsed >= 0.2


async def test_timeout_is_retried(server: ScriptedServer) -> None:
    server.push(Hang(10), Reply("second try"))
    async with LLMClient(cfg(server.base_url, timeout_s=0.3)) as client:
        start = time.perf_counter()
        result = await client.chat(req())
        elapsed = time.perf_counter() - start
    assert result.content == "second try" and server.count == 2 and client.stats.retries == 1
    assert 0.3 <= elapsed < 3


@pytest.mark.parametrize("failure", [Malformed(), Drop(), {"object": "error", "message": "no choices"}],
                         ids=["malformed-json", "connection-drop", "json-without-choices"])
async def test_malformed_and_dropped_replies_are_retried(server: ScriptedServer, failure: Any) -> None:
    server.push(failure, Reply("recovered"))
    async with LLMClient(cfg(server.base_url)) as client:
        result = await client.chat(req())
    assert result.content == "recovered" and server.count == 2 and client.stats.retries == 1


async def test_retries_exhausted_raise_unavailable(server: ScriptedServer, store: Store) -> None:
    server.push(*[Status(503)] * 3)
    async with LLMClient(cfg(server.base_url, max_retries=2), store) as client:
        with pytest.raises(LLMUnavailable) as info:
            await client.chat(req(item_id="item-42", stage="generate"))
    message = str(info.value)
    assert "after 3 attempts" in message and "HTTP 503" in message
    assert "generate" in message and "item-42" in message and server.base_url in message
    assert server.count == 3 and client.stats.failures == 1
    assert store.call_totals()["calls"] == 0  # nothing cached for a failure


async def test_400_is_not_retried(server: ScriptedServer) -> None:
    server.push(Status(400, body='{"error": {"message": "max_tokens is too large"}}'))
    async with LLMClient(cfg(server.base_url)) as client:
        with pytest.raises(LLMError) as info:
            await client.chat(req())
    assert not isinstance(info.value, LLMUnavailable)
    assert "HTTP 400" in str(info.value) and "max_tokens is too large" in str(info.value)
    assert server.count == 1 and client.stats.retries == 0


# ---- endpoints and concurrency ------------------------------------------------------------------------
async def test_failover_from_a_dead_endpoint(server: ScriptedServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with LLMClient(cfg(dead, server.base_url, concurrency=4)) as client:
        results = await asyncio.gather(*(client.chat(req(f"q{i}")) for i in range(20)))
    assert all(r.content and r.endpoint == server.base_url for r in results)
    assert server.count == 20 and client.stats.requests == 20


@pytest.mark.parametrize("strategy", ["least-busy", "round-robin"])
async def test_load_is_spread_over_two_endpoints(strategy: str) -> None:
    async with ScriptedServer(lambda body: Reply(delay_s=0.02)) as a, \
            ScriptedServer(lambda body: Reply(delay_s=0.02)) as b:
        async with LLMClient(cfg(a.base_url, b.base_url, concurrency=8, strategy=strategy)) as client:
            results = await asyncio.gather(*(client.chat(req(f"q{i}")) for i in range(40)))
    assert len(results) == 40 and a.count + b.count == 40
    assert 15 <= a.count <= 25 and 15 <= b.count <= 25, (a.count, b.count)


async def test_round_robin_alternates_sequential_requests() -> None:
    async with ScriptedServer() as a, ScriptedServer() as b:
        async with LLMClient(cfg(a.base_url, b.base_url, strategy="round-robin")) as client:
            endpoints = [(await client.chat(req(f"q{i}"))).endpoint for i in range(6)]
    assert a.count == b.count == 3
    assert all(endpoints[i] != endpoints[i + 1] for i in range(5))


async def test_concurrency_is_bounded(server: ScriptedServer) -> None:
    server.responder = lambda body: Reply(delay_s=0.03)
    async with LLMClient(cfg(server.base_url, concurrency=3)) as client:
        await asyncio.gather(*(client.chat(req(f"q{i}")) for i in range(24)))
    assert server.count == 24 and server.max_in_flight == 3


async def test_response_format_is_passed_through(server: ScriptedServer) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": list("ABCD")}},
              "required": ["answer"]}
    fmt = json_schema_format("answer", schema)
    server.push(Reply('{"answer": "C"}'))
    async with LLMClient(cfg(server.base_url)) as client:
        result = await client.chat(req(response_format=fmt))
        await client.chat(req("no format"))
    assert result.content == '{"answer": "C"}'
    assert server.bodies[0]["response_format"] == fmt
    assert server.bodies[0]["response_format"]["json_schema"]["strict"] is True
    assert "response_format" not in server.bodies[1]


async def test_responder_scripts_answers_per_item(server: ScriptedServer) -> None:
    server.responder = lambda body: Reply("Answer: " + body["messages"][-1]["content"][-1])
    async with LLMClient(cfg(server.base_url)) as client:
        results = await asyncio.gather(*(client.chat(req(f"pick {x}")) for x in "ABCD"))
    assert [r.content for r in results] == ["Answer: A", "Answer: B", "Answer: C", "Answer: D"]


# ---- the persistent cache -----------------------------------------------------------------------------
async def test_rerun_makes_zero_requests(server: ScriptedServer, store: Store) -> None:
    server.responder = lambda body: Reply("answer to " + body["messages"][0]["content"],
                                          reasoning="because " + body["messages"][0]["content"])
    requests = [req(f"question {i}") for i in range(6)]
    async with LLMClient(cfg(server.base_url), store) as client:
        first = await asyncio.gather(*(client.chat(r) for r in requests))
    assert server.count == 6 and not any(r.cached for r in first)
    server.reset()
    async with LLMClient(cfg(server.base_url), store) as client:
        second = await asyncio.gather(*(client.chat(r) for r in requests))
        assert client.stats.cache_hits == 6 and client.stats.requests == 0
    assert server.count == 0
    assert all(s.cached for s in second)
    assert [(r.content, r.reasoning, r.call_id, r.prompt_tokens, r.completion_tokens) for r in first] == \
        [(r.content, r.reasoning, r.call_id, r.prompt_tokens, r.completion_tokens) for r in second]

    async with LLMClient(cfg(server.base_url), store) as client:  # any change is a miss
        params = dict(requests[0].params, seed=1)
        await client.chat(req("question 0", params=params))
        await client.chat(req("question 0", prompt_version="test@2"))
        await client.chat(req("question 0 (edited)"))
        await client.chat(req("question 0", model="another-model"))
        await client.chat(req("question 0"), use_cache=False)
    assert server.count == 5
    assert store.call_totals()["calls"] == 6 + 4  # use_cache=False refetches, the row stays unique


async def test_concurrent_duplicates_make_one_row(server: ScriptedServer, store: Store) -> None:
    server.responder = lambda body: Reply(delay_s=0.02)
    async with LLMClient(cfg(server.base_url), store) as client:
        results = await asyncio.gather(*(client.chat(req("same question")) for _ in range(5)))
    assert store.call_totals()["calls"] == 1
    assert len({r.call_id for r in results}) == 1 and results[0].call_id is not None


async def test_calls_are_recorded(server: ScriptedServer, store: Store) -> None:
    fmt = json_schema_format("a", {"type": "object"})
    server.push(Status(500), Reply('{"a": 1}', reasoning_content="thought", prompt_tokens=21, completion_tokens=4))
    request = req("record me", response_format=fmt, item_id="item-7", stage="generate")
    async with LLMClient(cfg(server.base_url), store) as client:
        result = await client.chat(request)
    found = store.get_call(result.cache_key)
    assert found is not None
    call_id, call = found
    assert call_id == result.call_id
    assert call.messages == request.messages and call.params == request.params
    assert (call.prompt_version, call.stage, call.item_id, call.model) == ("test@1", "generate", "item-7", MODEL)
    assert call.response_format == fmt and call.endpoint == server.base_url
    assert (call.content, call.reasoning, call.finish_reason) == ('{"a": 1}', "thought", "stop")
    assert (call.prompt_tokens, call.completion_tokens, call.retries) == (21, 4, 1)
    assert call.latency_s == pytest.approx(result.latency_s)
    assert store.call_totals() == {"calls": 1, "prompt_tokens": 21, "completion_tokens": 4}


# ---- the server as a separate process -----------------------------------------------------------------
async def test_scripted_server_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "medcot.scripted_server", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.split()[1]
        async with LLMClient(cfg(base_url)) as client:
            results = await asyncio.gather(*(client.chat(req(f"q{i}")) for i in range(10)))
        assert all(r.content and r.completion_tokens > 0 for r in results)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0

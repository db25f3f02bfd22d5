"""JSON stages behind a reasoning model (DeepSeek-R1 with or without vLLM's --reasoning-parser): the JSON must
be read whether the server returns the thinking apart (`reasoning_content` / `reasoning`) with the JSON in
`content`, or the JSON follows the thinking inside `content` (with or without the opening <think> tag)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from curation.expand import parse_json_object
from curation.review.judge import Judge
from curation.specialty import load_taxonomy, parse_specialty
from eval.judge import parse_judge
from eval.records import RUBRIC_DIMENSIONS
from medcot.config import LLMConfig, ReviewConfig
from medcot.llm import LLMClient
from medcot.records import ChatRequest, Item
from medcot.scripted_server import Reply, ScriptedServer

THINKING = "Okay, let me think. The patient is 65 and has chest pain... Option C fits best.\n" * 20


def shapes(payload: dict) -> list[Reply]:
    """The same JSON, three ways a reasoning server can return it."""
    text = json.dumps(payload, ensure_ascii=False)
    return [Reply(text, reasoning_content=THINKING),                 # --reasoning-parser (DeepSeek API field)
            Reply(text, reasoning=THINKING),                         # --reasoning-parser (newer vLLM field)
            Reply(f"<think>\n{THINKING}</think>\n\n{text}"),          # no parser: thinking inside content
            Reply(f"{THINKING}</think>\n\n```json\n{text}\n```")]    # the template opened <think>; fenced JSON


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as srv:
        yield srv


async def _replies(server: ScriptedServer, replies: list[Reply]) -> list:
    server.push(*replies)
    cfg = LLMConfig(endpoints=[server.base_url], model="r1", max_retries=0, timeout_s=5.0)
    async with LLMClient(cfg) as client:
        return [await client.chat(ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], model="r1"))
                for i in range(len(replies))]


async def test_expansion_and_facts_json(server: ScriptedServer) -> None:
    payload = {"question": "Which drug?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer": "C"}
    for res in await _replies(server, shapes(payload)):
        assert parse_json_object(res) == (payload, "") and res.reasoning.startswith("Okay, let me think")


async def test_specialty_json(server: ScriptedServer) -> None:
    tax = load_taxonomy()
    label = sorted(tax.labels)[0]
    for res in await _replies(server, shapes({"specialty": label})[:3]):
        assert parse_specialty(res.content, tax) == (label, "")


async def test_eval_judge_json(server: ScriptedServer) -> None:
    payload = {**dict.fromkeys(RUBRIC_DIMENSIONS, 2), "rationale": "sound"}
    for res in await _replies(server, shapes(payload)[:3]):
        scores, rationale, error = parse_judge(res.content)
        assert error is None and scores == dict.fromkeys(RUBRIC_DIMENSIONS, 2) and rationale == "sound"


async def test_review_judge_json(server: ScriptedServer) -> None:
    item = Item(id="i1", family_id="i1", language="en", question="Which drug fits?", answer="C",
                options={"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"})
    cfg = ReviewConfig()
    verdict = {"approve": True, "relevance": True, "correctness": True, "sufficiency": True, "answer": "C",
               **{d: 2 for d in RUBRIC_DIMENSIONS}, "comment": "ok", "difficulty": "easy",
               "cognitive_level": "recall"}
    for n, reply in enumerate(shapes(verdict)[:3], start=1):
        server.push(reply)
        async with LLMClient(LLMConfig(endpoints=[server.base_url], model="r1", max_retries=0)) as client:  # no cache
            result = await Judge(client, cfg, "r1").review(item, "CoT text", 0, revision="r")
        assert server.count == n and result.form is not None, result.reason
        assert result.form.answer == "C" and result.form.approve

"""Benchmark: five-strike waves against the zero-latency scripted server, with known per-item patterns.

    python benchmarks/five_strike.py [--quick] [--items N] [--concurrency 64] [--seed 0]

Prints ONE JSON line: `calls` (HTTP requests the scripted server received), `min_calls` (sum over items of
the attempts up to the first correct one, capped at 5: the least any strategy that stops at the first
success can pay), `attempts`, `token_ratio_vs_always5` (tokens of the stored attempts / the always-5
estimate of `curation.strikes.strikes_stats`), `true_ratio_vs_always5` (the same against the exact token
count of all five attempts, which the scripted server makes computable), escalation rate and wall time.

Each item gets a pattern of outcomes per attempt ("right", "wrong", "none" = an unparseable reply),
drawn from a fixed distribution by a seeded RNG: first success at attempt 1..5 or never, with wrong and
unparseable answers before it. The scripted server (in-process, aiohttp) answers every request by
reading the item marker, the attempt number (sampling seed = base + attempt) and the shown options
(the permutation is applied by the stage and must be undone by it) from the request itself.
Default N = 1,000 items; --quick = 200 items (a few seconds).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from curation.strikes import run_strikes, strikes_stats  # noqa: E402
from medcot.config import LLMConfig, StrikesConfig  # noqa: E402
from medcot.llm import LLMClient  # noqa: E402
from medcot.records import Item  # noqa: E402
from medcot.scripted_server import Reply, ScriptedServer  # noqa: E402
from medcot.store import Store  # noqa: E402

_MARK = re.compile(r"\(item ([^)\s]+)\)")
_OPTION = re.compile(r"^([A-E])\. (.*)$", re.M)
OUTCOMES = ("right", "wrong", "none")


def make_pattern(rng: random.Random) -> list[str]:
    """First success at attempt 1..5 (weights 40/20/12/8/5 %) or never (15 %); failures before it are
    wrong answers, or unparseable replies one time in four."""
    first = rng.choices([1, 2, 3, 4, 5, None], weights=[40, 20, 12, 8, 5, 15])[0]
    fails = (first - 1) if first is not None else 5
    pattern = ["none" if rng.random() < 0.25 else "wrong" for _ in range(fails)]
    return pattern + (["right"] if first is not None else [])


def min_calls(patterns: dict[str, list[str]], max_attempts: int = 5) -> int:
    return sum(min(p.index("right") + 1 if "right" in p else max_attempts, max_attempts) for p in patterns.values())


def make_items(n: int, seed: int = 0, language: str = "en") -> tuple[list[Item], dict[str, list[str]]]:
    rng = random.Random(seed)
    items, patterns = [], {}
    for i in range(n):
        iid = f"bench-{i:05d}"
        options = {L: f"option {L.lower()} of {iid}" for L in "ABCD" + ("E" if i % 3 == 0 else "")}
        items.append(Item(id=iid, family_id=iid, language=language, options=options, answer=rng.choice(sorted(options)),
                          question=f"(item {iid}) Which option is correct for case {i}?", stage="generated"))
        patterns[iid] = make_pattern(rng)
    return items, patterns


class PatternResponder:
    """Answers five-strike requests by each item's pattern (attempts beyond the pattern: wrong)."""

    def __init__(self, items: list[Item], patterns: dict[str, list[str]], base_seed: int = 0):
        self.items = {it.id: it for it in items}
        self.patterns = patterns
        self.base_seed = base_seed
        self.completion_tokens: dict[tuple[str, int], int] = {}

    def outcome(self, item_id: str, attempt_no: int) -> str:
        pattern = self.patterns[item_id]
        return pattern[attempt_no - 1] if attempt_no <= len(pattern) else "wrong"

    def tokens(self, item_id: str, attempt_no: int) -> tuple[int, int]:
        """Deterministic (prompt, completion) tokens of an attempt: the true always-5 cost is computable."""
        h = sum(map(ord, item_id)) * 31 + attempt_no * 17
        return 60 + len(item_id), 20 + h % 80

    def __call__(self, body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        item = self.items[_MARK.search(text).group(1)]  # type: ignore[union-attr]
        attempt_no = int(body["seed"]) - self.base_seed
        shown = dict(_OPTION.findall(text))
        right = next(L for L, t in shown.items() if t.strip() == item.options[item.answer])
        outcome = self.outcome(item.id, attempt_no)
        if outcome == "right":
            content = f"The key finding points to option {right}.\nAnswer: {right}"
        elif outcome == "wrong":
            wrong = next(L for L in sorted(shown) if L != right)
            content = f"I would pick the other one.\nAnswer: {wrong}"
        else:
            content = "Both B and C seem plausible; I cannot decide."
        prompt_tokens, completion_tokens = self.tokens(item.id, attempt_no)
        return Reply(content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


async def bench(n: int, concurrency: int, seed: int) -> dict[str, Any]:
    items, patterns = make_items(n, seed)
    responder = PatternResponder(items, patterns)
    cfg = StrikesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "bench.db"))
        store.add_items(items)
        async with ScriptedServer(responder=responder, record_bodies=False) as srv:
            llm = LLMConfig(endpoints=[srv.base_url], model="scripted", concurrency=concurrency)
            start = time.perf_counter()
            async with LLMClient(llm, store) as client:
                summary = await run_strikes(store, client, cfg, "scripted", progress=False)
            seconds = time.perf_counter() - start
            calls = srv.count
        st = strikes_stats(store.attempts(cfg.round), cfg.max_attempts)
        store.close()
    true5 = sum(sum(responder.tokens(i, k)) for i in patterns for k in range(1, cfg.max_attempts + 1))
    return {"benchmark": "five_strike", "items": n, "calls": calls, "min_calls": min_calls(patterns, cfg.max_attempts),
            "attempts": st.attempts, "waves": summary.waves, "escalated": st.escalated,
            "escalation_rate": st.escalation_rate, "no_answer_attempts": st.no_answer_attempts,
            "tokens_spent": st.tokens_spent, "tokens_always5_estimate": st.tokens_always5_estimate,
            "token_ratio_vs_always5": st.token_ratio_vs_always5, "true_ratio_vs_always5": round(st.tokens_spent / true5, 4),
            "seconds": round(seconds, 3), "items_per_s": round(n / seconds, 1), "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 items")
    parser.add_argument("--items", type=int, default=None, help="number of items (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the pattern RNG")
    args = parser.parse_args()
    n = args.items or (200 if args.quick else 1000)
    result = asyncio.run(bench(n, args.concurrency, args.seed))
    print(json.dumps(result))
    if result["calls"] != result["min_calls"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

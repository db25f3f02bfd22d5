"""Benchmark: LLM client overhead (client + store vs raw aiohttp), and client vs raw httpx against vLLM.

    python benchmarks/llm_client.py [--quick] [--requests N] [--concurrency 64]
                                    [--vllm-url URL --vllm-model NAME | --with-vllm]

Prints ONE JSON line.
- overhead: the scripted server in echo mode (zero latency) runs in a SEPARATE process. N requests, each a
  cache miss (distinct messages), go through LLMClient with a Store (SQLite file in a temp dir, cache on:
  a lookup before and a persisted row after every request), driven by `concurrency` workers. The same N
  requests through a bare aiohttp loop (no store) are the reference.
- vllm_ratio: K short medical questions (max_tokens 64, temperature 0, concurrency 16) through LLMClient
  (a fresh store per round) vs a raw httpx AsyncClient; output tokens/s each, rounds alternate
  raw, client, raw, client (after one warm-up) and the best of each is kept; ratio = client / raw.
  The vLLM server comes from --vllm-url/--vllm-model (or MEDCOT_BENCH_VLLM_URL/MEDCOT_BENCH_VLLM_MODEL),
  or with --with-vllm the script starts the CPU vLLM server on $MEDCOT_CACHE/models/smollm2-135m-instruct.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medcot.config import LLMConfig, ServerConfig, default_cache_dir  # noqa: E402
from medcot.llm import LLMClient  # noqa: E402
from medcot.records import ChatRequest  # noqa: E402
from medcot.store import Store  # noqa: E402

QUESTIONS = [
    "What is the first-line drug for uncomplicated hypertension in a 50-year-old?",
    "Which electrolyte disturbance causes peaked T waves?",
    "What is the antidote for paracetamol overdose?",
    "Name the most common cause of community-acquired pneumonia.",
    "Which vitamin deficiency causes Wernicke encephalopathy?",
    "What is the treatment of anaphylaxis?",
    "Which organism causes Lyme disease?",
    "What is the normal range of serum sodium?",
    "What does a positive Babinski sign indicate?",
    "Which hormone is deficient in type 1 diabetes?",
    "What is the most common cause of upper GI bleeding?",
    "Which drug class is contraindicated in bilateral renal artery stenosis?",
    "What is the first step in managing a patient with chest pain?",
    "Name a classic sign of appendicitis on examination.",
    "What is the mechanism of action of aspirin?",
    "Which test confirms iron deficiency anaemia?",
    "What is the gold standard test for pulmonary embolism?",
    "Which nerve is damaged in wrist drop?",
    "What is the commonest thyroid cancer?",
    "Which antibiotic is used for MRSA infections?",
    "What causes the second heart sound?",
    "Which condition is associated with Reed-Sternberg cells?",
    "What is the target INR for a patient on warfarin with atrial fibrillation?",
    "Name one complication of untreated streptococcal pharyngitis.",
    "Which vaccine prevents cervical cancer?",
    "What is the Glasgow Coma Scale used for?",
    "What is the first-line treatment for status epilepticus?",
    "Which enzyme is raised in acute pancreatitis?",
    "What is the most common cause of death in diabetes?",
    "Which drug reverses heparin?",
    "What does HbA1c measure?",
    "Which cranial nerve controls lateral gaze?",
]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a careful medical expert."},
            {"role": "user", "content": f"Question {i}: which option is correct? A) a B) b C) c D) d"}]


# ---- overhead against the scripted echo server (separate process) ----------------------------------
def start_echo_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "medcot.scripted_server", "--port", "0", "--mode", "echo"],
                            stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"scripted server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def _drive(n: int, concurrency: int, one: Any) -> float:
    """Run one(i) for i in range(n) with `concurrency` workers; seconds elapsed."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def raw_aiohttp(base_url: str, n: int, concurrency: int, offset: int) -> float:
    url = base_url + "/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i: int) -> None:
            async with session.post(url, json={"model": "echo", "messages": _messages(offset + i)}) as resp:
                data = await resp.json()
                assert data["choices"][0]["message"]["content"]

        await _drive(min(200, n), concurrency, lambda i: one(-1 - i))  # warm-up: open connections
        return await _drive(n, concurrency, one)


async def client_with_store(base_url: str, n: int, concurrency: int, db: Path, offset: int) -> float:
    store = Store(str(db))
    cfg = LLMConfig(endpoints=[base_url], model="echo", concurrency=concurrency, timeout_s=60, max_retries=2)
    try:
        async with LLMClient(cfg, store) as client:
            async def one(i: int) -> None:
                result = await client.chat(ChatRequest(messages=_messages(offset + i), model="echo",
                                                       params={"temperature": 0.0, "max_tokens": 16},
                                                       prompt_version="bench@1", stage="bench"))
                assert not result.cached and result.call_id is not None

            await _drive(min(200, n), concurrency, lambda i: one(-1 - i))
            seconds = await _drive(n, concurrency, one)
            assert client.stats.cache_hits == 0
        totals = store.call_totals()
        assert totals["calls"] == n + min(200, n), totals
        return seconds
    finally:
        store.close()


# ---- client vs raw httpx against vLLM ---------------------------------------------------------------
def _vllm_messages(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q + " Answer in one or two sentences."}]


async def vllm_raw(url: str, model: str, prompts: list[str], concurrency: int) -> tuple[float, int]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as http:
        async def one(q: str) -> int:
            async with sem:
                r = await http.post(url.rstrip("/") + "/chat/completions", json={
                    "model": model, "messages": _vllm_messages(q), "max_tokens": 64, "temperature": 0.0})
                r.raise_for_status()
                return int(r.json()["usage"]["completion_tokens"])

        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(q) for q in prompts)))
        return time.perf_counter() - start, tokens


async def vllm_client(url: str, model: str, prompts: list[str], concurrency: int, db: Path) -> tuple[float, int]:
    store = Store(str(db))  # a fresh store: every request is a miss and is persisted
    cfg = LLMConfig(endpoints=[url], model=model, concurrency=concurrency, timeout_s=600)
    try:
        async with LLMClient(cfg, store) as client:
            start = time.perf_counter()
            results = await asyncio.gather(*(client.chat(ChatRequest(
                messages=_vllm_messages(q), model=model, params={"max_tokens": 64, "temperature": 0.0},
                prompt_version="bench@1", stage="bench")) for q in prompts))
            seconds = time.perf_counter() - start
        assert not any(r.cached for r in results)
        return seconds, sum(r.completion_tokens for r in results)
    finally:
        store.close()


async def vllm_compare(url: str, model: str, k: int, concurrency: int, tmp: Path) -> dict[str, float]:
    prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(k)]
    await vllm_raw(url, model, prompts, concurrency)  # warm-up (prefix cache, graphs, connections)
    raw_best = client_best = 0.0
    for r in range(2):
        s, t = await vllm_raw(url, model, prompts, concurrency)
        raw_best = max(raw_best, t / s)
        s, t = await vllm_client(url, model, prompts, concurrency, tmp / f"vllm-{r}.db")
        client_best = max(client_best, t / s)
    return {"vllm_client_tok_s": round(client_best, 1), "vllm_raw_tok_s": round(raw_best, 1),
            "vllm_ratio": round(client_best / raw_best, 3)}


def start_vllm(tmp: Path) -> Any:
    from medcot.server import CPU_ENV, CPU_EXTRA_ARGS, VLLMServer

    model = Path(default_cache_dir()) / "models" / "smollm2-135m-instruct"
    cfg = ServerConfig(model=str(model), served_model_name="smollm2-135m-instruct", host="127.0.0.1", port=0,
                       max_model_len=2048, dtype="bfloat16", extra_args=list(CPU_EXTRA_ARGS),
                       env=dict(CPU_ENV), startup_timeout_s=600.0)
    server = VLLMServer(cfg, log_path=tmp / "vllm.log")
    server.start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3000 requests (< 40 s)")
    ap.add_argument("--requests", type=int, default=None, help="default 20000 (3000 with --quick)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--vllm-url", default=os.environ.get("MEDCOT_BENCH_VLLM_URL"))
    ap.add_argument("--vllm-model", default=os.environ.get("MEDCOT_BENCH_VLLM_MODEL"))
    ap.add_argument("--with-vllm", action="store_true", help="start the CPU vLLM server (SmolLM2) ourselves")
    ap.add_argument("--vllm-prompts", type=int, default=32)
    ap.add_argument("--vllm-concurrency", type=int, default=16)
    args = ap.parse_args()
    n = args.requests or (3000 if args.quick else 20000)
    if args.vllm_url and not args.vllm_model:
        ap.error("--vllm-model (or MEDCOT_BENCH_VLLM_MODEL) is required with a vLLM URL")

    out: dict[str, Any] = {"benchmark": "llm_client", "requests": n, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="medcot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        proc, base_url = start_echo_server()
        try:
            raw_s = asyncio.run(raw_aiohttp(base_url, n, args.concurrency, offset=0))
            client_s = asyncio.run(client_with_store(base_url, n, args.concurrency, tmp / "bench.db", offset=0))
        finally:
            proc.terminate()
            proc.wait(10)
        out.update(overhead_requests_per_s=round(n / client_s, 1), raw_aiohttp_requests_per_s=round(n / raw_s, 1),
                   seconds=round(client_s, 3), raw_seconds=round(raw_s, 3))

        vllm: dict[str, Any] = {"vllm_ratio": None, "vllm_client_tok_s": None, "vllm_raw_tok_s": None}
        server = None
        url, model = args.vllm_url, args.vllm_model
        if not url and args.with_vllm:
            server = start_vllm(tmp)
            url, model = server.base_url, server.model_name
        try:
            if url:
                vllm = asyncio.run(vllm_compare(url, model, args.vllm_prompts, args.vllm_concurrency, tmp))
                vllm.update(vllm_prompts=args.vllm_prompts, vllm_concurrency=args.vllm_concurrency)
        finally:
            if server is not None:
                server.stop()
        out.update(vllm)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

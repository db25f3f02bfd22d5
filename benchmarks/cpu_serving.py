"""Benchmark: tokens/s of the managed vLLM CPU server for each dtype, and whether `dtype: auto` picks the best.

    python benchmarks/cpu_serving.py [--quick] [--prompts N] [--max-tokens T] [--concurrency C]

For each dtype (float32 and bfloat16: both run on every x86 CPU, bf16 natively only with AVX512_BF16/AMX) the
script starts the same managed server (SmolLM2-135M from `make model`, the demo's CPU arguments and threads),
sends the same N prompts (T tokens each, ignore_eos so every reply has T tokens, concurrency C, temperature 0)
after one warm-up request, measures generated tokens over wall time, and stops the server. Prints ONE JSON
line: cpu flags, `auto_dtype` and its reason, `tok_s` per dtype, `best_dtype`, and `auto_vs_best` (auto's
tok/s over the best; goal >= 0.9).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medcot.config import ServerConfig, default_cache_dir  # noqa: E402
from medcot.cpu import choose_serving, read_cpu  # noqa: E402
from medcot.server import CPU_ENV, CPU_EXTRA_ARGS, VLLMServer  # noqa: E402

DTYPES = ("float32", "bfloat16")
TOPICS = ["hypertension", "sepsis", "asthma", "anaemia", "stroke", "pneumonia", "diabetes", "gout",
          "migraine", "hepatitis", "pancreatitis", "thyroid storm", "appendicitis", "heart failure",
          "tuberculosis", "meningitis"]


def prompts(n: int) -> list[str]:
    return [f"Explain, step by step, the first-line management of {TOPICS[i % len(TOPICS)]} (case {i})."
            for i in range(n)]


async def _one(session: aiohttp.ClientSession, url: str, model: str, prompt: str, max_tokens: int,
               sem: asyncio.Semaphore) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0, "ignore_eos": True}
    async with sem, session.post(f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        return int((await resp.json())["usage"]["completion_tokens"])


async def measure(url: str, model: str, texts: list[str], max_tokens: int, concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await _one(session, url, model, "warm-up", 8, sem)
        start = time.perf_counter()
        tokens = await asyncio.gather(*(_one(session, url, model, t, max_tokens, sem) for t in texts))
        wall = time.perf_counter() - start
    return {"tokens": sum(tokens), "wall_s": round(wall, 2), "tok_s": round(sum(tokens) / wall, 2)}


def run_dtype(dtype: str, texts: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model = Path(default_cache_dir()) / "models" / "smollm2-135m-instruct"
    cfg = ServerConfig(model=str(model), served_model_name="smollm2-135m-instruct", port=0, max_model_len=2048,
                       dtype=dtype, extra_args=list(CPU_EXTRA_ARGS), env=dict(CPU_ENV), startup_timeout_s=900)
    start = time.perf_counter()
    with VLLMServer(cfg, log_path=tmp / f"vllm-{dtype}.log") as server:
        ready = time.perf_counter() - start
        print(f"cpu_serving: {dtype} ready in {ready:.0f} s", file=sys.stderr, flush=True)
        out = asyncio.run(measure(server.base_url, server.model_name, texts, args.max_tokens, args.concurrency))
    out["ready_s"] = round(ready, 1)
    print(f"cpu_serving: {dtype} {out}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 prompts x 64 tokens (default: 32 x 128)")
    ap.add_argument("--prompts", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    args.prompts = args.prompts or (16 if args.quick else 32)
    args.max_tokens = args.max_tokens or (64 if args.quick else 128)
    cpu = read_cpu()
    auto = choose_serving(cpu)
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory(prefix="medcot-cpu-serving-") as tmp:
        results = {d: run_dtype(d, texts, args, Path(tmp)) for d in DTYPES}
    tok_s = {d: r["tok_s"] for d, r in results.items()}
    best = max(tok_s, key=lambda d: tok_s[d])
    print(json.dumps({"benchmark": "cpu_serving", "quick": args.quick, "cpu": cpu.model,
                      "cpu_flags": cpu.shown_flags(), "cores": len(cpu.cores), "prompts": args.prompts,
                      "max_tokens": args.max_tokens, "concurrency": args.concurrency, "auto_dtype": auto.dtype,
                      "auto_reason": auto.reason, "tok_s": tok_s, "ready_s": {d: r["ready_s"] for d, r in results.items()},
                      "best_dtype": best, "auto_vs_best": round(tok_s[auto.dtype] / tok_s[best], 3)}))


if __name__ == "__main__":
    main()

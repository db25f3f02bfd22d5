"""The one LLM client: OpenAI-compatible chat completions over aiohttp.

Bounded concurrency, several endpoints (least-busy or round-robin), retries with exponential
backoff and jitter (timeouts, 429 with Retry-After, 5xx, connection errors, malformed replies),
a persistent response cache in the store (a rerun makes zero requests), token/latency accounting,
and reasoning from `reasoning_content`, `reasoning` or `<think>…</think>` in the content.
aiohttp rather than the openai SDK/httpx: it keeps client overhead low at high concurrency.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from medcot.config import LLMConfig, SamplingConfig
from medcot.records import CallRecord, ChatRequest, ChatResult
from medcot.store import Store

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.S)  # R1 often has <think> in the prompt


class LLMError(RuntimeError):
    """A request that could not be completed (after retries, or refused by the server)."""


class LLMUnavailable(LLMError):
    """Every endpoint kept failing: the server is down or overloaded. Work done so far is kept."""


def cache_key(req: ChatRequest) -> str:
    blob = json.dumps({"model": req.model, "messages": req.messages, "params": req.params,
                       "response_format": req.response_format, "prompt_version": req.prompt_version},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def without_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages with every system message's text moved to the front of the first user turn."""
    system = [m["content"] for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    first_user = next((m for m in rest if m.get("role") == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": "\n\n".join(system)}, *rest]
    first_user["content"] = "\n\n".join([*system, first_user["content"]])
    return rest


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """response_format for structured outputs (vLLM, OpenAI)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def split_reasoning(message: dict[str, Any]) -> tuple[str, str | None]:
    """(content, reasoning) from whichever field the server used."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    m = _THINK.match(content) if "</think>" in content else None
    if m and not reasoning:
        reasoning, content = m.group(1).strip(), content[m.end():]
    return content, reasoning


@dataclass
class ClientStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    by_stage: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    def add(self, stage: str, result: ChatResult) -> None:
        s = self.by_stage[stage]
        if result.cached:
            self.cache_hits += 1
            s["cache_hits"] += 1
            return
        self.requests += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.latency_s += result.latency_s
        s["requests"] += 1
        s["prompt_tokens"] += result.prompt_tokens
        s["completion_tokens"] += result.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "retries": self.retries,
                "failures": self.failures, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latency_s": round(self.latency_s, 3),
                "by_stage": {k: dict(v) for k, v in self.by_stage.items()}}


class _Endpoint:
    def __init__(self, base_url: str):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.base_url = base_url.rstrip("/")
        self.in_flight = 0
        self.down_until = 0.0


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class LLMClient:
    """Use as `async with LLMClient(cfg, store) as client: await client.chat(request)`."""

    def __init__(self, cfg: LLMConfig, store: Store | None = None, api_key: str | None = None):
        if not cfg.endpoints:
            raise ValueError("llm.endpoints is empty")
        self.cfg = cfg
        self.store = store
        self.api_key = api_key if api_key is not None else os.environ.get(cfg.api_key_env, "")
        self.endpoints = [_Endpoint(u) for u in cfg.endpoints]
        self.stats = ClientStats()
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._rr = 0
        self._session: aiohttp.ClientSession | None = None
        # Awaited once before the first real request (e.g. start the vLLM server lazily, so a
        # rerun that is all cache hits never starts it).
        self.before_first_request: Callable[[], Awaitable[None]] | None = None
        self._ready_lock = asyncio.Lock()
        self._inflight: dict[str, asyncio.Future[ChatResult]] = {}

    async def __aenter__(self) -> LLMClient:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s, sock_connect=self.cfg.connect_timeout_s)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector,
                                              json_serialize=_dumps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self, req: ChatRequest, use_cache: bool = True) -> ChatResult:
        if self.cfg.system_prompt == "merge" and any(m.get("role") == "system" for m in req.messages):
            req = dataclasses.replace(req, messages=without_system(req.messages))  # what is sent is what is cached
        key = cache_key(req)
        if use_cache and self.store is not None:
            found = self.store.get_call(key)
            if found is not None:
                call_id, call = found
                result = ChatResult(content=call.content, reasoning=call.reasoning, finish_reason=call.finish_reason,
                                    prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                                    latency_s=call.latency_s, call_id=call_id, cached=True, cache_key=key,
                                    endpoint=call.endpoint)
                self.stats.add(req.stage, result)
                return result
        if key in self._inflight:  # an identical request is on its way: share its answer
            shared = dataclasses.replace(await asyncio.shield(self._inflight[key]), cached=True)
            self.stats.add(req.stage, shared)
            return shared
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._fetch_and_record(req, key)
            future.set_result(result)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._inflight[key]
        self.stats.add(req.stage, result)
        return result

    async def _fetch_and_record(self, req: ChatRequest, key: str) -> ChatResult:
        if self.before_first_request is not None:
            await self._ensure_ready()
        async with self._sem:
            result, retries = await self._request_with_retries(req)
        result.cache_key = key
        if self.store is not None:
            result.call_id = self.store.record_call(CallRecord(
                cache_key=key, stage=req.stage, item_id=req.item_id, model=req.model, endpoint=result.endpoint,
                messages=req.messages, params=req.params, response_format=req.response_format,
                prompt_version=req.prompt_version, content=result.content, reasoning=result.reasoning,
                finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, latency_s=result.latency_s, retries=retries))
        return result

    async def _ensure_ready(self) -> None:
        async with self._ready_lock:  # the others wait here until the first caller's hook is done
            if self.before_first_request is not None:
                await self.before_first_request()
                self.before_first_request = None

    def set_endpoints(self, urls: list[str]) -> None:
        self.endpoints = [_Endpoint(u) for u in urls]

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        live = [e for e in self.endpoints if e.down_until <= now] or self.endpoints
        if self.cfg.strategy == "round-robin":
            self._rr = (self._rr + 1) % len(live)
            return live[self._rr]
        return min(live, key=lambda e: e.in_flight)

    async def _request_with_retries(self, req: ChatRequest) -> tuple[ChatResult, int]:
        payload = {"model": req.model, "messages": req.messages, **req.params}
        if req.response_format is not None:
            payload["response_format"] = req.response_format
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            endpoint = self._pick()
            try:
                return await self._post_once(endpoint, payload), attempt
            except _RetryableError as exc:
                last = f"{endpoint.base_url}: {exc}"
                self.stats.retries += 1
                if attempt == self.cfg.max_retries:
                    break
                await asyncio.sleep(self._backoff(attempt, exc.retry_after))
        self.stats.failures += 1
        raise LLMUnavailable(f"LLM request failed after {self.cfg.max_retries + 1} attempts "
                             f"(stage {req.stage or '?'}, item {req.item_id or '?'}): {last}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cfg.backoff_max_s)
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt)
        return delay * random.uniform(0.5, 1.0)

    async def _post_once(self, endpoint: _Endpoint, payload: dict[str, Any]) -> ChatResult:
        assert self._session is not None, "use `async with LLMClient(...)`"
        endpoint.in_flight += 1
        start = time.perf_counter()
        try:
            async with self._session.post(endpoint.url, json=payload) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            endpoint.down_until = time.monotonic() + 2.0
            raise _RetryableError(f"connection error: {exc!r}") from exc
        except TimeoutError as exc:
            raise _RetryableError(f"timeout after {self.cfg.timeout_s}s") from exc
        finally:
            endpoint.in_flight -= 1
        latency = time.perf_counter() - start
        if status in RETRY_STATUSES:
            raise _RetryableError(f"HTTP {status}: {body[:200]!r}", retry_after)
        if status >= 400:
            self.stats.failures += 1
            raise LLMError(f"{endpoint.url}: HTTP {status}: {body[:500].decode('utf-8', 'replace')}")
        return _parse_reply(body, latency, endpoint.base_url)


def _parse_reply(body: bytes, latency: float, endpoint: str) -> ChatResult:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content, reasoning = split_reasoning(choice["message"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _RetryableError(f"malformed reply: {body[:200]!r}") from exc
    usage = data.get("usage") or {}
    return ChatResult(content=content, reasoning=reasoning, finish_reason=choice.get("finish_reason"),
                      prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      latency_s=latency, endpoint=endpoint)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sampling_params(s: SamplingConfig) -> dict[str, object]:
    params: dict[str, object] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    if s.seed is not None:
        params["seed"] = s.seed
    return params


async def gather_all(coros: list, desc: str | None = None, progress: bool | None = None,  # type: ignore[type-arg]
                     unit: str = "item") -> None:
    """Run coroutines concurrently (the client bounds concurrency), with a progress bar named `desc` (none
    when `desc` is None or `progress` is false). On the first LLMUnavailable, cancel the rest and re-raise:
    everything finished so far is already in the store."""
    import sys

    from tqdm.auto import tqdm
    if progress is None:  # callers without a --no-progress flag: a bar only on a terminal
        progress = sys.stderr.isatty()
    tasks = [asyncio.ensure_future(c) for c in coros]
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=desc is None or not progress or not tasks)
    try:
        for fut in asyncio.as_completed(tasks):
            await fut
            bar.update(1)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        bar.close()

"""A scripted OpenAI-compatible server (aiohttp.web) for unit tests and benchmarks; zero latency by default.

In-process (tests):

    async with ScriptedServer() as srv:              # listens on 127.0.0.1, a free port
        srv.push(Status(503), Reply("fine"))         # the next two chat requests, in order
        srv.responder = lambda body: Reply("B")      # after the queue: answer per request
        ... LLMClient(LLMConfig(endpoints=[srv.base_url])) ...
        srv.count, srv.by_path, srv.bodies, srv.max_in_flight

Separate process (benchmarks): `python -m medcot.scripted_server --port 0 [--mode echo]` prints
`READY http://127.0.0.1:PORT/v1` on stdout once listening, and serves until SIGTERM/SIGINT. Modes `unparseable`
and `wrong --keys SEEDS.jsonl` are adversarial models for end-to-end robustness tests; `--mode r1 [options]`
is the DeepSeek-R1 rehearsal server of `medcot.rehearsal` (its options: `python -m medcot.rehearsal -h`).

A behaviour is one of Reply, Status, Hang, Malformed, Drop, an aiohttp `web.Response`, a dict (sent as the
JSON body as is) or a str (shorthand for Reply(str)). A responder is `(request_json) -> behaviour`, or
`(request_json) -> awaitable of a behaviour` (the rehearsal server waits there for its emulated GPU).
`await srv.kill()` closes the socket and every open connection (clients see the connection refused or reset);
`await srv.revive()` listens again on the same port.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """A normal chat completion; reasoning goes in vLLM's `reasoning` and/or DeepSeek's `reasoning_content`."""

    content: str | None = "The answer is (A)."  # None: vLLM's null content (a reply cut while thinking)
    reasoning: str | None = None
    reasoning_content: str | None = None
    prompt_tokens: int = 42
    completion_tokens: int = 7
    finish_reason: str = "stop"
    delay_s: float = 0.0


@dataclass
class Status:
    """An HTTP error status (429, 500, 503, 400 ...), optionally with a Retry-After header (seconds)."""

    status: int = 500
    retry_after: float | None = None
    body: str = '{"error": {"message": "scripted error"}}'


@dataclass
class Hang:
    """Sleep longer than the client timeout, then answer normally (if anyone is still listening)."""

    seconds: float = 30.0


@dataclass
class Malformed:
    """HTTP 200 with a body that is not valid JSON."""

    body: str = '{"choices": [{"message": '


@dataclass
class Drop:
    """Close the connection without answering."""


Behaviour = Reply | Status | Hang | Malformed | Drop | web.StreamResponse | dict | str
Responder = Callable[[dict[str, Any]], Behaviour | Awaitable[Behaviour]]


def completion(reply: Reply, model: str = "scripted") -> dict[str, Any]:
    """The OpenAI chat.completion body for a Reply."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning is not None:
        message["reasoning"] = reply.reasoning
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens}}


def echo(_body: dict[str, Any]) -> Behaviour:
    """The default responder: a fixed short answer with plausible usage numbers."""
    return Reply()


_ECHO_BYTES = json.dumps(completion(Reply(), "echo")).encode()


class ScriptedServer:
    """Queue (`push`) first, then `responder`; counts requests, records bodies, tracks requests in flight."""

    def __init__(self, responder: Responder | None = None, host: str = "127.0.0.1", port: int = 0,
                 record_bodies: bool = True, fast_echo: bool = False) -> None:
        self.responder: Responder = responder or echo
        self.host, self.port = host, port
        self.record_bodies = record_bodies
        self.fast_echo = fast_echo  # benchmark mode: skip JSON parsing, send precomputed echo bytes
        self.queue: deque[Behaviour] = deque()
        self.count = 0
        self.by_path: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.alive = False
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def push(self, *behaviours: Behaviour) -> None:
        self.queue.extend(behaviours)

    def reset(self) -> None:
        self.queue.clear()
        self.count, self.in_flight, self.max_in_flight = 0, 0, 0
        self.by_path.clear()
        self.bodies.clear()

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.alive = True
        return self.base_url

    async def stop(self) -> None:
        self.alive = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def kill(self) -> None:
        """Die like a crashed replica: abort every request in flight, stop listening (connection refused)."""
        self.alive = False
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        await self.stop()

    async def revive(self) -> str:
        """Come back on the same port after `kill`."""
        return await self.start()

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _health(self, request: web.Request) -> web.Response:
        self.by_path[request.path] += 1
        return web.Response(text="OK")

    async def _models(self, request: web.Request) -> web.Response:
        self.by_path[request.path] += 1
        return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.count += 1
        self.by_path[request.path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        try:
            if self.fast_echo and not self.queue:
                await request.read()
                return web.Response(body=_ECHO_BYTES, content_type="application/json")
            body: dict[str, Any] = await request.json()
            if self.record_bodies:
                self.bodies.append(body)
            behaviour = self.queue.popleft() if self.queue else self.responder(body)
            if inspect.isawaitable(behaviour):
                behaviour = await behaviour
            return await self._perform(request, behaviour, str(body.get("model", "scripted")))
        finally:
            self.in_flight -= 1
            if transport is not None:
                self._transports.discard(transport)

    async def _perform(self, request: web.Request, b: Behaviour, model: str) -> web.StreamResponse:
        if isinstance(b, web.StreamResponse):
            return b
        if isinstance(b, str):
            b = Reply(b)
        if isinstance(b, dict):
            return web.json_response(b)
        if isinstance(b, Reply):
            if b.delay_s:
                await asyncio.sleep(b.delay_s)
            return web.json_response(completion(b, model))
        if isinstance(b, Status):
            headers = {"Retry-After": f"{b.retry_after:g}"} if b.retry_after is not None else None
            return web.Response(status=b.status, text=b.body, content_type="application/json", headers=headers)
        if isinstance(b, Hang):
            await asyncio.sleep(b.seconds)
            return web.json_response(completion(Reply(), model))
        if isinstance(b, Malformed):
            return web.Response(text=b.body, content_type="application/json")
        if isinstance(b, Drop):
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is written; the client sees the connection close
        raise TypeError(f"unknown scripted behaviour: {b!r}")


# ---- adversarial modes: the pipeline must finish (exit 0, a report) whatever the model writes -----------------
UNPARSEABLE = "I am not sure; several of these options could be argued for, and I would rather not choose."
_OPTION_LINE = re.compile(r"^\s*([A-E])[.)．、:]\s*(.+?)\s*$", re.M)


def schema_instance(schema: dict[str, Any]) -> Any:
    """A minimal instance of a JSON schema (first enum value, minimum, minItems copies): what a model that obeys
    the grammar but says nothing useful would return."""
    if "anyOf" in schema:
        return schema_instance(schema["anyOf"][0])
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {k: schema_instance(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items") or {}) for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return "x" * int(schema.get("minLength", 1))


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt.get("json_schema", {}).get("schema") or {}
    so = body.get("structured_outputs") or {}
    return so.get("json") if isinstance(so.get("json"), dict) else None


def unparseable(_body: dict[str, Any]) -> Behaviour:
    """Never a letter, never JSON."""
    return Reply(UNPARSEABLE)


class WrongAnswers:
    """Answers every question with a letter whose option is NOT the key (keys from seed files); JSON requests
    get a minimal schema instance. Questions it has no key for get the first option."""

    def __init__(self, key_files: list[str]) -> None:
        self.keys: dict[str, str] = {}  # question text -> the key's option text
        for path in key_files:
            for line in open(path, encoding="utf-8"):
                if line.strip():
                    rec = json.loads(line)
                    self.keys[rec["question"].strip()] = rec["options"][rec["answer"]].strip()

    def __call__(self, body: dict[str, Any]) -> Behaviour:
        schema = _json_schema(body)
        if schema is not None:
            return Reply(json.dumps(schema_instance(schema)))
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        shown = dict(_OPTION_LINE.findall(prompt))
        key_text = next((t for q, t in self.keys.items() if q in prompt), None)
        wrong = [k for k, v in sorted(shown.items()) if v.strip() != key_text] or ["A"]
        return Reply(f"Considering each option in turn, I settle on {wrong[0]}.\nAnswer: {wrong[0]}")


async def _serve(host: str, port: int, mode: str, keys: list[str] | None = None) -> None:
    responder = {"echo": echo, "unparseable": unparseable}.get(mode) or WrongAnswers(keys or [])
    server = ScriptedServer(responder=responder, host=host, port=port, record_bodies=False,
                            fast_echo=(mode == "echo"))
    await server.start()
    print(f"READY {server.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def _r1_args(argv: list[str]) -> list[str] | None:
    """The arguments without `--mode r1` when that is the mode asked for, else None."""
    for i, arg in enumerate(argv):
        if arg == "--mode=r1":
            return argv[:i] + argv[i + 1:]
        if arg == "--mode" and argv[i + 1:i + 2] == ["r1"]:
            return argv[:i] + argv[i + 2:]
    return None


def main(argv: list[str] | None = None) -> None:
    import sys
    args_in = sys.argv[1:] if argv is None else argv
    if (r1_args := _r1_args(args_in)) is not None:
        from medcot.rehearsal import main as rehearsal_main  # the R1 rehearsal server has its own options
        rehearsal_main(r1_args)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed in the READY line)")
    parser.add_argument("--mode", choices=["echo", "unparseable", "wrong", "r1"], default="echo",
                        help="echo: a fixed answer; unparseable: never a letter nor JSON; wrong: never the key; "
                             "r1: the DeepSeek-R1 rehearsal server (medcot.rehearsal, its own options)")
    parser.add_argument("--keys", nargs="*", default=[], help="wrong mode: seed JSONL files holding the keys")
    args = parser.parse_args(args_in)
    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.host, args.port, args.mode, args.keys))


if __name__ == "__main__":
    main()

"""An R1 rehearsal server: DeepSeek-R1 served by vLLM GPU replicas, emulated on a CPU so that paper-scale runs
can be rehearsed in minutes (the scripted server, `medcot.scripted_server`, with an R1-like responder).

    python -m medcot.rehearsal --replicas 2 --keys data/seeds/seed_zh.jsonl data/seeds/seed_en.jsonl \\
        [--tok-s 2500] [--max-concurrency 64] [--seq-tok-s N] [--time-scale 10] [--p-right 0.8] \\
        [--p-503 0.01] [--p-hang 0.001 --hang-s 400] [--die 0:30:10] [--reasoning-field reasoning_content]
    (or `python -m medcot.scripted_server --mode r1 ...`)

prints `READY http://127.0.0.1:PORT/v1` once per replica, and serves until SIGTERM/SIGINT.

What a reply looks like
    Thinking of realistic length: the number of thinking tokens is drawn from a log-normal distribution (default
    median 1,500 tokens, sigma 0.55, clipped to 200..32,768: mean ~1,750, 95th percentile ~3,700; shaped like
    R1's reasoning on medical exam questions, an assumption, not a measurement), then the answer:
    - a request with `response_format` json_schema (or vLLM's `structured_outputs.json`) gets a valid instance of
      the schema (`rich_instance`: every property, varied text in the prompt's language, enums and anyOf
      branches drawn at random; an object with `options` and `answer` gets the answer the key rule below
      gives, so a question the server writes is answered consistently later, by any replica);
    - any other request gets an analysis of each shown option and a final line in the format the prompt asks
      for ("答案：X", "Answer: X", "The answer is (X)"; default "Answer: X"): the key with probability
      `p_right`, else another letter; hedged ("Answer: B or C") with probability `p_hedge`; no final line and
      no verdict with probability `p_absent`.
    The thinking goes to `reasoning_content` (vLLM's deepseek_r1 parser, older vLLM and DeepSeek's API), to
    `reasoning` (newer vLLM), or inline in the content as `<think>...</think>` (`reasoning_field`). When the
    drawn thinking plus the answer exceed the request's `max_tokens`, the thinking is cut at `max_tokens`, the
    content is null (inline: the unclosed `<think>` text) and `finish_reason` is "length".
    Content is a deterministic function of the request body (a rerun, or another replica, says the same thing;
    the sampling `seed` varies it). Faults are not: they come from a seeded stream per replica.

The key
    Seed questions: the key of the seed files (`--keys`), found by the SET of option texts shown (so permuted
    options, as five-strike shows them, still find it). Anything else (expanded questions): the option whose
    text has the smallest SHA-256 digest, a rule every replica computes from the prompt alone.

Tokens
    `approx_tokens`: one token per CJK character and one per run of other non-space characters (a word with
    its punctuation). Thinking text is generated to have exactly the drawn number of such tokens; `usage`
    reports `approx_tokens` of the prompt (every message) and of the emitted text (thinking + content).

The replica (one GPU vLLM server)
    Continuous batching: a replica decodes `tok_s` tokens per second in aggregate, shared equally by the
    requests it is running (processor sharing); with `seq_tok_s` set a single sequence is also capped at that
    speed (then a replica is saturated only with >= tok_s / seq_tok_s requests). At most `max_concurrency`
    requests run; the others wait in a FIFO queue. Prefill is not modelled (free). `time_scale` speeds the
    clock: a replica emulates `tok_s` model tokens per second at `tok_s * time_scale` per wall second, so a
    1-hour GPU job rehearses in 6 minutes at time scale 10. Durations given on the command line (`--hang-s`,
    `--die`) are wall seconds.

Faults
    `p_503`: an immediate HTTP 503; `p_hang`: no answer for `hang_s` wall seconds (set it beyond the client's
    timeout); `--die R:AT:FOR`: replica R dies AT wall seconds after start (requests in flight are reset, the
    port refuses connections) and comes back FOR seconds later, empty.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from medcot.scripted_server import _OPTION_LINE, Behaviour, Hang, Reply, ScriptedServer, Status, _json_schema

_CJK = r"\u3400-\u9fff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_LETTER = re.compile(rf"[A-Za-z{_CJK}]")

EN_WORDS = (
    "patient presents with fever cough dyspnoea chest pain tachycardia hypotension oedema jaundice anaemia "
    "renal hepatic cardiac pulmonary neurological acute chronic bilateral unilateral lesion infiltrate serum "
    "sodium potassium creatinine troponin lactate glucose insulin cortisol thyroid antibody antigen culture "
    "biopsy imaging ultrasound radiograph tomography echocardiogram electrocardiogram murmur rales wheeze "
    "reflex sensory motor deficit seizure syncope headache nausea vomiting diarrhoea bleeding thrombosis "
    "embolism infarction ischaemia inflammation infection sepsis abscess fracture dislocation tumour "
    "metastasis carcinoma lymphoma leukaemia therapy dose contraindication indication mechanism receptor "
    "inhibitor agonist antagonist enzyme pathway clearance toxicity adverse effect complication prognosis "
    "diagnosis differential management first-line next step likely unlikely consistent against supports "
    "excludes suggests typical atypical finding history examination elderly child pregnant woman man "
    "the key point is that this option would not explain the picture, whereas the other fits better; "
    "wait, let me reconsider the timeline and the laboratory values again before deciding."
).split()
ZH_CHARS = ("患者男性女性岁发热咳嗽胸痛呼吸困难心率血压水肿黄疸贫血肾肝心肺神经急慢性双侧单病变浸润血清钠钾"
            "肌酐肌钙蛋白乳酸葡萄糖胰岛素皮质醇甲状腺抗体抗原培养活检影像超声平片断层心电图杂音啰音反射感觉"
            "运动缺损癫痫晕厥头痛恶心呕吐腹泻出血血栓栓塞梗死缺血炎症感染脓毒症骨折脱位肿瘤转移癌淋巴瘤白血"
            "病治疗剂量禁忌适应证机制受体抑制剂激动拮抗酶通路清除毒性不良反应并发症预后诊断鉴别处理首选下一步"
            "可能符合支持排除提示典型非典型表现病史查体老年儿童孕妇所以关键在于这个选项不能解释而另一个更合理"
            "再回顾一下时间线和化验结果然后决定")
ZH_PUNCT = "，。；："

ANSWER_FORMATS: tuple[tuple[str, str, str], ...] = (  # (what the prompt asks for, final line, hedged final line)
    ("答案：X", "答案：{}", "答案：{}或{}"),
    ("Answer: X", "Answer: {}", "Answer: {} or {}"),
    ("The answer is (X)", "The answer is ({}).", "The answer is ({}) or ({})."),
)


def approx_tokens(text: str | None) -> int:
    """Tokens as this server counts them: one per CJK character, one per run of other non-space characters."""
    return len(_TOKEN.findall(text or ""))


def is_chinese(text: str) -> bool:
    letters = _LETTER.findall(text)
    return bool(letters) and len(_CJK_CHAR.findall(text)) >= 0.2 * len(letters)


def _digest(obj: Any) -> int:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


# ---- text -----------------------------------------------------------------------------------------------
def think_text(rng: random.Random, n: int, zh: bool) -> str:
    """Filler thinking of exactly `n` tokens (approx_tokens), in the prompt's language."""
    if n <= 0:
        return ""
    if not zh:
        return " ".join(rng.choices(EN_WORDS, k=n))
    parts: list[str] = []
    left = n
    while left > 0:
        run = min(left, rng.randint(6, 20))
        parts.append("".join(rng.choices(ZH_CHARS, k=run)))
        left -= run
        if left > 0:
            parts.append(rng.choice(ZH_PUNCT))
            left -= 1
    return "".join(parts)


def phrase(rng: random.Random, zh: bool, lo: int = 5, hi: int = 14) -> str:
    """A short varied text (zh: 2x the length in characters)."""
    if zh:
        return "".join(rng.choices(ZH_CHARS, k=rng.randint(2 * lo, 2 * hi)))
    return " ".join(rng.choices(EN_WORDS, k=rng.randint(lo, hi)))


def option_digest(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def hash_key(options: dict[str, str]) -> str:
    """The key rule for questions without a known key: the option whose text has the smallest digest."""
    return min(sorted(options), key=lambda letter: option_digest(options[letter]))


# ---- JSON ------------------------------------------------------------------------------------------------
def rich_instance(schema: dict[str, Any], rng: random.Random, zh: bool) -> Any:
    """A valid, varied instance of a JSON schema: every property, text in the prompt's language."""
    for alt in ("anyOf", "oneOf"):
        if alt in schema:
            return rich_instance(rng.choice(schema[alt]), rng, zh)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = rng.choice(kind) if isinstance(kind, list) else kind
    if kind == "object":
        return {k: rich_instance(v, rng, zh) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        lo = int(schema.get("minItems", 1 if schema.get("maxItems", 1) else 0))
        hi = int(schema.get("maxItems", lo + 3))
        return [rich_instance(schema.get("items") or {}, rng, zh) for _ in range(rng.randint(lo, min(hi, lo + 4)))]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", lo + 10)
        return rng.randint(int(lo), int(hi)) if kind == "integer" else rng.uniform(lo, hi)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, zh)


def _string(schema: dict[str, Any], rng: random.Random, zh: bool) -> str:
    text = phrase(rng, zh)
    if "maxLength" in schema:
        text = text[:int(schema["maxLength"])].strip() or text[:int(schema["maxLength"])]
    need = int(schema.get("minLength", 0))
    while len(text) < need:
        text += ("" if zh else " ") + phrase(rng, zh)
    return text[:int(schema.get("maxLength", len(text)))]


def with_hash_key(obj: Any) -> Any:
    """An MCQ-shaped object (`options` mapping + `answer` letter) gets the key that `hash_key` gives."""
    if isinstance(obj, dict) and isinstance(obj.get("options"), dict) and isinstance(obj.get("answer"), str):
        options = {k: v for k, v in obj["options"].items() if isinstance(v, str)}
        if options and obj["answer"] in options:
            obj["answer"] = hash_key(options)
    return obj


# ---- the key ---------------------------------------------------------------------------------------------
class AnswerKeys:
    """Seed keys by the set of option texts; `hash_key` for anything else."""

    def __init__(self, key_files: Iterable[str] = ()) -> None:
        self.keys: dict[frozenset[str], str] = {}
        for path in key_files:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        rec = json.loads(line)
                        texts = frozenset(" ".join(t.split()) for t in rec["options"].values())
                        self.keys[texts] = " ".join(rec["options"][rec["answer"]].split())

    def key_letter(self, shown: dict[str, str]) -> str:
        norm = {k: " ".join(v.split()) for k, v in shown.items()}
        text = self.keys.get(frozenset(norm.values()))
        found = [k for k, v in sorted(norm.items()) if v == text]
        return found[0] if found else hash_key(norm)


def shown_options(prompt: str) -> dict[str, str]:
    """The option lines of a prompt (the last occurrence of each letter)."""
    return dict(_OPTION_LINE.findall(prompt))


def answer_format(prompt: str) -> tuple[str, str]:
    """(final line, hedged final line) templates for the format the prompt asks for."""
    for asked, line, hedged in ANSWER_FORMATS:
        if asked in prompt:
            return line, hedged
    return ANSWER_FORMATS[1][1], ANSWER_FORMATS[1][2]


# ---- configuration ---------------------------------------------------------------------------------------
@dataclass
class ThinkLengths:
    """Log-normal thinking length in tokens (median, sigma), clipped to [minimum, maximum]."""

    median: float = 1500.0
    sigma: float = 0.55
    minimum: int = 200
    maximum: int = 32768

    def sample(self, rng: random.Random) -> int:
        n = int(round(self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))))
        return max(self.minimum, min(self.maximum, n))


@dataclass
class R1Config:
    think: ThinkLengths = field(default_factory=ThinkLengths)
    p_right: float = 0.8
    p_hedge: float = 0.03
    p_absent: float = 0.02
    reasoning_field: str = "reasoning_content"  # reasoning_content | reasoning | inline
    tok_s: float = 2500.0  # one replica's aggregate decode rate (model tokens per model second)
    seq_tok_s: float | None = None  # a single sequence's cap; None: the replica's whole rate is shared
    max_concurrency: int = 64
    time_scale: float = 10.0
    p_503: float = 0.0
    p_hang: float = 0.0
    hang_s: float = 600.0
    fault_seed: int = 0

    def __post_init__(self) -> None:
        if self.reasoning_field not in ("reasoning_content", "reasoning", "inline"):
            raise ValueError(f"reasoning_field must be reasoning_content, reasoning or inline: {self.reasoning_field}")
        if self.p_right + self.p_hedge + self.p_absent > 1.0 or min(self.p_right, self.p_hedge, self.p_absent) < 0:
            raise ValueError("p_right + p_hedge + p_absent must be within [0, 1]")
        if self.tok_s <= 0 or self.time_scale <= 0 or self.max_concurrency < 1:
            raise ValueError("tok_s and time_scale must be > 0, max_concurrency >= 1")


# ---- the replica -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Job:
    start: float  # virtual service at arrival
    finish: float  # virtual service at which it is done
    future: asyncio.Future[None]


class Replica:
    """One emulated GPU replica: processor-sharing decode at `tok_s` (x time_scale), at most `max_concurrency`
    requests running, the rest queued. `await replica.generate(n)` returns when n tokens are decoded."""

    def __init__(self, tok_s: float, max_concurrency: int, seq_tok_s: float | None = None,
                 time_scale: float = 1.0) -> None:
        self.rate = tok_s * time_scale
        self.seq_rate = seq_tok_s * time_scale if seq_tok_s else None
        self.max_concurrency = max_concurrency
        self.tokens_done = 0
        self.tokens_lost = 0.0  # decoded for requests that were cancelled (client gone, replica died)
        self.requests_done = 0
        self.max_active = 0
        self.busy_s = 0.0  # wall seconds with at least one request decoding
        self.decoded = 0.0  # tokens decoded, for every request (finished, cancelled or lost)
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count()
        self._virtual = 0.0  # tokens each running request has received so far (all advance together)
        self._clock = time.monotonic()
        self._slots: asyncio.Semaphore | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> int:
        return len(self._jobs)

    def per_sequence_rate(self, n: int) -> float:
        share = self.rate / max(n, 1)
        return min(share, self.seq_rate) if self.seq_rate else share

    def _advance(self) -> None:
        """Bring the shared decode up to now, finishing jobs at their exact (virtual) completion times, so that
        a late timer delays a reply but never wastes the replica's capacity."""
        now = time.monotonic()
        while self._jobs:
            n = len(self._jobs)
            rate = self.per_sequence_rate(n)
            nearest = min(j.finish for j in self._jobs.values())
            at = self._clock + max(nearest - self._virtual, 0.0) / rate
            if at > now:
                self._step(now, (now - self._clock) * rate, n)
                return
            self._step(at, max(nearest - self._virtual, 0.0), n)
            for key, job in list(self._jobs.items()):
                if job.finish <= self._virtual + 1e-6:
                    del self._jobs[key]
                    if not job.future.done():
                        job.future.set_result(None)
        self._clock = now

    def _step(self, to: float, tokens: float, n: int) -> None:
        self._virtual += tokens
        self.decoded += tokens * n
        self.busy_s += to - self._clock
        self._clock = to

    def _start(self) -> None:
        if self._task is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def generate(self, tokens: int) -> None:
        if tokens <= 0:
            return
        self._start()
        assert self._slots is not None and self._wake is not None
        async with self._slots:
            self._advance()
            key = next(self._ids)
            job = _Job(self._virtual, self._virtual + tokens, asyncio.get_running_loop().create_future())
            self._jobs[key] = job
            self.max_active = max(self.max_active, len(self._jobs))
            self._wake.set()
            try:
                await job.future
            except asyncio.CancelledError:
                if key in self._jobs:
                    self._advance()
                    del self._jobs[key]
                    self.tokens_lost += self._virtual - job.start
                    self._wake.set()
                raise
        self.tokens_done += tokens
        self.requests_done += 1

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._advance()
            self._wake.clear()
            if not self._jobs:
                await self._wake.wait()
                continue
            left = min(j.finish for j in self._jobs.values()) - self._virtual
            wait = max(left, 0.0) / self.per_sequence_rate(len(self._jobs))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def stats(self) -> dict[str, Any]:
        return {"tokens_done": self.tokens_done, "tokens_lost": round(self.tokens_lost), "requests_done":
                self.requests_done, "max_active": self.max_active, "busy_s": round(self.busy_s, 3),
                "decoded": round(self.decoded)}


# ---- the responder ---------------------------------------------------------------------------------------
def _prompt(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []))


class R1Responder:
    """`await responder(body)`: a fault, or an R1-like Reply once the replica has decoded its tokens."""

    def __init__(self, cfg: R1Config, keys: AnswerKeys, replica: Replica | None = None) -> None:
        self.cfg, self.keys, self.replica = cfg, keys, replica
        self.faults: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._fault_rng = random.Random(cfg.fault_seed)

    async def __call__(self, body: dict[str, Any]) -> Behaviour:
        fault = self.fault()
        if fault is not None:
            return fault
        reply = self.compose(body)
        if self.replica is not None:
            await self.replica.generate(reply.completion_tokens)
        return reply

    def fault(self) -> Behaviour | None:
        u = self._fault_rng.random()
        if u < self.cfg.p_503:
            self.faults["503"] += 1
            return Status(503, body='{"error": {"message": "rehearsal: service unavailable"}}')
        if u < self.cfg.p_503 + self.cfg.p_hang:
            self.faults["hang"] += 1
            return Hang(self.cfg.hang_s)
        return None

    def compose(self, body: dict[str, Any]) -> Reply:
        """The reply to a request, deterministic in the request body."""
        rng = random.Random(_digest(body))
        prompt = _prompt(body)
        zh = is_chinese(prompt)
        schema = _json_schema(body)
        if schema is not None:
            answer, outcome = json.dumps(with_hash_key(rich_instance(schema, rng, zh)), ensure_ascii=False), "json"
        else:
            answer, outcome = self._letter_answer(prompt, rng, zh)
        think_n = self.cfg.think.sample(rng)
        budget = int(body.get("max_tokens") or body.get("max_completion_tokens") or 32768)
        prompt_tokens = approx_tokens(prompt)
        tags = 2 if self.cfg.reasoning_field == "inline" else 0  # <think> and </think> count when inline
        if think_n + approx_tokens(answer) + tags > budget:
            self.outcomes["length"] += 1
            return self._truncated(rng, budget, zh, prompt_tokens)
        self.outcomes[outcome] += 1
        think = think_text(rng, think_n, zh)
        return self._reply(think, answer, prompt_tokens)

    def _reply(self, think: str, answer: str, prompt_tokens: int) -> Reply:
        if self.cfg.reasoning_field == "inline":
            content = f"<think>\n{think}\n</think>\n\n{answer}"
            return Reply(content, prompt_tokens=prompt_tokens, completion_tokens=approx_tokens(content))
        tokens = approx_tokens(think) + approx_tokens(answer)
        return Reply(answer, prompt_tokens=prompt_tokens, completion_tokens=tokens,
                     **{self.cfg.reasoning_field: think})

    def _truncated(self, rng: random.Random, budget: int, zh: bool, prompt_tokens: int) -> Reply:
        if self.cfg.reasoning_field == "inline":
            content = "<think>\n" + think_text(rng, budget - 1, zh)
            return Reply(content, prompt_tokens=prompt_tokens, completion_tokens=approx_tokens(content),
                         finish_reason="length")
        think = think_text(rng, budget, zh)
        return Reply(None, prompt_tokens=prompt_tokens, completion_tokens=approx_tokens(think),
                     finish_reason="length", **{self.cfg.reasoning_field: think})

    def _letter_answer(self, prompt: str, rng: random.Random, zh: bool) -> tuple[str, str]:
        shown = shown_options(prompt) or {"A": "-", "B": "-", "C": "-", "D": "-"}
        key = self.keys.key_letter(shown)
        line, hedged = answer_format(prompt)
        u = rng.random()
        others = [k for k in sorted(shown) if k != key] or [key]
        if u < self.cfg.p_right:
            return _analysis(shown, key, rng, zh) + line.format(key), "right"
        u -= self.cfg.p_right
        if u < self.cfg.p_hedge:
            a, b = sorted(rng.sample(sorted(shown), 2)) if len(shown) > 1 else (key, key)
            return _analysis(shown, None, rng, zh) + hedged.format(a, b), "hedged"
        if u - self.cfg.p_hedge < self.cfg.p_absent:
            return _analysis(shown, None, rng, zh).rstrip(), "absent"
        wrong = rng.choice(others)
        return _analysis(shown, wrong, rng, zh) + line.format(wrong), "wrong"


def _analysis(shown: dict[str, str], chosen: str | None, rng: random.Random, zh: bool) -> str:
    """An opening sentence and one line per option: a verdict on each when `chosen` is set, none otherwise."""
    lines = [phrase(rng, zh, 8, 20) + ("。" if zh else ".")]
    for letter, text in sorted(shown.items()):
        if chosen is None:
            verdict = "需要考虑" if zh else "worth considering"
        elif zh:
            verdict = "正确" if letter == chosen else "错误"
        else:
            verdict = "correct" if letter == chosen else "incorrect"
        because = "，因为" if zh else ", because "
        lines.append(f"{letter}. {text}: {verdict}{because}{phrase(rng, zh, 4, 10)}{'。' if zh else '.'}")
    return "\n".join(lines) + "\n"


# ---- a fleet of replicas ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Death:
    """Replica `replica` dies `at_s` wall seconds after the fleet starts and comes back `down_s` later."""

    replica: int
    at_s: float
    down_s: float

    @classmethod
    def parse(cls, text: str) -> Death:
        r, at, down = text.split(":")
        return cls(int(r), float(at), float(down))


class RehearsalFleet:
    """N replicas, each a ScriptedServer on its own port with its own Replica and R1Responder."""

    def __init__(self, cfg: R1Config, replicas: int = 1, keys: AnswerKeys | None = None,
                 deaths: Iterable[Death] = (), host: str = "127.0.0.1", ports: list[int] | None = None) -> None:
        self.cfg = cfg
        self.keys = keys or AnswerKeys()
        self.deaths = list(deaths)
        self.replicas = [Replica(cfg.tok_s, cfg.max_concurrency, cfg.seq_tok_s, cfg.time_scale)
                         for _ in range(replicas)]
        self.responders = [R1Responder(_replica_cfg(cfg, i), self.keys, r) for i, r in enumerate(self.replicas)]
        self.servers = [ScriptedServer(responder=resp, host=host, port=(ports or [0] * replicas)[i],
                                       record_bodies=False) for i, resp in enumerate(self.responders)]
        self.events: list[tuple[float, int, str]] = []  # (wall s since start, replica, "died"/"back")
        self.started_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    @property
    def aggregate_rate(self) -> float:
        """Tokens per wall second of all replicas together."""
        return sum(r.rate for r in self.replicas)

    async def start(self) -> list[str]:
        for server in self.servers:
            await server.start()
        self.started_at = time.monotonic()
        self._tasks = [asyncio.get_running_loop().create_task(self._die(d)) for d in self.deaths]
        return self.urls

    async def _die(self, death: Death) -> None:
        server = self.servers[death.replica]
        await asyncio.sleep(max(0.0, death.at_s - (time.monotonic() - self.started_at)))
        await server.kill()
        self.events.append((round(time.monotonic() - self.started_at, 3), death.replica, "died"))
        await asyncio.sleep(death.down_s)
        await server.revive()
        self.events.append((round(time.monotonic() - self.started_at, 3), death.replica, "back"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server, replica in zip(self.servers, self.replicas):
            await server.stop()
            await replica.close()

    async def __aenter__(self) -> RehearsalFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        per = [{"url": s.base_url, "requests": s.count, **r.stats(), "faults": dict(resp.faults),
                "outcomes": dict(resp.outcomes)} for s, r, resp in zip(self.servers, self.replicas, self.responders)]
        return {"requests": sum(p["requests"] for p in per), "tokens_done": sum(p["tokens_done"] for p in per),
                "decoded": sum(p["decoded"] for p in per),
                "tokens_lost": sum(p["tokens_lost"] for p in per),
                "faults": dict(sum((Counter(p["faults"]) for p in per), Counter())),
                "events": list(self.events), "replicas": per}


def _replica_cfg(cfg: R1Config, index: int) -> R1Config:
    from dataclasses import replace
    return replace(cfg, fault_seed=cfg.fault_seed * 1000 + index)


class FleetThread:
    """A fleet served from a background thread (its own event loop), for callers that are not async:
    `with FleetThread(fleet) as ft: ft.urls ... ft.stats()`."""

    def __init__(self, fleet: RehearsalFleet) -> None:
        self.fleet = fleet
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rehearsal-fleet", daemon=True)

    def __enter__(self) -> FleetThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def urls(self) -> list[str]:
        return self.fleet.urls

    def stats(self) -> dict[str, Any]:
        return self._call(self.fleet.stats)

    def _call(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)


# ---- command line ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, nargs="*", default=None, help="one port per replica (default: free ports)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--keys", nargs="*", default=[], help="seed JSONL files holding the keys")
    p.add_argument("--think-median", type=float, default=1500.0, help="median thinking tokens")
    p.add_argument("--think-sigma", type=float, default=0.55, help="log-normal sigma of the thinking length")
    p.add_argument("--think-min", type=int, default=200)
    p.add_argument("--think-max", type=int, default=32768)
    p.add_argument("--p-right", type=float, default=0.8)
    p.add_argument("--p-hedge", type=float, default=0.03)
    p.add_argument("--p-absent", type=float, default=0.02)
    p.add_argument("--reasoning-field", choices=["reasoning_content", "reasoning", "inline"],
                   default="reasoning_content")
    p.add_argument("--tok-s", type=float, default=2500.0, help="one replica's aggregate decode rate (model tok/s)")
    p.add_argument("--seq-tok-s", type=float, default=None, help="cap of one sequence's rate (model tok/s)")
    p.add_argument("--max-concurrency", type=int, default=64, help="requests a replica runs at once")
    p.add_argument("--time-scale", type=float, default=10.0, help="model seconds per wall second")
    p.add_argument("--p-503", type=float, default=0.0)
    p.add_argument("--p-hang", type=float, default=0.0)
    p.add_argument("--hang-s", type=float, default=600.0, help="wall seconds a hung request stays silent")
    p.add_argument("--die", action="append", default=[], metavar="R:AT:FOR",
                   help="replica R dies AT wall seconds after start, for FOR seconds (repeatable)")
    p.add_argument("--fault-seed", type=int, default=0)
    return p


def config_from_args(args: argparse.Namespace) -> R1Config:
    return R1Config(think=ThinkLengths(args.think_median, args.think_sigma, args.think_min, args.think_max),
                    p_right=args.p_right, p_hedge=args.p_hedge, p_absent=args.p_absent,
                    reasoning_field=args.reasoning_field, tok_s=args.tok_s, seq_tok_s=args.seq_tok_s,
                    max_concurrency=args.max_concurrency, time_scale=args.time_scale, p_503=args.p_503,
                    p_hang=args.p_hang, hang_s=args.hang_s, fault_seed=args.fault_seed)


async def _serve(args: argparse.Namespace) -> None:
    fleet = RehearsalFleet(config_from_args(args), args.replicas, AnswerKeys(args.keys),
                           [Death.parse(d) for d in args.die], args.host, args.port)
    await fleet.start()
    for url in fleet.urls:
        print(f"READY {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.port is not None and len(args.port) != args.replicas:
        raise SystemExit("--port needs one port per replica")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()

"""`medcot run`: every configured stage, in order, on one store; the vLLM server started and
stopped around the LLM stages when the config says so; a markdown + JSON report at the end."""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from medcot.config import DEFAULT_MODEL, Config, ConfigError, ModelSampling
from medcot.llm import LLMClient
from medcot.models import ModelHandle
from medcot.store import Store


@dataclass
class RunContext:
    cfg: Config
    store: Store
    out_dir: Path
    progress: bool = True
    client: LLMClient | None = None  # the default model's client (set with `models`)
    models: dict[str, ModelHandle] = field(default_factory=dict)  # every configured model, by name
    sections: dict[str, Any] = field(default_factory=dict)  # stage -> summary for the report
    timings: dict[str, float] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)  # the managed server's settings and why
    skipped: list[str] = field(default_factory=list)  # lines saying what was skipped and why
    failed_stage: str | None = None

    def model(self, name: str = "") -> ModelHandle:
        """The model a stage names ('' = the default model); the clients exist once an LLM stage runs."""
        key = name or DEFAULT_MODEL
        if key not in self.models:
            raise ConfigError(f"unknown model {key!r} (models: {', '.join(self.models) or 'none opened yet'})")
        return self.models[key]


StageFn = Callable[[RunContext], Awaitable[Any]]
STAGES: dict[str, tuple[StageFn, bool]] = {}  # name -> (function, needs the LLM)
WARM: dict[str, str] = {}  # stage -> a heavy module it imports when it runs


def stage(name: str, needs_llm: bool = False, warm: str | None = None) -> Callable[[StageFn], StageFn]:
    """Register a stage. `warm`: a slow-to-import module the stage needs; a run that lists the stage imports it
    in a background thread from the start (while the LLM stages wait on the network), not when the stage
    begins, and `medcot run` start-up never pays for it (Python's import lock makes the stage wait if the
    import is still going)."""
    def register(fn: StageFn) -> StageFn:
        STAGES[name] = (fn, needs_llm)
        if warm:
            WARM[name] = warm
        return fn
    return register


def warm_imports(names: list[str]) -> None:
    for module in dict.fromkeys(WARM[n] for n in names if n in WARM):
        threading.Thread(target=_warm, args=(module,), name=f"warm-{module}", daemon=True).start()


def _warm(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 (the stage imports it again when it runs, and fails there, clearly)
        return


STAGE_ENTRY_POINTS = "medcot.stages"  # each package names, in its pyproject entry points, the modules
# whose @stage functions it contributes (curation, review, release, training, eval): the core never names them.


def _load_stage_modules() -> None:
    for ep in entry_points(group=STAGE_ENTRY_POINTS):
        ep.load()


def check_stages(names: list[str]) -> None:
    _load_stage_modules()
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ConfigError(f"run.stages: unknown stage(s) {unknown} (known: {', '.join(STAGES)})")


class LazyServer:
    """The managed vLLM server, started on the first real request (a rerun of cached work never
    starts it) and stopped when the run ends, whatever the outcome."""

    def __init__(self, cfg: Config, log_dir: Path):
        from medcot.server import VLLMServer
        self.server = VLLMServer(cfg.server, log_path=cfg.server.log_file or log_dir / "vllm.log")
        cfg.llm.endpoints = [self.server.base_url]
        cfg.llm.model = self.server.model_name
        cfg.llm.check_distinct_ids()  # the served name must not be another model's id
        self.started = False
        choice = self.server.cpu_choice
        self.settings = {"dtype": self.server.cfg.dtype, "model": self.server.model_name}
        if choice is not None:
            self.settings.update(reason=choice.reason, threads_bind=choice.threads_bind)
            print(f"vLLM on CPU: --dtype {choice.dtype}, threads on cores {choice.threads_bind} ({choice.reason})",
                  flush=True)

    async def start(self) -> None:
        print(f"starting vLLM ({self.server.model_name}) at {self.server.base_url} ...", flush=True)
        await asyncio.to_thread(self.server.start)
        self.started = True
        print("vLLM server ready", flush=True)

    def stop(self) -> None:
        self.server.stop()


async def _run_stages(ctx: RunContext, names: list[str], server: LazyServer | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for name in names:
            fn, needs_llm = STAGES[name]
            if needs_llm and ctx.client is None:
                await _open_models(ctx, stack, server)
            start = time.perf_counter()
            print(f"== stage {name}", flush=True)
            try:
                ctx.sections[name] = await fn(ctx)
            except Exception as exc:
                ctx.failed_stage = name
                exc.add_note(f"(in stage `{name}`)")
                raise
            ctx.timings[name] = round(time.perf_counter() - start, 2)


async def _open_models(ctx: RunContext, stack: contextlib.AsyncExitStack, server: LazyServer | None) -> None:
    """One client per configured model; the managed server (if any) serves the default model only."""
    llm = ctx.cfg.llm
    ctx.models = {}
    for name in llm.model_names():
        mcfg = llm.for_model(name)
        client = await stack.enter_async_context(LLMClient(mcfg, ctx.store))
        sampling = llm.models[name].sampling if name in llm.models else ModelSampling()
        ctx.models[name] = ModelHandle(name, mcfg.model, client, sampling)
    ctx.client = ctx.models[DEFAULT_MODEL].client
    if server is not None:
        ctx.client.before_first_request = server.start


def run_pipeline(cfg: Config, progress: bool = True) -> dict[str, Any]:
    check_stages(cfg.run.stages)
    out_dir = Path(cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.store.url)
    ctx = RunContext(cfg=cfg, store=store, out_dir=out_dir, progress=progress)
    start = time.perf_counter()
    needs_llm = any(STAGES[n][1] for n in cfg.run.stages)
    warm_imports(cfg.run.stages)
    server = LazyServer(cfg, out_dir / "logs") if needs_llm and cfg.server.managed else None
    if server is not None:
        ctx.server = server.settings
    try:
        asyncio.run(_run_stages(ctx, cfg.run.stages, server))
    finally:
        if server is not None:
            server.stop()
        report = build_report(ctx, time.perf_counter() - start)
        write_report(report, out_dir)
        store.close()
    return report


def build_report(ctx: RunContext, seconds: float) -> dict[str, Any]:
    by_model = {name: {"model": m.model, **m.client.stats.as_dict()} for name, m in ctx.models.items()}
    stats = _total_stats(list(by_model.values())) if by_model else {"requests": 0, "cache_hits": 0}
    return {"config": ctx.cfg.source, "store": ctx.store.url, "seconds": round(seconds, 2),
            "stage_seconds": ctx.timings, "items": ctx.store.count_items(), "stages": ctx.store.stage_counts(),
            "llm": stats, "llm_by_model": by_model, "stored_calls": ctx.store.call_totals(), "sections": ctx.sections,
            "server": ctx.server, "skipped": ctx.skipped, "failed_stage": ctx.failed_stage,
            "completed": list(ctx.sections)}


def _total_stats(per_model: list[dict[str, Any]]) -> dict[str, Any]:
    """The clients' statistics summed (numbers, and per stage)."""
    total: dict[str, Any] = {"by_stage": {}}
    for stats in per_model:
        for key, value in stats.items():
            if key == "by_stage":
                for st, counts in value.items():
                    into = total["by_stage"].setdefault(st, {})
                    for k, v in counts.items():
                        into[k] = into.get(k, 0) + v
            elif isinstance(value, (int, float)):
                total[key] = round(total.get(key, 0) + value, 3)
    return total


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
                                         encoding="utf-8")
    from medcot.report import render_markdown
    path = out_dir / "report.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path

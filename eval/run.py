"""`medcot eval run --config C`: answer every eval item with every model under test, with CoT, through vLLM.

    medcot eval run --config configs/eval/demo.yaml --set release.dir=runs/demo/release

Models come from the config and from a training manifest. With `server.managed` the tool starts one vLLM
server per base model (all its LoRA adapters loaded with --enable-lora) and one per merged checkpoint,
each only when a request misses the cache, and stops it afterwards. Every call is cached in
`<out_dir>/cache.db`, so a rerun costs zero requests. Writes `predictions/<model>.jsonl`, optional
`judge/<model>.jsonl`, `results.json` and `results.md` (accuracy with bootstrap CI, no-answer rate, per
language and specialty).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval import contamination
from eval.config import EvalConfig, ModelSpec
from eval.data import load_eval_sets
from eval.judge import _params, judge_predictions, judge_summary
from eval.models import ServerGroup, fingerprint, manifest_prompt, models_from_manifest, server_groups
from eval.records import EvalItem, JudgeScore, Prediction, write_jsonl
from eval.scoring import metrics_markdown, model_metrics
from medcot.config import ConfigError, to_dict
from medcot.extract import EXTRACTOR_VERSION, extract_answer
from medcot.llm import LLMClient, gather_all
from medcot.prompts import format_options, load_prompt
from medcot.records import ChatRequest, ChatResult
from medcot.server import VLLMServer
from medcot.store import Store

PRED_DIR, JUDGE_DIR = "predictions", "judge"


def resolve_models(cfg: EvalConfig) -> list[ModelSpec]:
    models = list(cfg.models)
    if cfg.manifest:
        models += models_from_manifest(cfg.manifest, cfg.prefer_merged)
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"model name(s) {dup} given twice (config models and manifest runs share names)")
    if not models:
        raise ConfigError("no models to evaluate: set `models` and/or `manifest`")
    return models


def model_identity(spec: ModelSpec, managed: bool) -> str:
    """What the model is, for the cache key: a content fingerprint (adapter and base for LoRA)."""
    if not managed and not Path(spec.path).expanduser().exists():
        return f"remote:{spec.path}"  # served elsewhere: identified by name/path only (recorded as such)
    fp = fingerprint(spec.path)
    return f"{fp}+{fingerprint(spec.base)}" if spec.kind == "lora" else fp


def eval_request(item: EvalItem, request_model: str, cfg: EvalConfig, identity: str) -> ChatRequest:
    prompt = load_prompt(cfg.prompt, item.language)
    messages = prompt.messages(question=item.question, options=format_options(item.options))
    return ChatRequest(messages=messages, model=request_model, params=_params(cfg.sampling),
                       prompt_version=f"{prompt.tag}+model={identity}", stage="eval",
                       item_id=f"{item.set}/{item.id}")


def to_prediction(item: EvalItem, model: str, result: ChatResult, prompt_tag: str) -> Prediction:
    found = extract_answer(result.content, item.options, finish_reason=result.finish_reason)
    return Prediction(set=item.set, id=item.id, model=model, language=item.language, specialty=item.specialty,
                      question=item.question, options=item.options, gold=item.answer, response=result.content,
                      reasoning=result.reasoning, finish_reason=result.finish_reason, prediction=found.letter,
                      matched_by=found.matched_by, correct=None if item.answer is None else found.letter == item.answer,
                      prompt_version=prompt_tag, extractor_version=EXTRACTOR_VERSION, call_id=result.call_id,
                      # no family recorded: the item is its own family
                      family_id=item.family_id or item.id, source=item.source, upstream=item.upstream)


async def generate(client: LLMClient, group: ServerGroup, items: list[EvalItem], cfg: EvalConfig,
                   identities: dict[str, str], progress: bool) -> dict[str, list[Prediction]]:
    """Predictions of every model of the group on every item (concurrently; the client bounds it)."""
    out: dict[str, list[Prediction | None]] = {m.name: [None] * len(items) for m in group.models}
    bar = tqdm(total=len(items) * len(group.models), desc=f"eval {group.served_name}", unit="answer",
               disable=not progress)

    async def one(spec: ModelSpec, i: int, item: EvalItem) -> None:
        req = eval_request(item, group.request_name(spec), cfg, identities[spec.name])
        result = await client.chat(req)
        out[spec.name][i] = to_prediction(item, spec.name, result, req.prompt_version.split("+")[0])
        bar.update(1)

    try:
        await gather_all([one(m, i, it) for m in group.models for i, it in enumerate(items)])
    finally:
        bar.close()
    return {name: [p for p in preds if p is not None] for name, preds in out.items()}


Work = Callable[[LLMClient], Awaitable[Any]]


async def serve_group(group: ServerGroup, cfg: EvalConfig, store: Store, log_dir: Path, work: Work) -> Any:
    """Run ``work`` with a client for the group's server: managed = started on the first cache miss and
    stopped afterwards, whatever happens; unmanaged = cfg.llm.endpoints."""
    server = None
    llm = cfg.llm
    if cfg.server.managed:
        server = VLLMServer(group.server_config(cfg.server), log_path=log_dir / f"vllm-{group.served_name}.log")
        llm = dataclasses.replace(cfg.llm, endpoints=[server.base_url])
    try:
        async with LLMClient(llm, store) as client:
            if server is not None:
                client.before_first_request = lambda: _start(server)
            return await work(client)
    finally:
        if server is not None:
            server.stop()


async def _start(server: VLLMServer) -> None:
    print(f"starting vLLM ({server.model_name}) at {server.base_url} ...", flush=True)
    start = time.perf_counter()
    await asyncio.to_thread(server.start)
    print(f"vLLM ready in {time.perf_counter() - start:.0f} s", flush=True)


def _judge_group(groups: list[ServerGroup], cfg: EvalConfig) -> ServerGroup | None:
    if not cfg.judge.enabled or cfg.judge.endpoints:
        return None
    for g in groups:
        if any(m.name == cfg.judge.model for m in g.models):
            return g
    raise ConfigError(f"judge.model {cfg.judge.model!r} is not one of the models under test and "
                      "judge.endpoints is empty: name a model from `models` or give the judge's endpoints")


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Generate, extract, score (and judge, if enabled); write everything under cfg.out_dir."""
    return asyncio.run(run_eval_async(cfg, progress))


async def run_eval_async(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, models = load_eval_sets(cfg), resolve_models(cfg)
    checked = contamination.gate(cfg, items)  # before any model is served: overlaps refused (exit 2)
    identities = {m.name: model_identity(m, cfg.server.managed) for m in models}
    groups = server_groups(models)
    judge_group = _judge_group(groups, cfg)
    if judge_group is not None:  # the judge's server runs last, so every prediction exists by then
        groups = [g for g in groups if g is not judge_group] + [judge_group]
    store = Store(str(out / "cache.db"))
    preds: dict[str, list[Prediction]] = {}
    judged: dict[str, list[JudgeScore]] = {}
    stats: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        for group in groups:
            async def work(client: LLMClient, group: ServerGroup = group) -> None:
                preds.update(await generate(client, group, items, cfg, identities, progress))
                if group is judge_group:
                    judged.update(await _judge_all(client, group, preds, cfg, identities[cfg.judge.model]))
                stats[group.served_name] = client.stats.as_dict()
            await serve_group(group, cfg, store, out / "logs", work)
        if cfg.judge.enabled and cfg.judge.endpoints:
            judged.update(await _judge_external(preds, cfg, store))
    finally:
        store.close()
    return write_outputs(cfg, models, identities, preds, judged, stats, time.perf_counter() - start, checked)


async def _judge_all(client: LLMClient, group: ServerGroup, preds: dict[str, list[Prediction]],
                     cfg: EvalConfig, identity: str) -> dict[str, list[JudgeScore]]:
    spec = next(m for m in group.models if m.name == cfg.judge.model)
    flat = [p for name in preds for p in preds[name]]
    scores = await judge_predictions(client, flat, cfg.judge, group.request_name(spec), identity)
    return _by_model(scores, preds)


async def _judge_external(preds: dict[str, list[Prediction]], cfg: EvalConfig, store: Store) -> dict[str, Any]:
    llm = dataclasses.replace(cfg.llm, endpoints=list(cfg.judge.endpoints))
    async with LLMClient(llm, store) as client:
        flat = [p for name in preds for p in preds[name]]
        scores = await judge_predictions(client, flat, cfg.judge, cfg.judge.model, f"remote:{cfg.judge.model}")
        return _by_model(scores, preds)


def _by_model(scores: list[JudgeScore], preds: dict[str, list[Prediction]]) -> dict[str, list[JudgeScore]]:
    return {name: [s for s in scores if s.model == name] for name in preds}


def write_outputs(cfg: EvalConfig, models: list[ModelSpec], identities: dict[str, str],
                  preds: dict[str, list[Prediction]], judged: dict[str, list[JudgeScore]],
                  stats: dict[str, Any], seconds: float,
                  checked: contamination.CheckResult | None = None) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    boot = cfg.bootstrap
    results: dict[str, Any] = {"config": cfg.source, "extractor_version": EXTRACTOR_VERSION,
                               "prompt": cfg.prompt, "seconds": round(seconds, 2), "llm": stats, "models": {},
                               "contamination": contamination.results_record(checked, cfg.contamination.allow_overlap)}
    dirty = checked.overlapping_keys() if checked is not None else set()
    for spec in models:
        write_jsonl(out / PRED_DIR / f"{spec.name}.jsonl", preds[spec.name])
        info: dict[str, Any] = {"kind": spec.kind, "path": spec.path, "base": spec.base, "arm": spec.arm,
                                "seed": spec.seed, "identity": identities[spec.name],
                                "predictions": str(out / PRED_DIR / f"{spec.name}.jsonl"),
                                "sets": model_metrics(preds[spec.name], boot)}
        if dirty:  # --allow-overlap: accuracy on the clean and on the contaminated items, apart
            info["contamination"] = contamination.split_metrics(preds[spec.name], dirty, boot)
        if spec.name in judged:
            write_jsonl(out / JUDGE_DIR / f"{spec.name}.jsonl", judged[spec.name])
            info["judge"] = judge_summary(judged[spec.name], boot.resamples, boot.seed)
        results["models"][spec.name] = info
    results["settings"] = {k: to_dict(cfg)[k] for k in ("release", "external", "sampling", "bootstrap", "judge")}
    trained_with = manifest_prompt(cfg.manifest) if cfg.manifest else None
    results["notes"] = [f"the trained arms used prompt {trained_with!r}, this eval used {cfg.prompt!r}"] \
        if trained_with and trained_with != cfg.prompt else []
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(results_markdown(results), encoding="utf-8")
    return results


def results_markdown(results: dict[str, Any]) -> str:
    lines = ["# medcot eval results", "", f"- extractor: `{results['extractor_version']}`; prompt: "
             f"`{results['prompt']}`; no-answer counts as wrong and is reported on its own", "",
             metrics_markdown(results), ""] + [f"**Note:** {n}" for n in results["notes"]]
    if "contamination" in results:
        lines += ["", *contamination.markdown_lines(results["contamination"], results["models"])]
    judged = {m: i["judge"] for m, i in results["models"].items() if "judge" in i}
    if judged:
        lines += ["## LLM judge (mean rubric total, 0-10)", "", "| model | judged | failures | total [CI] |",
                  "|---|---|---|---|"]
        for model, j in judged.items():
            t = j["total"]
            lines.append(f"| {model} | {j['judged']} | {j['failures']} | {_ci(t)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _ci(e: dict[str, Any]) -> str:
    return "n/a" if e["n"] == 0 else f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"

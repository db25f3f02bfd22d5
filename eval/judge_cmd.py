"""`medcot eval judge --config C`: the LLM judge on its own.

    medcot eval judge --config configs/eval/demo.yaml                        # every predictions/*.jsonl
    medcot eval judge --config C --predictions runs/eval/predictions/base.jsonl
    medcot eval judge --config C --release runs/demo/release --release-config panel   # judge vs experts

On predictions it writes `judge/<model>.jsonl` and `judge/summary.json`. On a release it judges each
row's `cot` where experts scored the rubric and writes `judge/agreement.json`: quadratic-weighted kappa
per dimension between the judge and the experts, so users know how far to trust the judge.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from eval.config import EvalConfig, ReleaseSource
from eval.data import _letter, release_rows
from eval.judge import agreement, expert_scores, judge_one, judge_predictions, judge_request, judge_summary
from eval.models import server_groups
from eval.records import JudgeScore, Prediction, read_records, write_jsonl
from eval.run import JUDGE_DIR, PRED_DIR, Work, model_identity, resolve_models, serve_group
from medcot.config import ConfigError
from medcot.llm import LLMClient, gather_all
from medcot.store import Store


def _with_judge(cfg: EvalConfig, store: Store, work: Any) -> Any:
    """Run work(client, request_model, identity) against the judge: external endpoints, or the managed server of
    the config model named by judge.model (started only if a request misses the cache)."""
    if not cfg.judge.model:
        raise ConfigError("judge.model is empty")
    if cfg.judge.endpoints:
        async def external() -> Any:
            llm = dataclasses.replace(cfg.llm, endpoints=list(cfg.judge.endpoints))
            async with LLMClient(llm, store) as client:
                return await work(client, cfg.judge.model, f"remote:{cfg.judge.model}")
        return asyncio.run(external())
    spec = next((m for m in resolve_models(cfg) if m.name == cfg.judge.model), None)
    if spec is None:
        raise ConfigError(f"judge.model {cfg.judge.model!r} is not in `models` and judge.endpoints is empty")
    group = server_groups([spec])[0]
    identity = model_identity(spec, cfg.server.managed)
    call: Work = lambda client: work(client, group.request_name(spec), identity)  # noqa: E731
    return asyncio.run(serve_group(group, cfg, store, Path(cfg.out_dir) / "logs", call))


def judge_files(cfg: EvalConfig, files: list[Path]) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    files = files or sorted((out / PRED_DIR).glob("*.jsonl"))
    if not files:
        raise ConfigError(f"no predictions to judge in {out / PRED_DIR} (run `medcot eval run` first)")
    preds = [p for f in files for p in read_records(f, Prediction)]
    store = Store(str(out / "cache.db"))
    try:
        scores: list[JudgeScore] = _with_judge(cfg, store, lambda c, m, i: judge_predictions(c, preds, cfg.judge, m, i))
    finally:
        store.close()
    summary = {}
    for model in sorted({p.model for p in preds}):
        mine = [s for s in scores if s.model == model]
        write_jsonl(out / JUDGE_DIR / f"{model}.jsonl", mine)
        summary[model] = judge_summary(mine, cfg.bootstrap.resamples, cfg.bootstrap.seed)
    (out / JUDGE_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def judge_release(cfg: EvalConfig, src: ReleaseSource) -> dict[str, Any]:
    """Judge the release's own CoTs where experts scored them; agreement per dimension."""
    rows, features = release_rows(src)
    names = getattr(features.get("answer"), "names", None)
    todo = [(r, ex) for r in rows if r.get("cot") and (ex := expert_scores(r))]
    if not todo:
        raise ConfigError(f"release {src.dir!r} config {src.config!r} split {src.split!r}: no row has both a "
                          "`cot` and expert rubric scores (rubric entries with rater_kind expert/human)")
    out = Path(cfg.out_dir)

    async def work(client: LLMClient, model: str, identity: str) -> list[JudgeScore]:
        results: list[JudgeScore | None] = [None] * len(todo)

        async def one(i: int, row: dict[str, Any]) -> None:
            options = {k: v for k, v in row["options"].items() if v}
            req = judge_request(question=row["question"], options=options, answer=_letter(row["answer"], names, row["id"]),
                                cot=row["cot"], language=row["language"], cfg=cfg.judge, model=model,
                                item_id=f"release/{row['id']}", identity=identity)
            results[i] = await judge_one(client, req, set_name=f"{src.config}/{src.split}", item_id=str(row["id"]),
                                         model="release", judge_name=cfg.judge.model)
        await gather_all([one(i, r) for i, (r, _) in enumerate(todo)], desc="judge release", unit="row")
        return [s for s in results if s is not None]

    store = Store(str(out / "cache.db"))
    try:
        scores = _with_judge(cfg, store, work)
    finally:
        store.close()
    write_jsonl(out / JUDGE_DIR / "release.jsonl", scores)
    result = {"release": src.dir, "config": src.config, "split": src.split, "items": len(todo),
              "judge": cfg.judge.model, "failures": sum(s.error is not None for s in scores),
              "agreement": agreement([(s, ex) for s, (_, ex) in zip(scores, todo)])}
    (out / JUDGE_DIR / "agreement.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result

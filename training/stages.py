"""The `train` stage of `medcot run`: SFT baselines on the release the `build` stage just wrote.

Imported by every pipeline run (stage registration), so the heavy imports stay inside the function.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from medcot.config import ConfigError
from medcot.pipeline import RunContext, stage


def release_dir(ctx: RunContext) -> str:
    """train.release_dir, else the build stage's release_dir (build must run before train)."""
    if ctx.cfg.train.release_dir:
        return ctx.cfg.train.release_dir
    found = (ctx.sections.get("build") or {}).get("release_dir")
    if not found:
        raise ConfigError("the train stage needs a release: put `build` before `train` in run.stages, "
                          "or set train.release_dir")
    return str(found)


def train_config(ctx: RunContext) -> Any:
    from training.config import load_train_config
    cfg = load_train_config(ctx.cfg.train.config)
    cfg.data.release_dir = release_dir(ctx)
    cfg.output.dir = ctx.cfg.train.out_dir or str(Path(ctx.out_dir) / "train")
    return cfg


@stage("train")
async def _train(ctx: RunContext) -> dict[str, Any]:
    from training.data import NoTrainingData
    cfg = train_config(ctx)
    try:
        return await _train_runs(ctx, cfg)
    except NoTrainingData as exc:
        line = f"train: nothing to train on, no run made ({exc})"
        ctx.skipped.append(line)
        return {"skipped": str(exc), "markdown": line}


async def _train_runs(ctx: RunContext, cfg: Any) -> dict[str, Any]:
    if ctx.cfg.train.matrix:
        from training.matrix import run_matrix
        manifest = await asyncio.to_thread(run_matrix, cfg)
        return {"manifest": manifest["path"], "n_per_arm": manifest["n_per_arm"], "runs": [
            {"name": r["name"], "final_loss": r["metrics"].get("final_loss"),
             "tokens_per_s": r["metrics"].get("tokens_per_s"), "reused": r["reused"]} for r in manifest["runs"]]}
    from training.train import train_one
    result = await asyncio.to_thread(train_one, cfg)
    return {"arm": result.arm, "seed": result.seed, "n_examples": result.n_examples, "log": result.log_json,
            "adapter_dir": result.adapter_dir, "merged_dir": result.merged_dir,
            "final_loss": result.metrics.get("final_loss"), "tokens_per_s": result.metrics.get("tokens_per_s")}

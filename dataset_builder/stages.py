"""Pipeline stage `build`: the release from the run's store into <run.out_dir>/release."""
from __future__ import annotations

import asyncio
from typing import Any

from medcot.pipeline import RunContext, stage


async def build_stage(ctx: RunContext, folder: str = "release") -> dict[str, Any]:
    # imported here: the builder pulls in datasets, pandas and matplotlib (~3 s), which every `medcot run` would
    # otherwise pay at start-up when the stages register, whether it builds or not
    from dataset_builder.build import build_release
    result = await asyncio.to_thread(build_release, ctx.store, ctx.cfg.build, ctx.out_dir / folder)
    summary = result.summary()
    return {"release_dir": summary["release_dir"], "markdown": summary["markdown"]}


@stage("build", warm="dataset_builder.build")
async def _build(ctx: RunContext) -> dict[str, Any]:
    return await build_stage(ctx)


@stage("export", warm="dataset_builder.build")
async def _export(ctx: RunContext) -> dict[str, Any]:
    """The same release builder as the `build` stage, kept under its old name for configs that list `export`;
    configs whose later stages read the release (train, eval) list `build`."""
    return await build_stage(ctx)

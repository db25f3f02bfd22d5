"""Pipeline stage `build`: the release from the run's store into <run.out_dir>/release."""
from __future__ import annotations

import asyncio
from typing import Any

from curation.pipeline import RunContext, stage
from dataset_builder.build import build_release


async def build_stage(ctx: RunContext, folder: str = "release") -> dict[str, Any]:
    result = await asyncio.to_thread(build_release, ctx.store, ctx.cfg.build, ctx.out_dir / folder)
    summary = result.summary()
    return {"release_dir": summary["release_dir"], "markdown": summary["markdown"]}


@stage("build")
async def _build(ctx: RunContext) -> dict[str, Any]:
    return await build_stage(ctx)

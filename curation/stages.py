"""The curation stages of `medcot run` (registered through the `medcot.stages` entry point): seeds import and
CoT generation here; expansion, specialty and five-strike register themselves in their own modules."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from curation import expand, specialty, strikes  # noqa: F401  (their @stage functions register on import)
from medcot.pipeline import RunContext, stage
from medcot.seeds import excluded_ids, import_seeds


@stage("seeds")
async def seeds_stage(ctx: RunContext) -> dict[str, Any]:
    imported = {}
    held_out = excluded_ids(ctx.cfg.seeds.exclude)  # held-out eval items: never curated
    for path in ctx.cfg.seeds.files:
        imported[path] = import_seeds(Path(path), ctx.store, limit=ctx.cfg.seeds.per_file_limit, skip_existing=True,
                                      exclude=held_out)
    return {"imported": imported, "items_in_store": ctx.store.count_items()}


@stage("generate", needs_llm=True)
async def generate_stage(ctx: RunContext) -> dict[str, Any]:
    from curation.generate import run_generate, summary_dict
    m = ctx.model(ctx.cfg.generate.model)
    summary = await run_generate(ctx.store, m.client, m.tuned(ctx.cfg.generate, "sampling"), m.model, ctx.progress)
    return {**summary_dict(summary), "model": m.label}

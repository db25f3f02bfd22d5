"""The `eval` stage of `medcot run`: evaluate the base model and the trained arms, then compare the arms.

It reads the release folder of the `build` stage and the manifest of the `train` stage when this run
produced them (else whatever the eval config names), runs the eval config of `eval.config` with its
limits from `eval.max_items` / `eval.max_tokens` into `<run.out_dir>/eval`, and, when a manifest pairs
validated and unvalidated runs, writes the comparison report. Every model sharing a base is served by ONE
vLLM server with all LoRA adapters loaded; a rerun is answered from `<out>/eval/cache.db`.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from medcot.config import load_config
from medcot.pipeline import RunContext, stage


def stage_config(ctx: RunContext) -> tuple[EvalConfig, list[str]]:
    """The eval config with the run's release, manifest, output folder and limits; notes on what was used."""
    scfg = ctx.cfg.eval
    cfg: EvalConfig = load_config(scfg.config, cls=EvalConfig)
    cfg.out_dir = str(ctx.out_dir / "eval")
    notes = []
    release = (ctx.sections.get("build") or {}).get("release_dir")
    if release:
        cfg.release.dir = str(release)
        notes.append(_pick_split(cfg, ctx))
    elif cfg.release.dir:
        notes.append(f"release from the eval config: `{cfg.release.dir}` (the build stage did not run)")
    else:
        notes.append("no release (the build stage did not run): external sets only")
    manifest = (ctx.sections.get("train") or {}).get("manifest")
    if manifest:
        cfg.manifest = str(manifest)
    notes.append(f"manifest: `{cfg.manifest}`" if cfg.manifest else "no training manifest: the base model only")
    if scfg.max_items is not None:
        cfg.release.limit = min(cfg.release.limit or scfg.max_items, scfg.max_items)
        cfg.external = [dataclasses.replace(e, limit=min(e.limit or scfg.max_items, scfg.max_items))
                        for e in cfg.external]
    if scfg.max_tokens is not None:
        cfg.sampling.max_tokens = scfg.max_tokens
    return cfg, notes


def _pick_split(cfg: EvalConfig, ctx: RunContext) -> str:
    """Evaluate on what the release has: the configured config/split, else a held-out fallback, said aloud."""
    from eval.data import choose_release_split
    want = (cfg.release.config, cfg.release.split)
    if not (Path(cfg.release.dir) / "README.md").is_file():  # not a release: loading it will say so
        return f"release: `{cfg.release.dir}` ({want[0]}/{want[1]})"
    got = choose_release_split(cfg.release.dir, *want)
    if got == want:
        return f"release: `{cfg.release.dir}` ({want[0]}/{want[1]})"
    if got is None:
        cfg.release.dir = ""
        line = (f"release `{ctx.sections['build']['release_dir']}` has no held-out rows (no test or validation "
                f"split in any config): evaluated on the external sets only")
    else:
        cfg.release.config, cfg.release.split = got
        line = (f"release `{cfg.release.dir}`: {want[0]}/{want[1]} has no rows; evaluated on {got[0]}/{got[1]} "
                f"instead (held-out families, never trained on)")
    ctx.skipped.append(f"eval: {line}")
    return line


@stage("eval", needs_llm=False)
async def eval_stage(ctx: RunContext) -> dict[str, Any]:
    from eval.compare import compare
    from eval.run import run_eval_async
    from eval.scoring import metrics_markdown
    cfg, notes = stage_config(ctx)
    results = await run_eval_async(cfg, ctx.progress)
    out = Path(cfg.out_dir)
    section: dict[str, Any] = {"results": str(out / "results.json"), "predictions": str(out / "predictions"),
                               "models": list(results["models"])}
    calls = {k: sum(v.get(k, 0) for v in results["llm"].values()) for k in ("requests", "cache_hits")}
    section["llm"] = calls
    parts = ["Eval (`" + ctx.cfg.eval.config + "`): " + "; ".join(notes) + ".",
             f"Eval LLM requests: {calls['requests']} (cache hits {calls['cache_hits']}); "
             f"{results['seconds']} s. No-answer counts as wrong and is reported on its own.", "",
             metrics_markdown(results)]
    if cfg.manifest:
        comparison = await asyncio.to_thread(compare, cfg.manifest, str(out), str(out / "comparison"), cfg.bootstrap)
        section["comparison"] = comparison["report"]
        section["comparison_html"] = comparison["html"]
        parts += ["", f"Comparison report: `{comparison['report']}` (HTML: `{comparison['html']}`)", "",
                  _pooled_line(comparison)]
    section["markdown"] = "\n".join(parts)
    return section


def _pooled_line(comparison: dict[str, Any]) -> str:
    from eval.compare import headline_lines
    return "\n".join(headline_lines(comparison))

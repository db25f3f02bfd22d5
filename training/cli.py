"""``medcot train``: one SFT run, or ``medcot train matrix``: arms x seeds with a manifest."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click


def _summary(result: Any) -> str:
    m = result.metrics
    state = "reused (already trained)" if result.skipped else "trained"
    return (f"{result.arm} seed {result.seed}: {state}, N={result.n_examples}, loss {m.get('first_loss')} -> "
            f"{m.get('final_loss')}, {m.get('tokens_per_s')} tokens/s\n  log: {result.log_json}\n  "
            f"{'adapter: ' + result.adapter_dir if result.adapter_dir else 'model: ' + str(result.model_dir)}"
            + (f"\n  merged: {result.merged_dir}" if result.merged_dir else ""))


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """curation's guard (config/LLM errors -> exit codes) plus release rows that cannot be formatted."""
    from medcot.cli import run_guarded
    from training.format import FormatError
    return run_guarded(fn, *args, _errors=((FormatError, "release row rejected", 2),), **kwargs)


def register(main: click.Group) -> None:
    from medcot.cli import config_option, get_config, set_option
    from training.config import TrainConfig

    @main.group("train", invoke_without_command=True)
    @config_option
    @set_option
    @click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
    @click.pass_context
    def train(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
        """Fine-tune (TRL SFT, LoRA or full) on one arm of a release: `medcot train --config C`.

        `medcot train matrix --config C` runs arms x seeds at equal N and writes manifest.json.
        """
        if ctx.invoked_subcommand is not None:
            return
        if not config_path:
            raise click.UsageError("--config is required (e.g. configs/train/demo.yaml)")
        from training.train import train_one
        cfg = get_config(config_path, overrides, cls=TrainConfig)
        result = _guarded(train_one, cfg)
        click.echo(json.dumps(asdict(result), indent=2, default=str) if as_json else _summary(result))

    @train.command("matrix")
    @config_option
    @set_option
    @click.option("--no-resume", is_flag=True, help="Retrain runs that already finished.")
    def matrix(config_path: str | None, overrides: tuple[str, ...], no_resume: bool) -> None:
        """Arms {validated, unvalidated} x seeds at equal N, identical hyperparameters; writes manifest.json."""
        if not config_path:
            raise click.UsageError("--config is required (e.g. configs/train/demo.yaml)")
        from training.matrix import run_matrix
        cfg = get_config(config_path, overrides, cls=TrainConfig)
        manifest = _guarded(run_matrix, cfg, resume=not no_resume)
        click.echo(f"N per arm: {manifest['n_per_arm']}; runs: {len(manifest['runs'])}")
        for run in manifest["runs"]:
            m = run["metrics"]
            click.echo(f"  {run['name']}: final loss {m.get('final_loss')}, {m.get('tokens_per_s')} tokens/s"
                       + (" (reused)" if run["reused"] else ""))
        click.echo(f"manifest: {manifest['path']}")

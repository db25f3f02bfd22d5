"""The `medcot` command line."""
from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from curation.config import Config, ConfigError, load_config

EXIT_BAD_INPUT = 2
EXIT_LLM_DOWN = 3

config_option = click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
                             help="YAML config (defaults < YAML < --set).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config value, e.g. --set llm.concurrency=8 (repeatable).")
store_option = click.option("--store", "store_url", help="Store URL or SQLite file (overrides store.url).")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def get_config(config_path: str | None, overrides: tuple[str, ...] = (), store_url: str | None = None,
               cls: type = Config) -> Any:
    sets = list(overrides) + ([f"store.url={store_url}"] if store_url else [])
    try:
        return load_config(config_path, sets, cls=cls)
    except ConfigError as exc:
        fail(str(exc))


def run_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a command body, turning known faults into clear messages and exit codes."""
    from curation.llm import LLMError
    from curation.seeds import SeedError
    try:
        return fn(*args, **kwargs)
    except SeedError as exc:
        fail(f"seed file rejected, nothing was written:\n{exc}")
    except ConfigError as exc:
        fail(str(exc))
    except _release_errors() as exc:
        fail(f"release build refused: {exc}")
    except LLMError as exc:
        fail(f"{exc}\nEverything finished before this is saved in the store; rerun the same command to resume.",
             EXIT_LLM_DOWN)


def _release_errors() -> tuple[type[Exception], ...]:
    from dataset_builder.build import BuildError
    from dataset_builder.integrity import ReleaseIntegrityError
    return (BuildError, ReleaseIntegrityError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medcot")
def main() -> None:
    """medcot: build a human-verified medical chain-of-thought dataset with an LLM and expert reviewers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally` blocks (stop servers) on SIGTERM


@main.group()
def seeds() -> None:
    """Import and validate seed questions."""


@seeds.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@config_option
@click.option("--limit", type=int, default=None, help="Import only the first N seeds of the file.")
def seeds_import(file: Path, store_url: str | None, config_path: str | None, limit: int | None) -> None:
    """Validate FILE (JSONL in the shared/data schema, or CSV) and import it. Any error: exit 2, nothing written."""
    from curation.seeds import import_seeds
    from curation.store import Store
    cfg = get_config(config_path, store_url=store_url)
    store = Store(cfg.store.url)
    n = run_guarded(import_seeds, file, store, limit=limit)
    click.echo(f"imported {n} seed(s) from {file} into {store.url}")


@main.command()
@config_option
@set_option
def serve(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Start the vLLM OpenAI-compatible server of the config (127.0.0.1) until Ctrl-C."""
    from curation.server import ServerError, VLLMServer
    cfg = get_config(config_path, overrides)
    if not cfg.server.model:
        fail("server.model is empty: name a model folder or Hub id in the config")
    try:
        with VLLMServer(cfg.server, log_path=cfg.server.log_file or Path(cfg.run.out_dir) / "logs" / "vllm.log") as srv:
            click.echo(f"serving {srv.model_name} at {srv.base_url} (Ctrl-C to stop)")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except ServerError as exc:
        fail(str(exc), EXIT_LLM_DOWN)
    click.echo("server stopped")


@main.group()
def curate() -> None:
    """LLM curation stages (each resumable item by item)."""


@curate.command()
@config_option
@set_option
@store_option
def generate(config_path: str | None, overrides: tuple[str, ...], store_url: str | None) -> None:
    """Generate a chain of thought for every item that has none yet."""
    cfg = get_config(config_path, overrides, store_url)
    report = run_guarded(_run_stages, cfg, ["generate"])
    click.echo(json.dumps(report["sections"].get("generate", {}), ensure_ascii=False))


def _run_stages(cfg: Config, names: list[str]) -> dict[str, Any]:
    from curation.pipeline import run_pipeline
    cfg.run.stages = names
    return run_pipeline(cfg)


@main.command()
@config_option
@set_option
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(config_path: str | None, overrides: tuple[str, ...], no_progress: bool) -> None:
    """The main job: every stage of run.stages, end to end, then a report."""
    from curation.pipeline import run_pipeline
    cfg = get_config(config_path, overrides)
    report = run_guarded(run_pipeline, cfg, progress=not no_progress)
    out = Path(cfg.run.out_dir)
    click.echo(f"\nreport: {out / 'report.md'}")
    for key in ("dataset_dir", "release_dir"):
        for section in report["sections"].values():
            if isinstance(section, dict) and key in section:
                click.echo(f"dataset folder: {section[key]}")
    click.echo(f"LLM requests this run: {report['llm'].get('requests', 0)}; "
               f"cache hits: {report['llm'].get('cache_hits', 0)}; items: {report['items']}")
    if cfg.server.managed:
        click.echo("This was the embedded CPU default (small model, few items). Full size: serve DeepSeek-R1 with "
                   "vLLM on GPUs and run `medcot run --config configs/deepseek-r1.yaml` (see README).")


@main.command()
@store_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(store_url: str | None, config_path: str | None, as_json: bool) -> None:
    """Counts of items per stage and of stored LLM calls."""
    from curation.store import Store
    cfg = get_config(config_path, store_url=store_url)
    store = Store(cfg.store.url)
    info = {"store": store.url, "items": store.count_items(), "stages": store.stage_counts(),
            "llm_calls": store.call_totals()}
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    click.echo(f"store: {info['store']}\nitems: {info['items']}")
    for name, n in sorted(info["stages"].items()):
        click.echo(f"  {name}: {n}")
    click.echo(f"LLM calls stored: {info['llm_calls']['calls']}")


# Commands that live in the other packages register themselves here.
_EXTENSIONS = ["dataset_builder.cli", "training.cli", "eval.cli", "curation.review.cli", "curation.curate_cli"]


def _register_extensions() -> None:
    for name in _EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(main)


_register_extensions()

if __name__ == "__main__":
    main()

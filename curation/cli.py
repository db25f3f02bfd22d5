"""`medcot seeds import` and `medcot curate generate | expand | specialty | strikes`, registered on the root
command group through the `medcot.cli` entry point.

Each curate command runs one stage of the pipeline on the configured store (the managed vLLM server is started
only if a request is actually made) and prints the stage's summary as one JSON line; the markdown report goes
to run.out_dir like `medcot run`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from medcot.cli import config_option, get_config, run_guarded, run_stages, set_option, store_option


@click.group()
def seeds() -> None:
    """Import and validate seed questions."""


@seeds.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@config_option
@click.option("--limit", type=int, default=None, help="Import only the first N seeds of the file.")
def seeds_import(file: Path, store_url: str | None, config_path: str | None, limit: int | None) -> None:
    """Validate FILE (JSONL in the shared/data schema, or CSV) and import it. Any error: exit 2, nothing written."""
    from medcot.seeds import import_seeds
    from medcot.store import Store
    cfg = get_config(config_path, store_url=store_url)
    store = Store(cfg.store.url)
    n = run_guarded(import_seeds, file, store, limit=limit)
    click.echo(f"imported {n} seed(s) from {file} into {store.url}")


@click.group()
def curate() -> None:
    """LLM curation stages (each resumable item by item)."""


def _stage_command(name: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @config_option
    @set_option
    @store_option
    def command(config_path: str | None, overrides: tuple[str, ...], store_url: str | None) -> None:
        cfg = get_config(config_path, overrides, store_url)
        report = run_guarded(run_stages, cfg, [name])
        section: dict[str, Any] = dict(report["sections"].get(name, {}))
        section.pop("markdown", None)
        click.echo(json.dumps(section, ensure_ascii=False, default=str))
    return command


STAGE_COMMANDS = {
    "generate": "Generate a chain of thought for every item that has none yet.",
    "expand": "Grow every seed family by expand.factor new questions (facts -> questions -> checks), then answer "
              "the new items with a CoT. Resumable per family.",
    "specialty": "Give every item one specialty of the taxonomy (source-subject map, else the LLM with structured "
                 "output).",
    "strikes": "Five-strike re-answering of eligible items in waves; five failures escalate an item to the expert "
               "panel. Resumable per attempt.",
}
for _name, _doc in STAGE_COMMANDS.items():
    curate.add_command(_stage_command(_name, _doc))


@curate.command("import-cot")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@config_option
def import_cot(file: Path, store_url: str | None, config_path: str | None) -> None:
    """Import items that already have a chain of thought (JSONL: id, question, options, answer, language, cot;
    optional reasoning, model, source) at stage "generated", ready for review and five-strike, without
    regenerating them. Seed rules apply; any error: exit 2 naming file, line and field, nothing written."""
    from curation.import_cot import import_cots
    from medcot.cli import EXIT_BAD_INPUT
    from medcot.seeds import SeedError
    from medcot.store import Store
    cfg = get_config(config_path, store_url=store_url)
    store = Store(cfg.store.url)
    summary = run_guarded(import_cots, file, store,
                          _errors=((SeedError, "CoT file rejected, nothing was written", EXIT_BAD_INPUT),))
    click.echo(summary.line(file, store.url))


def register(main: click.Group) -> None:
    main.add_command(seeds)
    main.add_command(curate)

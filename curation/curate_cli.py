"""`medcot curate expand | specialty | strikes`: the issue-3 stages as commands on the `curate` group.

Each runs one stage of the pipeline on the configured store (the managed vLLM server is started only if a
request is actually made) and prints the stage's summary as one JSON line; the markdown report goes to
run.out_dir like `medcot run`.
"""
from __future__ import annotations

import json
from typing import Any

import click

from curation.cli import _run_stages, config_option, get_config, run_guarded, set_option, store_option


def _stage_command(name: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @config_option
    @set_option
    @store_option
    def command(config_path: str | None, overrides: tuple[str, ...], store_url: str | None) -> None:
        cfg = get_config(config_path, overrides, store_url)
        report = run_guarded(_run_stages, cfg, [name])
        section: dict[str, Any] = dict(report["sections"].get(name, {}))
        section.pop("markdown", None)
        click.echo(json.dumps(section, ensure_ascii=False, default=str))
    return command


expand = _stage_command("expand", "Grow every seed family by expand.factor new questions (facts -> questions -> "
                                  "checks), then answer the new items with a CoT. Resumable per family.")
specialty = _stage_command("specialty", "Give every item one specialty of the taxonomy (source-subject map, "
                                        "else the LLM with structured output).")
strikes = _stage_command("strikes", "Five-strike re-answering of eligible items in waves; five failures "
                                    "escalate an item to the expert panel. Resumable per attempt.")


def register(main: click.Group) -> None:
    curate = main.commands["curate"]
    assert isinstance(curate, click.Group)
    for command in (expand, specialty, strikes):
        curate.add_command(command)

"""`medcot eval ...`: run, extract, compare, judge, submit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from medcot.cli import EXIT_BAD_INPUT, EXIT_LLM_DOWN, config_option, fail, get_config, run_guarded, set_option


def _cfg(config_path: str | None, overrides: tuple[str, ...]) -> Any:
    from eval.config import EvalConfig
    return get_config(config_path, overrides, cls=EvalConfig)


def _guarded(fn: Any, *args: Any, _extra: tuple[type[Exception], ...] = (), **kwargs: Any) -> Any:
    """Known faults of the eval harness become clear messages (exit 2 bad input, 3 server down)."""
    from eval.compare import CompareError
    from eval.data import EvalDataError
    from eval.models import ManifestError
    from eval.schema_check import SchemaError
    from medcot.server import BadServerSetup, ServerError
    bad = (EvalDataError, ManifestError, CompareError, SchemaError, FileNotFoundError, BadServerSetup, *_extra)
    return run_guarded(fn, *args, _errors=((bad, "", EXIT_BAD_INPUT), (ServerError, "", EXIT_LLM_DOWN)), **kwargs)


def register(main: click.Group) -> None:
    main.add_command(eval_group)


@click.group("eval")
def eval_group() -> None:
    """Evaluate models: accuracy with CIs, answer extraction, judge, paired comparison, submissions."""


@eval_group.command("run")
@config_option
@set_option
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--allow-overlap", is_flag=True,
              help="Evaluate despite a contamination overlap; contaminated items are reported apart.")
def run_cmd(config_path: str | None, overrides: tuple[str, ...], no_progress: bool, allow_overlap: bool) -> None:
    """Check contamination, then serve each model with vLLM, answer every eval item with CoT, score (accuracy,
    CI, no-answer rate). Eval items overlapping training data: exit 2 before any model is served."""
    from eval.run import run_eval
    cfg = _cfg(config_path, overrides)
    cfg.contamination.allow_overlap = cfg.contamination.allow_overlap or allow_overlap
    results = _guarded(run_eval, cfg, progress=not no_progress)
    from eval.scoring import metrics_markdown
    click.echo(metrics_markdown(results))
    click.echo(f"\nresults: {Path(cfg.out_dir) / 'results.md'}")


@eval_group.command("contamination")
@click.option("--eval", "eval_file", default=None, type=click.Path(dir_okay=False),
              help="Eval file in the seed JSONL/CSV schema (what eval `external` sets read).")
@click.option("--release-split", default=None,
              help="Check the release's own split (e.g. test), instead of --eval, against its other splits.")
@click.option("--store", "store_url", default="", help="Curation store (URL or SQLite path) to compare with.")
@click.option("--release", "release_dir", default="", help="Release folder to compare with (every config and split).")
@click.option("--seeds-from", multiple=True, type=click.Path(dir_okay=False),
              help="Curation config whose imported seeds (seeds.files minus seeds.exclude) to compare with.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def contamination_cmd(eval_file: str | None, release_split: str | None, store_url: str, release_dir: str,
                      seeds_from: tuple[str, ...], as_json: bool) -> None:
    """Eval items vs the store, the release and curation seeds (same id, same stem, near duplicate).
    Exit 0 when clean, 2 when any overlap or on bad input."""
    import sys

    from eval import contamination as con
    if (eval_file is None) == (release_split is None):
        fail("give exactly one of --eval FILE or --release-split SPLIT (with --release DIR)")
    if release_split is not None and not release_dir:
        fail("--release-split needs --release DIR")

    def run() -> Any:
        refs = con.load_references(store=store_url, release=release_dir, seeds_from=seeds_from)
        if eval_file is not None:
            return con.check([(con.load_eval_file(eval_file), None)], eval_file, refs)
        items = con.load_release_split(release_dir, release_split or "")
        return con.check([(items, release_split)], f"{release_dir}:{release_split}", refs)

    result = _guarded(run)
    click.echo(con.to_json(result) if as_json else con.table(result))
    sys.exit(0 if result.clean else EXIT_BAD_INPUT)


@eval_group.command("extract")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL: id, response, options (and optional finish_reason) per line; other fields pass through.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL: each input line plus answer (letter or null) and matched_by.")
@click.option("--answer-field", default="answer", show_default=True,
              help="Output field of the extracted letter (when the input already has an `answer`, e.g. the gold).")
def extract_cmd(input_path: Path, output_path: Path, answer_field: str) -> None:
    """The project's answer extractor on a file. A bad line: exit 2, nothing written."""
    from eval.extract_cmd import ExtractInputError, extract_file
    if not input_path.is_file():
        fail(f"{input_path}: no such file")
    try:
        counts = extract_file(input_path, output_path, answer_field)
    except (ExtractInputError, UnicodeDecodeError) as exc:
        fail(f"input rejected, nothing was written:\n{exc}")
    click.echo(json.dumps(counts))


@eval_group.command("compare")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False), help="Training manifest.json.")
@click.option("--eval-dir", default=None, help="Folder of `eval run` outputs (default: out_dir of --config).")
@click.option("--out", "out_dir", default=None, help="Report folder (default: <eval-dir>/comparison).")
@config_option
@set_option
def compare_cmd(manifest: str, eval_dir: str | None, out_dir: str | None, config_path: str | None,
                overrides: tuple[str, ...]) -> None:
    """Validated vs unvalidated over test families and training runs: per-run accuracy, CI, p; md + HTML report."""
    from eval.compare import compare
    cfg = _cfg(config_path, overrides)
    edir = eval_dir or cfg.out_dir
    result = _guarded(compare, manifest, edir, out_dir or str(Path(edir) / "comparison"), cfg.bootstrap)
    click.echo(result["markdown"])
    click.echo(f"report: {result['report']}\nhtml: {result['html']}")


@eval_group.command("judge")
@config_option
@set_option
@click.option("--predictions", "files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Predictions JSONL to judge (repeatable; default: every <out_dir>/predictions/*.jsonl).")
@click.option("--release", "release_dir", default=None, help="Judge a release's CoTs against its expert rubric scores.")
@click.option("--release-config", default="panel", show_default=True)
@click.option("--split", default="test", show_default=True)
def judge_cmd(config_path: str | None, overrides: tuple[str, ...], files: tuple[Path, ...], release_dir: str | None,
              release_config: str, split: str) -> None:
    """LLM judge on the five rubric dimensions (0-2); with --release, judge-expert weighted kappa."""
    from eval.config import ReleaseSource
    from eval.judge_cmd import judge_files, judge_release
    cfg = _cfg(config_path, overrides)
    if release_dir:
        result = _guarded(judge_release, cfg, ReleaseSource(dir=release_dir, config=release_config, split=split))
    else:
        result = _guarded(judge_files, cfg, list(files))
    click.echo(json.dumps(result, indent=2))


@eval_group.command("submit")
@click.option("--predictions", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="One model's predictions JSONL (from `medcot eval run`).")
@click.option("--format", "fmt", required=True, type=click.Choice(["medbench", "jsonl"]))
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (.zip for medbench, .jsonl for jsonl).")
def submit_cmd(predictions: Path, fmt: str, output: Path) -> None:
    """Leaderboard submission (MedBench-style zip) or generic predictions JSONL, schema-validated."""
    from eval.submit import submit
    result = _guarded(submit, predictions, fmt, output, _extra=(ValueError,))
    click.echo(json.dumps(result))

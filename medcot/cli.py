"""The `medcot` command line."""
from __future__ import annotations

import json
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from medcot.config import Config, ConfigError, load_config

EXIT_INTERNAL = 1   # an unexpected error: one line on stderr, the traceback saved to a file it names
EXIT_BAD_INPUT = 2  # bad input or config: the message names the file, line or key; nothing was changed
EXIT_LLM_DOWN = 3   # the LLM server is down or unreachable: rerun the same command to resume

config_option = click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
                             help="YAML config (defaults < YAML < --set).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config value, e.g. --set llm.concurrency=8 (repeatable).")
store_option = click.option("--store", "store_url", help="Store URL or SQLite file (overrides store.url).")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def open_store(url: str, create: bool = False) -> Any:
    """The store for a command; read-only commands (the default here) never create one: exit 2 naming it."""
    from medcot.store import Store, StoreError
    try:
        return Store(url, create=create)
    except StoreError as exc:
        fail(str(exc))


def get_config(config_path: str | None, overrides: tuple[str, ...] = (), store_url: str | None = None,
               cls: type = Config) -> Any:
    sets = list(overrides) + ([f"store.url={store_url}"] if store_url else [])
    try:
        return load_config(config_path, sets, cls=cls)
    except ConfigError as exc:
        fail(str(exc))


# Errors that packages above the core raise for bad input, registered by them as ("module:Class", headline,
# exit code). Named, not imported: an error class whose module was never imported cannot have been raised.
GUARDED_ERRORS: list[tuple[str, str, int]] = []


def guard_error(kind: str, headline: str, code: int = EXIT_BAD_INPUT) -> None:
    """Make `run_guarded` turn the exception class `kind` ("module:Class") into one clear line
    (`error: HEADLINE: message`) and exit `code`."""
    if all(k != kind for k, _, _ in GUARDED_ERRORS):
        GUARDED_ERRORS.append((kind, headline, code))


def _guarded_match(exc: Exception) -> tuple[str, int] | None:
    for kind, headline, code in GUARDED_ERRORS:
        module, _, name = kind.partition(":")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return headline, code
    return None


ErrorRule = tuple[type[BaseException] | tuple[type[BaseException], ...], str, int]  # (types, headline, exit code)


def run_guarded(fn: Any, *args: Any, _errors: tuple[ErrorRule, ...] = (), **kwargs: Any) -> Any:
    """Run a command body, turning known faults into clear messages and exit codes: the caller's `_errors`
    first, then the core's and the registered ones; anything else is one line and exit 1, never a traceback."""
    from medcot.llm import LLMError
    from medcot.seeds import SeedError
    from medcot.server import BadServerSetup, ServerError
    from medcot.store import StoreError
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        for kinds, headline, code in _errors:
            if isinstance(exc, kinds):
                fail(f"{headline}: {exc}" if headline else str(exc), code)
        if isinstance(exc, SeedError):
            fail(f"seed file rejected, nothing was written:\n{exc}")
        if isinstance(exc, (ConfigError, StoreError, BadServerSetup)):
            fail(str(exc))
        if isinstance(exc, ServerError):
            fail(f"{exc}\nEverything finished before this is saved in the store; rerun the same command to resume.",
                 EXIT_LLM_DOWN)
        if isinstance(exc, LLMError):
            fail(f"{exc}\nEverything finished before this is saved in the store; rerun the same command to "
                 "resume.", EXIT_LLM_DOWN)
        match = _guarded_match(exc)
        notes = " ".join(getattr(exc, "__notes__", []))
        if match is not None:
            fail(f"{match[0]}: {exc} {notes}".rstrip(), match[1])
        fail(f"unexpected {type(exc).__name__} {notes}: {exc} (traceback: {_save_traceback()})", EXIT_INTERNAL)


def _save_traceback() -> str:
    import tempfile
    import time
    import traceback

    from medcot.config import default_cache_dir
    folder = Path(default_cache_dir()) / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    path = folder / f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return str(path)


CLI_ENTRY_POINTS = "medcot.cli"  # each package names its `register(main)` in its pyproject entry points


class RootGroup(click.Group):
    """The root group: the packages above the core add their commands on first use (not at import, so that
    `python -m medcot.cli` and the packages' own `import medcot.cli` cannot run the registration twice)."""

    _registered = False

    def _register(self) -> None:
        if not RootGroup._registered:
            RootGroup._registered = True
            for ep in sorted(entry_points(group=CLI_ENTRY_POINTS), key=lambda e: e.name):
                ep.load()(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._register()
        return super().get_command(ctx, name)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medcot")
def main() -> None:
    """medcot: build a human-verified medical chain-of-thought dataset with an LLM and expert reviewers.

    \b
    Exit codes: 0 success; 1 unexpected error (one line; the traceback is saved to a file the message names);
    2 bad input or config (the message names the file, line or key; nothing was changed);
    3 LLM server down or unreachable (everything done so far is stored: rerun the same command to resume).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally` blocks (stop servers) on SIGTERM


def run_stages(cfg: Config, names: list[str]) -> dict[str, Any]:
    """Run just these stages of the pipeline on the config's store (the managed server starts only if needed)."""
    from medcot.pipeline import run_pipeline
    cfg.run.stages = names
    return run_pipeline(cfg)


@main.command()
@config_option
@set_option
def serve(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Start the vLLM OpenAI-compatible server of the config (127.0.0.1) until Ctrl-C."""
    from medcot.server import BadServerSetup, ServerError, VLLMServer
    cfg = get_config(config_path, overrides)
    if not cfg.server.model:
        fail("server.model is empty: name a model folder or Hub id in the config")
    try:
        with VLLMServer(cfg.server, log_path=cfg.server.log_file or Path(cfg.run.out_dir) / "logs" / "vllm.log") as srv:
            click.echo(f"serving {srv.model_name} at {srv.base_url} (Ctrl-C to stop)")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except BadServerSetup as exc:
        fail(str(exc))
    except ServerError as exc:
        fail(str(exc), EXIT_LLM_DOWN)
    click.echo("server stopped")


@main.command()
@config_option
@set_option
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(config_path: str | None, overrides: tuple[str, ...], no_progress: bool) -> None:
    """The main job: every stage of run.stages, end to end, then a report."""
    from medcot.pipeline import run_pipeline
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
    cfg = get_config(config_path, store_url=store_url)
    store = open_store(cfg.store.url)
    info = {"store": store.url, "items": store.count_items(), "stages": store.stage_counts(),
            "llm_calls": store.call_totals()}
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    click.echo(f"store: {info['store']}\nitems: {info['items']}")
    for name, n in sorted(info["stages"].items()):
        click.echo(f"  {name}: {n}")
    click.echo(f"LLM calls stored: {info['llm_calls']['calls']}")


if __name__ == "__main__":
    main()

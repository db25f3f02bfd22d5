"""`medcot build` and `medcot push`, registered on the root command group through the `medcot.cli` entry point.

    medcot build --config configs/demo.yaml --out runs/demo/release
    medcot push runs/demo/release --repo-id ORG/NAME [--private] [--dry-run]
"""
from __future__ import annotations

import json
from pathlib import Path

import click


def register(main: click.Group) -> None:
    from medcot.cli import guard_error
    guard_error("dataset_builder.build:BuildError", "release build refused")
    guard_error("dataset_builder.integrity:ReleaseIntegrityError", "release build refused")
    main.add_command(build)
    main.add_command(push)


@click.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
              help="YAML config (defaults < YAML < --set); its `build:` section and store.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@click.option("--store", "store_url", help="Store URL or SQLite file (overrides store.url).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Release folder to write (replaced only if it holds a previous release).")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary as one JSON line.")
@click.option("--allow-empty", is_flag=True, help="Build even when the store holds no items.")
@click.option("--version", "release_version", default=None, metavar="X.Y.Z",
              help="Release version (semver, greater than the previous one); sets build.version.")
@click.option("--previous", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The release this one succeeds (default: the release already in --out): changes.json and "
                   "CHANGELOG.md compare with it, and its families keep their split.")
def build(config_path: str | None, overrides: tuple[str, ...], store_url: str | None, out_dir: Path,
          as_json: bool, allow_empty: bool, release_version: str | None, previous: Path | None) -> None:
    """Build the Hugging Face release (Parquet configs validated/unvalidated/panel, card, figures, lm-eval task)
    from the store. Integrity violations: exit 2, nothing written."""
    from dataset_builder.build import BuildError, build_release
    from dataset_builder.integrity import ReleaseIntegrityError
    from medcot.cli import fail, get_config, open_store
    cfg = get_config(config_path, overrides + ((f"build.version={release_version}",) if release_version else ()),
                     store_url)
    store = open_store(cfg.store.url)
    if not allow_empty and store.count_items() == 0:
        store.close()
        fail(f"store {store.url} holds no items: nothing to release (pass --allow-empty to build an empty release); "
             f"{out_dir} was not touched")
    try:
        result = build_release(store, cfg.build, out_dir, cfg.review, previous)
    except (ReleaseIntegrityError, BuildError) as exc:
        fail(str(exc))
    finally:
        store.close()
    summary = result.summary()
    click.echo(json.dumps(summary, ensure_ascii=False) if as_json else summary["markdown"])


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repo-id", required=True, help="Hub dataset repository, ORG/NAME.")
@click.option("--private", is_flag=True, help="Create the repository as private (an existing PUBLIC one is refused).")
@click.option("--make-private", is_flag=True, help="With --private: make an existing public repository private.")
@click.option("--dry-run", is_flag=True, help="List the operations (uploads, deletions, tag); no network, no token.")
def push(folder: Path, repo_id: str, private: bool, make_private: bool, dry_run: bool) -> None:
    """Upload a built release FOLDER to the Hugging Face Hub (token: HF_TOKEN or `hf auth login`); data files the
    release no longer has are deleted, a versioned release is tagged v{version}."""
    from dataset_builder.push import PushError, plan_push
    from dataset_builder.push import push as run_push
    from medcot.cli import fail
    try:
        plan = plan_push(folder, repo_id, private, make_private)
        if dry_run:
            click.echo("dry run, nothing uploaded:")
            for op in plan.operations():
                click.echo(op)
            return
        click.echo(f"pushed: {run_push(plan)}")
    except PushError as exc:
        fail(str(exc))

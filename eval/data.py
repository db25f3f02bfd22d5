"""Eval sets: the release's test split (a folder of Parquet + README `configs:`) and external MCQ sets
in the seed JSONL/CSV schema or a leaderboard's (eval/external.py). Both become EvalItem records."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from eval.config import EvalConfig, ReleaseSource
from eval.external import load_external
from eval.records import EvalItem
from medcot.config import ConfigError
from medcot.records import LETTERS


class EvalDataError(ValueError):
    """An eval set could not be read or a row is unusable (names the file and the row)."""


def _letter(value: Any, names: list[str] | None, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and names:
        if not 0 <= value < len(names):
            raise EvalDataError(f"{where}: answer index {value} outside {names}")
        return names[value]
    if isinstance(value, str) and value.strip().upper() in LETTERS:
        return value.strip().upper()
    raise EvalDataError(f"{where}: answer {value!r} is not a letter A-E")


def release_splits(release_dir: str) -> dict[str, list[str]]:
    """Config name -> its non-empty splits, as the release card's YAML `configs:` declares them."""
    import yaml
    card = Path(release_dir) / "README.md"
    if not card.is_file():
        raise EvalDataError(f"release {release_dir!r}: no README.md (not a release folder)")
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise EvalDataError(f"{card}: no YAML header")
    meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    return {c["config_name"]: [f["split"] for f in c.get("data_files", [])] for c in meta.get("configs", [])}


# Where the eval stage looks when the configured config/split has no rows (small or unlucky runs): the same
# split of the raw pipeline output, then the other held-out split. Train never: it is what the arms learnt.
FALLBACK_ORDER = (("validated", "test"), ("unvalidated", "test"), ("validated", "validation"),
                  ("unvalidated", "validation"))


def choose_release_split(release_dir: str, config: str, split: str) -> tuple[str, str] | None:
    """The configured (config, split) when it has rows, else the first of FALLBACK_ORDER that has; None if none."""
    splits = release_splits(release_dir)
    for cand in ((config, split), *FALLBACK_ORDER):
        if cand[1] in splits.get(cand[0], []):
            return cand
    return None


def release_rows(src: ReleaseSource) -> tuple[list[dict[str, Any]], Any]:
    """The rows and features of one config/split of a release folder (loaded offline)."""
    import datasets
    if not (Path(src.dir) / "README.md").is_file():
        raise EvalDataError(f"release {src.dir!r}: no README.md (not a release folder)")
    try:  # a private, throw-away cache: datasets' shared cache keys a local folder by its name and data file
        # patterns, so a rebuilt release (or another folder of the same name) would be served stale
        with tempfile.TemporaryDirectory(prefix="medcot-eval-ds-") as cache:
            ds = datasets.load_dataset(src.dir, src.config, split=src.split, cache_dir=cache, keep_in_memory=True)
    except (ValueError, FileNotFoundError) as exc:
        raise EvalDataError(f"release {src.dir!r}: cannot load config {src.config!r} split {src.split!r}: {exc}") \
            from exc
    return list(ds), ds.features


def load_release(src: ReleaseSource) -> list[EvalItem]:
    rows, features = release_rows(src)
    names = getattr(features.get("answer"), "names", None)
    name = f"{Path(src.dir).name}:{src.config}/{src.split}"
    items = []
    for i, row in enumerate(rows[:src.limit] if src.limit is not None else rows):
        where = f"{name} row {i} (id {row.get('id')!r})"
        missing = [k for k in ("id", "language", "question", "options", "answer") if row.get(k) is None]
        if missing:
            raise EvalDataError(f"{where}: missing {missing}")
        options = {k: v for k, v in row["options"].items() if v not in (None, "")}
        answer = _letter(row["answer"], names, where)
        if answer not in options:
            raise EvalDataError(f"{where}: answer {answer} is not one of the options {sorted(options)}")
        items.append(EvalItem(set=src.split, id=str(row["id"]), language=row["language"], question=row["question"],
                              options=options, answer=answer, specialty=row.get("specialty"),
                              family_id=row.get("family_id")))
    return items


def load_eval_sets(cfg: EvalConfig) -> list[EvalItem]:
    """Every configured set; a set name used twice is an error (predictions are keyed by set and id)."""
    items = load_release(cfg.release) if cfg.release.dir else []
    names = {cfg.release.split} if cfg.release.dir else set()
    for ext in cfg.external:
        if ext.name in names:
            raise ConfigError(f"external set name {ext.name!r} is used twice (or equals the release split name)")
        names.add(ext.name)
        items += load_external(ext)
    if not items:
        raise ConfigError("nothing to evaluate: set release.dir and/or external sets")
    return items

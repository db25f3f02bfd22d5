"""`medcot build`: store -> typed rows -> integrity checks -> family splits -> Parquet shards, README card,
figures, lm-eval task folder and release_stats.json, written to a temporary folder and renamed into place.

A failed check leaves nothing behind (and an existing release untouched). Identical store -> byte-identical
files: rows sorted by id, fixed Parquet writer settings, no timestamps, PNGs without date/software metadata.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dataset_builder import figures
from dataset_builder.agreement_stats import compute_agreement
from dataset_builder.card import CardInputs, expert_minutes, pick_example, render_card, scored_split, strike_models
from dataset_builder.features import CONFIGS, LETTERS, SPLITS, ReleaseRow
from dataset_builder.integrity import ReleaseIntegrityError, check_release
from dataset_builder.lmeval import write_task_folder
from dataset_builder.rows import RowMaker
from dataset_builder.snapshot import Snapshot, read_snapshot
from dataset_builder.splits import assign_families
from dataset_builder.stats import ReleaseStats, compute_stats
from dataset_builder.versions import (
    INDEX,
    Previous,
    VersionError,
    changes,
    check_version,
    keep_splits,
    read_previous,
    release_index,
    removed_reasons,
    write_version_files,
)
from dataset_builder.writer import SplitFiles, write_config
from medcot.config import BuildConfig, ReviewConfig
from medcot.neardup import DupText, NearDupIndex
from medcot.store import RATER_KEY, Store

PUSH_RECORD = ".medcot-push.json"  # written by `medcot push` (dataset_builder.push), kept across rebuilds
MARKER = "release_stats.json"  # an existing folder is replaced only if it holds this (a previous release)
SPECIALTY_PNG = "figures/specialty_distribution.png"
RUBRIC_PNG = "figures/rubric_scores.png"

SplitRows = dict[str, dict[str, list[ReleaseRow]]]  # config -> split -> rows


class BuildError(RuntimeError):
    pass


@dataclass
class BuildResult:
    release_dir: Path
    counts: dict[str, dict[str, int]]          # config -> split -> rows
    near_duplicates: dict[str, dict[str, int]]  # config -> eval split -> rows with a train near-duplicate
    absent: list[str]
    stats: ReleaseStats
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"Release written to `{self.release_dir}` ({len(self.files)} files, {self.seconds:.1f} s).", "",
                 "| config | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        lines += [f"| {c} | " + " | ".join(str(self.counts[c].get(s, 0)) for s in SPLITS) + " |" for c in CONFIGS]
        lines += ["", "| step | items | note |", "|---|---:|---|"]
        lines += [f"| {s.label} | {s.count} | {s.note} |" for s in self.stats.steps]
        lines += ["", "Near-duplicates of train items (validation/test rows): " + "; ".join(
            f"{c} {v['validation']}/{v['test']}" for c, v in self.near_duplicates.items()), ""]
        lines += [f"- absent: {a}" for a in self.absent]
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {"release_dir": str(self.release_dir), "counts": self.counts, "near_duplicates": self.near_duplicates,
                "absent": self.absent, "seconds": round(self.seconds, 2), "markdown": self.markdown()}


def pipeline_version() -> str:
    try:
        return f"medcot {version('medcot')}"
    except PackageNotFoundError as exc:
        raise BuildError("the medcot package is not installed (pip install -e .): its version goes in every row") from exc


def build_release(store: Store, cfg: BuildConfig, out_dir: str | Path,
                  review: ReviewConfig | None = None, previous: str | Path | None = None) -> BuildResult:
    """Build the release into out_dir (replaced atomically); ReleaseIntegrityError names violating items.
    `review`: the review rules the votes are re-verified under (rubric policy, min_agree); default ReviewConfig().
    `previous`: the release this one succeeds (default: the release in out_dir, if any): changes.json is
    computed against it and its families keep their split."""
    with _gc_paused():
        return _build(store, cfg, out_dir, review or ReviewConfig(), previous)


def _previous(out: Path, previous: str | Path | None, version: str) -> Previous | None:
    try:
        new = check_version(version)
        prev = read_previous(Path(previous).resolve() if previous else out)
        old = check_version(prev.version) if prev and prev.version else None
    except VersionError as exc:
        raise BuildError(str(exc)) from exc
    if previous and prev is None:
        raise BuildError(f"--previous {previous}: no medcot release index ({INDEX}) there")
    if new and old and new <= old:
        raise BuildError(f"version {version} must be greater than the previous release's {prev.version}")  # type: ignore[union-attr]
    return prev


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The snapshot holds ~10 objects per item and nothing in it forms cycles: the cyclic collector would
    rescan all of it over and over (a third of the build time at 36,000 items)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build(store: Store, cfg: BuildConfig, out_dir: str | Path, review: ReviewConfig,
           previous_dir: str | Path | None) -> BuildResult:
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    _check_target(out)
    previous = _previous(out, previous_dir, cfg.version)
    snap = read_snapshot(store)
    maker = RowMaker(snap, store.secret(RATER_KEY), pipeline_version(), cfg.allow_automated_reviewers, review)
    sets = maker.build()
    assignment = keep_splits(assign_families((it.family_id for it in snap.items), cfg.seed, cfg.splits), previous)
    split_rows = {c: _split(rows, assignment) for c, rows in sets.rows.items()}
    violations = check_release(split_rows, cfg.allow_automated_reviewers, review.consensus.min_agree)
    if violations:
        raise ReleaseIntegrityError(violations)
    index = release_index(split_rows, cfg.version)
    latest = removed_reasons(lambda i: (d.kind if (d := snap.current_decision(i)) else None))
    try:
        diff = changes(index, previous, latest)
    except VersionError as exc:
        raise BuildError(str(exc)) from exc
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="near-duplicates") as pool:
        # overlaps with the Parquet writing (which releases the GIL)
        pending = pool.submit(near_duplicate_pairs, split_rows)
        stats = compute_stats(snap, maker, sets)
        views = ("human", "all") if any(k != "human" for k in stats.reviewer_kinds) else ("human",)
        agree = compute_agreement(snap, maker.rater, views)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
        tmp.chmod(0o755)
        try:
            written, figs = _write_data(tmp, cfg, split_rows, rated_items(snap, maker))
            pairs = pending.result()
            near = _near_counts(split_rows, pairs)
            files = _write_card(tmp, cfg, split_rows, written, figs, stats, agree, near, pairs, snap,
                                strike_models(store), expert_minutes(store))
            files += write_version_files(tmp, index, diff, previous)
            if (out / PUSH_RECORD).is_file():  # what the last push of this folder uploaded (for its deletions)
                shutil.copy2(out / PUSH_RECORD, tmp / PUSH_RECORD)
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    counts = {c: {s: len(split_rows[c][s]) for s in SPLITS} for c in CONFIGS}
    return BuildResult(out, counts, near, stats.absent + ([agree["note"]] if not agree["available"] else []),
                       stats, time.perf_counter() - start, files)


def _split(rows: list[ReleaseRow], assignment: dict[str, str]) -> dict[str, list[ReleaseRow]]:
    out: dict[str, list[ReleaseRow]] = {s: [] for s in SPLITS}
    for row in rows:
        out[assignment[row.family_id]].append(row)
    for split_rows in out.values():
        split_rows.sort(key=lambda r: r.id)
    return out


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    eval_id: str  # "{row id}\x00{n}": n numbers the distinct wordings of evaluation rows
    train_id: str
    similarity: float


def _dup_text(row: ReleaseRow) -> DupText:
    return DupText(row.id, row.question, {k: v for k in LETTERS if (v := row.options.get(k))}, row.language)


def near_duplicate_pairs(split_rows: SplitRows) -> list[NearDuplicate]:
    """Evaluation rows (validation + test, any config) against train rows (any config) under the one rule of
    medcot.neardup; one entry per distinct (item id, wording), so an item edited after review is checked in
    both wordings; for each, its most similar train item."""
    def distinct(splits: tuple[str, ...]) -> list[DupText]:
        texts: dict[tuple[str, str, tuple[tuple[str, str], ...]], DupText] = {}
        for row in (r for c in CONFIGS for s in splits for r in split_rows[c][s]):
            text = _dup_text(row)
            texts[(text.id, text.question, tuple(sorted(text.options.items())))] = text
        return [texts[k] for k in sorted(texts)]
    evaluation = distinct(("validation", "test"))
    matches = NearDupIndex(distinct(("train",))).query_many(evaluation)
    return [NearDuplicate(f"{item.id}\x00{n}", found[0].matched_id, round(found[0].similarity, 4))
            for n, (item, found) in enumerate(zip(evaluation, matches)) if found]


def _near_counts(split_rows: SplitRows, pairs: list[NearDuplicate]) -> dict[str, dict[str, int]]:
    dup_ids = {p.eval_id.split("\x00", 1)[0] for p in pairs}
    return {c: {s: sum(1 for r in split_rows[c][s] if r.id in dup_ids) for s in ("validation", "test")}
            for c in CONFIGS}


def _write_data(root: Path, cfg: BuildConfig, split_rows: SplitRows, rated: list[list[dict[str, Any]]]
                ) -> tuple[dict[str, list[SplitFiles]], dict[str, str]]:
    """Parquet shards (configs with rows only), figures and the lm-eval task folder."""
    written: dict[str, list[SplitFiles]] = {}
    for config in CONFIGS:
        files = write_config(split_rows[config], root, config, cfg.shard_rows)
        if files:
            written[config] = files
    figs = _figures(root, split_rows, rated)
    write_task_folder(root)
    return written, figs


def _write_card(root: Path, cfg: BuildConfig, split_rows: SplitRows, written: dict[str, list[SplitFiles]],
                figs: dict[str, str], stats: ReleaseStats, agree: dict[str, Any], near: dict[str, dict[str, int]],
                pairs: list[NearDuplicate], snap: Snapshot, by_model: dict[str, Any],
                minutes: dict[str, float]) -> list[str]:
    """README.md and release_stats.json; returns every file of the release."""
    validated = [r for s in SPLITS for r in split_rows["validated"][s]]
    card = render_card(CardInputs(
        pretty_name=cfg.pretty_name, license=cfg.license, repo_or_path=cfg.repo_id or "PATH/TO/RELEASE",
        pipeline_version=pipeline_version(), seed=cfg.seed, fractions=dict(cfg.splits),
        languages=sorted(stats.languages), written=written,
        default="validated" if "validated" in written else None,
        automated_in_validated=any(r.validation == "automated" for r in validated),
        figures=figs, stats=stats, agreement=agree, near_dups=near, total_items=len(snap.items),
        rated_items=len(snap.rubric), version=cfg.version, example=pick_example(split_rows),
        scored=scored_split(written), strike_models=by_model,
        expert_minutes=[minutes[r.id] for r in validated if r.validation == "expert" and r.id in minutes],
        standard_versions=tuple(sorted({r.standard_version for rows in snap.rubric.values() for r in rows
                                        if r.standard_version}))))
    (root / "README.md").write_text(card, encoding="utf-8")
    (root / "LICENSE.md").write_text(licence_text(stats.sources, cfg.license), encoding="utf-8")
    _write_stats(root, stats, agree, near, pairs, written)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _figures(root: Path, split_rows: SplitRows, rated: list[list[dict[str, Any]]]) -> dict[str, str]:
    by_config = {c: [r for s in SPLITS for r in split_rows[c][s]] for c in CONFIGS}
    out = {}
    if any(by_config.values()):
        figures.specialty_figure(by_config, root / SPECIALTY_PNG)
        out["specialty"] = SPECIALTY_PNG
    if rated:
        figures.rubric_figure(rated, root / RUBRIC_PNG)
        out["rubric"] = RUBRIC_PNG
    return out


def rated_items(snap: Snapshot, maker: RowMaker) -> list[list[dict[str, Any]]]:
    """Every rated item in the store (initial review and panel alike): its scores, with "round" = the order in
    which its revisions were first scored (0 = the first revision judged)."""
    out = []
    for item_id in sorted(snap.rubric):
        order: dict[str | None, int] = {}
        scores = []
        for r in snap.rubric[item_id]:
            rnd = order.setdefault(r.revision_hash if r.revision_hash is not None else f"round {r.round}", len(order))
            scores.append({"round": rnd, "dimension": r.dimension, "score": r.score,
                           "rater_kind": maker.kinds.get(r.user_id)})
        out.append(scores)
    return out


def _write_stats(root: Path, stats: ReleaseStats, agree: dict[str, Any], near: dict[str, dict[str, int]],
                 pairs: list[NearDuplicate], written: dict[str, list[SplitFiles]]) -> None:
    data = {"funnel": [{"step": s.label, "items": s.count, "note": s.note} for s in stats.steps],
            "absent": stats.absent, "splits": {c: {f.name: f.num_examples for f in fs} for c, fs in written.items()},
            "near_duplicates": {"counts": near, "pairs": [
                {"eval_id": p.eval_id.split("\x00", 1)[0], "train_id": p.train_id, "similarity": p.similarity}
                for p in pairs]},
            "agreement": agree, "reviewer_kinds": stats.reviewer_kinds, "decisions": stats.decisions,
            "first_correct_attempt": stats.first_correct, "rejected_candidates": stats.rejected_by_check,
            "excluded_from_validated": stats.excluded, "specialties": stats.specialties,
            "cot_answer_differs_from_key": stats.cot_key_disagreements,
            "sources": [{"source": s, "licence": lic, "language": lang, "seeds": n} for s, lic, lang, n in stats.sources]}
    (root / MARKER).write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise BuildError(f"refusing to replace {out}: it exists and is not a medcot release (no {MARKER})")


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished release into place; an older release is swapped out, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / "release")
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def licence_text(sources: list[tuple[str, str, str, int]], release_licence: str) -> str:
    """LICENSE.md of the release: the terms of every seed source its rows come from (each row keeps its own)."""
    lines = ["# Licences", "", f"Release licence id: `{release_licence}`. The rows keep the licence of the seed source",
             "they come from (column `licence`); expanded items inherit their seed's. Sources in this release:", ""]
    lines += [f"- {src} ({lang}, {n} seed questions): {lic}" for src, lic, lang, n in sources]
    lines += ["", "Check each source's terms, and any use restrictions its authors state (CMExam's authors ask for",
              "academic/research use only), before redistributing or training on the data. The chains of thought",
              "and annotations added by this pipeline follow the release licence above.", ""]
    return "\n".join(lines)


def file_hashes(root: str | Path) -> dict[str, str]:
    """sha256 of every file of a release (relative path -> hex)."""
    base = Path(root)
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}

"""Eval contamination: is any eval item something the models under test were (or could have been) trained on?

    medcot eval contamination --eval data/eval/heldout_zh.jsonl --store runs/medcot.db --release runs/release
    medcot eval contamination --release runs/release --release-split test --json

Every eval item is compared with the references:
- the store's items (what curation holds: seeds and derived items), in their current wording and, when
  reviewers revised them, in their original wording (the first revision's old value of each field);
- every row of a release folder: all configs and splits, or, when the eval items ARE the release's own split
  (`--release-split`, or `eval run` on the release), every config's other splits; store items of that
  split's families are then left out too (they are the eval items themselves, never trained on);
- the seeds a curation config imports (`seeds.files` minus `seeds.exclude`, `seeds.per_file_limit`).

An overlap has one kind, the strongest that holds: "same_id" (the eval id is a reference id), "same_stem"
(equal normalised stem, `medcot.neardup.normalize`) or "near_duplicate" (the project's one near-duplicate
rule, `medcot.neardup`: options compared as a set, Chinese 2-3-grams, traditional folded to simplified).
`similarity` is always that rule's score of the pair (1.0 for the same normalised text).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import BootstrapConfig, EvalConfig, ReleaseSource
from eval.data import EvalDataError, release_rows, release_splits
from eval.records import EvalItem, Prediction
from medcot.config import Config, ConfigError, load_config
from medcot.neardup import RULE_VERSION as NEARDUP_RULE
from medcot.neardup import DupText, NearDupIndex, normalize, similarity
from medcot.seeds import SeedError, excluded_ids, load_seeds

RULE_VERSION = f"contamination@1+{NEARDUP_RULE}"
KINDS = ("same_id", "same_stem", "near_duplicate")  # strongest first
_NEARDUP_KIND = {"same_id": "same_id", "exact": "same_stem", "near": "near_duplicate"}
QUESTION_FIELDS = ("question", "options")


class ContaminationError(EvalDataError):
    """Eval items overlap what was trained on (or the check's input is unusable); exit 2 in the CLI."""


@dataclass(frozen=True)
class Reference:
    """One text a model could have been trained on, and where it comes from."""

    id: str
    question: str
    options: Mapping[str, str]
    language: str | None
    source: str            # "store", "store (original wording)", "release validated/train", "seeds FILE"
    family_id: str | None = None
    split: str | None = None  # release rows: their split


@dataclass(frozen=True)
class Overlap:
    eval_id: str
    matched_id: str
    kind: str
    similarity: float
    eval_set: str = ""
    source: str = ""


@dataclass
class CheckResult:
    eval_file: str
    compared: dict[str, int] = field(default_factory=dict)
    overlaps: list[Overlap] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.overlaps

    def overlapping_keys(self) -> set[tuple[str, str]]:
        """(eval set, eval id) of every contaminated eval item."""
        return {(o.eval_set, o.eval_id) for o in self.overlaps}

    def as_dict(self) -> dict[str, Any]:
        return {"eval_file": self.eval_file, "rule": RULE_VERSION, "compared": dict(self.compared),
                "sources": list(self.sources),
                "overlaps": [{"eval_id": o.eval_id, "matched_id": o.matched_id, "kind": o.kind,
                              "similarity": round(o.similarity, 4), "eval_set": o.eval_set, "source": o.source}
                             for o in self.overlaps],
                "overlapping_eval_ids": sorted({o.eval_id for o in self.overlaps}), "clean": self.clean}


# ---- references ----------------------------------------------------------------------------------------
def _clean_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (options or {}).items() if v not in (None, "")}


def store_references(url: str) -> list[Reference]:
    """Every store item in its current wording, plus its original wording when a reviewer changed it."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from medcot.review_tables import RevisionRow
    from medcot.store import Store
    if "://" not in url and not Path(url).expanduser().is_file():
        raise ContaminationError(f"store {url!r}: no such SQLite file")
    store = Store(url, create=False)
    try:
        items = store.items()
        with store.engine.connect() as conn:
            revisions = list(conn.execute(select(RevisionRow.item_id, RevisionRow.field, RevisionRow.old)
                                          .where(RevisionRow.field.in_(QUESTION_FIELDS)).order_by(RevisionRow.id)))
    except SQLAlchemyError as exc:
        raise ContaminationError(f"store {url!r}: cannot read items and revisions: {exc}") from exc
    finally:
        store.close()
    first_old: dict[str, dict[str, Any]] = {}
    for item_id, fld, old in revisions:
        first_old.setdefault(item_id, {}).setdefault(fld, old)
    refs = []
    for it in items:
        refs.append(Reference(it.id, it.question, it.options, it.language, "store", it.family_id))
        old = first_old.get(it.id)
        if old:
            question = old.get("question", it.question)
            options = old["options"] if isinstance(old.get("options"), Mapping) else it.options
            refs.append(Reference(it.id, str(question or ""), _clean_options(options), it.language,
                                  "store (original wording)", it.family_id))
    return refs


def _quiet_rows(src: ReleaseSource) -> list[dict[str, Any]]:
    """release_rows without datasets' progress bars (one per config and split would bury the report)."""
    import datasets
    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return release_rows(src)[0]
    finally:
        if was_on:
            datasets.enable_progress_bars()


def release_references(release_dir: str) -> list[Reference]:
    """Every row of every config and split of a release folder that carries questions (id, question, options)."""
    refs: list[Reference] = []
    for config, splits in release_splits(release_dir).items():
        for split in splits:
            rows = _quiet_rows(ReleaseSource(dir=release_dir, config=config, split=split))
            if rows and not {"id", "question", "options"} <= set(rows[0]):
                break  # a config without questions: nothing to compare
            refs += [Reference(str(r["id"]), str(r["question"] or ""), _clean_options(r["options"]),
                               r.get("language"), f"release {config}/{split}", r.get("family_id"), split)
                     for r in rows]
    return refs


def curation_seed_references(config_path: str) -> list[Reference]:
    """The seeds a curation config imports: every `seeds.files` file minus `seeds.exclude`, up to the limit."""
    try:
        cfg: Config = load_config(config_path)
        skip = excluded_ids(cfg.seeds.exclude)
        refs = []
        for path in cfg.seeds.files:
            seeds = load_seeds(Path(path), None, limit=cfg.seeds.per_file_limit, exclude=skip)
            refs += [Reference(s.id, s.question, s.options, s.language, f"seeds {path}", s.id) for s in seeds]
    except (ConfigError, SeedError) as exc:
        raise ContaminationError(f"curation config {config_path}: {exc}") from exc
    return refs


@dataclass
class References:
    """Everything eval items are compared with, loaded once."""

    store: list[Reference] = field(default_factory=list)
    release: list[Reference] = field(default_factory=list)
    seeds: list[Reference] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def excluding_split(self, split: str | None) -> list[Reference]:
        """All references but the release's `split` and the store items and seeds of that split's families
        (the eval items themselves and what was derived from them: never trained on)."""
        if split is None:
            return self.release + self.store + self.seeds
        families = {r.family_id or r.id for r in self.release if r.split == split}
        return [r for r in self.release if r.split != split] + \
            [r for r in self.store + self.seeds if (r.family_id or r.id) not in families]


def load_references(store: str = "", release: str = "", seeds_from: Sequence[str] = ()) -> References:
    refs = References()
    if release:
        refs.release = release_references(release)
        refs.sources.append(f"release {release}")
    if store:
        refs.store = store_references(store)
        refs.sources.append(f"store {store}")
    for path in seeds_from:
        refs.seeds += curation_seed_references(path)
        refs.sources.append(f"seeds of {path}")
    if not refs.sources:
        raise ContaminationError("nothing to compare with: give a store, a release and/or curation configs")
    return refs


# ---- the check -----------------------------------------------------------------------------------------
def _dup(x: EvalItem | Reference) -> DupText:
    return DupText(x.id, x.question, dict(x.options), x.language)


def _unique(refs: Iterable[Reference]) -> list[Reference]:
    """One reference per (id, text): a row shared by several configs is indexed once (its first source)."""
    seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    out = []
    for r in refs:
        key = (r.id, r.question, tuple(sorted(r.options.items())))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def find_overlaps(items: Sequence[EvalItem], refs: Sequence[Reference]) -> list[Overlap]:
    """Every (eval item, reference id) pair that overlaps, with its strongest kind, in eval order."""
    refs = _unique(refs)
    # indexed under their position (a key no eval id can equal): several references may share an id
    index = NearDupIndex(DupText(_key(n), r.question, dict(r.options), r.language) for n, r in enumerate(refs))
    by_stem: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for n, r in enumerate(refs):
        by_stem.setdefault(normalize(r.question), []).append(n)
        by_id.setdefault(r.id, []).append(n)
    out: list[Overlap] = []
    for item in items:
        text = _dup(item)
        found = [(int(m.matched_id[1:]), _NEARDUP_KIND[m.kind], m.similarity) for m in index.query(text)
                 if m.kind != "same_id"]
        found += [(n, "same_stem", similarity(text, _dup(refs[n]))) for n in by_stem.get(normalize(item.question), [])]
        found += [(n, "same_id", similarity(text, _dup(refs[n]))) for n in by_id.get(item.id, [])]
        best: dict[str, tuple[int, float, str]] = {}  # matched id -> (kind rank, similarity, source)
        for n, kind, sim in found:
            ref, rank = refs[n], KINDS.index(kind)
            old = best.get(ref.id)
            if old is None or (rank, -sim) < (old[0], -old[1]):
                best[ref.id] = (rank, sim, ref.source)
        out += [Overlap(item.id, matched, KINDS[rank], sim, item.set, source)
                for matched, (rank, sim, source) in sorted(best.items(), key=lambda kv: (kv[1][0], -kv[1][1], kv[0]))]
    return out


def _key(n: int) -> str:
    return f"\x00{n}"


def check(groups: Sequence[tuple[Sequence[EvalItem], str | None]], eval_file: str, refs: References) -> CheckResult:
    """Compare each group of eval items with the references; a group that IS a release split (its name given)
    is compared with everything but that split (`References.excluding_split`)."""
    result = CheckResult(eval_file=eval_file, sources=list(refs.sources))
    indexed: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    for items, own_split in groups:
        against = refs.excluding_split(own_split)
        indexed |= {(r.id, r.question, tuple(sorted(r.options.items()))) for r in against}
        result.overlaps += find_overlaps(items, against)
        if own_split is not None:
            result.sources.append(f"release split {own_split!r} checked against the other splits")
    result.compared = {"eval_items": sum(len(items) for items, _ in groups), "release_rows": len(refs.release),
                       "store_texts": len(refs.store), "store_items": len({r.id for r in refs.store}),
                       "curation_seeds": len(refs.seeds), "references": len(indexed),
                       "overlapping_eval_items": len(result.overlapping_keys())}
    return result


def load_eval_file(path: str) -> list[EvalItem]:
    """An eval file in the seed JSONL/CSV schema (what eval `external` sets read); errors name file/line/field."""
    try:
        seeds = load_seeds(Path(path), None)
    except SeedError as exc:
        raise ContaminationError(f"eval file rejected:\n{exc}") from exc
    return [EvalItem(set=Path(path).stem, id=s.id, language=s.language, question=s.question,
                     options=dict(s.options), answer=s.answer, family_id=s.id) for s in seeds]


def load_release_split(release_dir: str, split: str) -> list[EvalItem]:
    """The distinct items of one split of a release, over all its question-bearing configs."""
    items: dict[tuple[str, str], EvalItem] = {}
    for config, splits in release_splits(release_dir).items():
        if split not in splits:
            continue
        for r in _quiet_rows(ReleaseSource(dir=release_dir, config=config, split=split)):
            if {"id", "question", "options"} <= set(r):
                item = EvalItem(set=split, id=str(r["id"]), language=r.get("language") or "",
                                question=str(r["question"] or ""), options=_clean_options(r["options"]),
                                answer="", family_id=r.get("family_id"))
                items.setdefault((item.id, item.question), item)
    if not items:
        raise ContaminationError(f"release {release_dir!r}: no config has a split {split!r}")
    return list(items.values())


# ---- `eval run` -----------------------------------------------------------------------------------------
def check_eval_config(cfg: EvalConfig, items: Sequence[EvalItem]) -> CheckResult:
    """The check `eval run` makes before serving any model: the release's own split against the rest of the
    release (and the store but that split's families), the external sets against everything."""
    c = cfg.contamination
    release = c.release or cfg.release.dir
    refs = load_references(store=c.store, release=release, seeds_from=c.seeds_from)
    from_release = bool(cfg.release.dir)
    own = [it for it in items if from_release and it.set == cfg.release.split]
    other = [it for it in items if not (from_release and it.set == cfg.release.split)]
    same_release = from_release and bool(release) and Path(release).resolve() == Path(cfg.release.dir).resolve()
    groups: list[tuple[Sequence[EvalItem], str | None]] = []
    if own:
        groups.append((own, cfg.release.split if same_release else None))
    if other:
        groups.append((other, None))
    names = ([f"release {cfg.release.dir}:{cfg.release.config}/{cfg.release.split}"] if own else []) + \
        [f"{e.name} ({e.path})" for e in cfg.external]
    return check(groups, "; ".join(names), refs)


def gate(cfg: EvalConfig, items: Sequence[EvalItem]) -> CheckResult | None:
    """`eval run`'s check before any model is served: raises ContaminationError naming the overlaps unless
    `contamination.allow_overlap`; None when there is nothing to compare with (no store, release or seeds)."""
    c = cfg.contamination
    if not (c.store or c.release or cfg.release.dir or c.seeds_from):
        return None
    result = check_eval_config(cfg, items)
    if not result.clean and not c.allow_overlap:
        raise ContaminationError(refusal_message(result))
    return result


def refusal_message(result: CheckResult, limit: int = 20) -> str:
    lines = [f"{len(result.overlapping_keys())} eval item(s) overlap training data ({RULE_VERSION}); nothing was "
             "served. Remove them, or pass --allow-overlap to evaluate them apart:"]
    lines += [f"  {o.eval_set}/{o.eval_id} ~ {o.matched_id} ({o.kind}, similarity {o.similarity:.3f}, {o.source})"
              for o in result.overlaps[:limit]]
    if len(result.overlaps) > limit:
        lines.append(f"  ... and {len(result.overlaps) - limit} more")
    return "\n".join(lines)


def split_metrics(preds: Sequence[Prediction], contaminated: set[tuple[str, str]],
                  boot: BootstrapConfig) -> dict[str, Any]:
    """Accuracy (and the rest of model_metrics) on the clean and on the contaminated items, apart."""
    from eval.scoring import model_metrics
    dirty = [p for p in preds if (p.set, p.id) in contaminated]
    clean = [p for p in preds if (p.set, p.id) not in contaminated]
    return {"clean": model_metrics(clean, boot) if clean else {},
            "contaminated": model_metrics(dirty, boot) if dirty else {}}


def results_record(result: CheckResult | None, allowed: bool) -> dict[str, Any]:
    """What every results file records of the check (`checked` false: nothing was configured to compare with)."""
    if result is None:
        return {"checked": False, "rule": RULE_VERSION, "clean": None, "allow_overlap": allowed,
                "note": "not checked: no contamination.store, release or contamination.seeds_from to compare with"}
    return {"checked": True, **result.as_dict(), "allow_overlap": allowed}


def markdown_lines(record: dict[str, Any], models: Mapping[str, Any]) -> list[str]:
    """The results.md section: the check and, with overlaps, accuracy on clean vs contaminated items."""
    if not record["checked"]:
        return ["## Contamination check", "", f"- **{record['note']}**", ""]
    n = record["compared"].get("overlapping_eval_items", 0)
    lines = ["## Contamination check", "",
             f"- rule `{record['rule']}`: {record['compared'].get('eval_items', 0)} eval items compared with "
             f"{record['compared'].get('references', 0)} texts ({'; '.join(record['sources'])}); "
             f"**{n} overlapping**" + (" (evaluated apart: --allow-overlap)" if n else ""), ""]
    if n:
        lines += ["| model | set | items | clean accuracy | contaminated items | contaminated accuracy |",
                  "|---|---|---|---|---|---|"]
        for model, info in models.items():
            parts = info.get("contamination", {})
            clean, dirty = parts.get("clean", {}), parts.get("contaminated", {})
            for s in sorted(set(clean) | set(dirty)):
                c, d = clean.get(s, {}), dirty.get(s, {})
                lines.append(f"| {model} | {s} | {c.get('n', 0) + d.get('n', 0)} | {_acc(c)} | {d.get('n', 0)} | "
                             f"{_acc(d)} |")
        lines += ["", "Overlapping ids: " + ", ".join(f"`{i}`" for i in record["overlapping_eval_ids"]), ""]
    return lines


def _acc(metrics: Mapping[str, Any]) -> str:
    return f"{metrics['accuracy']:.3f}" if metrics.get("n") else "n/a"


# ---- CLI output ---------------------------------------------------------------------------------------
def table(result: CheckResult) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in result.compared.items())
    lines = [f"contamination check ({RULE_VERSION}) of {result.eval_file}", f"compared: {counts}",
             f"against: {'; '.join(result.sources)}", ""]
    if result.clean:
        return "\n".join(lines + ["clean: no overlap"])
    width = max(len(o.eval_id) for o in result.overlaps)
    mwidth = max(len(o.matched_id) for o in result.overlaps)
    lines.append(f"{'eval_id':<{width}}  {'matched_id':<{mwidth}}  {'kind':<14}  similarity  source")
    lines += [f"{o.eval_id:<{width}}  {o.matched_id:<{mwidth}}  {o.kind:<14}  {o.similarity:>10.3f}  {o.source}"
              for o in result.overlaps]
    return "\n".join(lines + ["", f"NOT clean: {len(result.overlapping_keys())} eval item(s) overlap"])


def to_json(result: CheckResult) -> str:
    return json.dumps(result.as_dict(), ensure_ascii=False)


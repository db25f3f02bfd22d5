"""The README.md dataset card: YAML (configs + dataset_info for every column, so `load_dataset` restores the
features) and a body rendered from `card.md.j2`. No timestamps: identical inputs give identical bytes."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import DatasetCardData

from curation.review.invariant import INVARIANT
from curation.review.timing import validated_item_minutes
from curation.strikes import ModelStrikeStats, strikes_by_model
from dataset_builder.features import COLUMN_HELP, CONFIGS, LETTERS, SPLITS, VALIDATION_NOTES
from dataset_builder.lmeval import EXTRACTOR_FILE
from dataset_builder.splits import SPLIT_RULE
from dataset_builder.writer import SplitFiles, configs_yaml, dataset_infos
from medcot.neardup import RULE_SUMMARY as NEARDUP_RULE
from medcot.store import Store

TEMPLATE = Path(__file__).with_name("card.md.j2")
CONFIG_WHAT = {
    "validated": "items approved by consensus (released wording and CoT, reviews, rubric, five-strike history)",
    "unvalidated": "the same pipeline's raw LLM output before any review (original wording, initial CoT)",
    "panel": "items escalated to the expert panel, with all rubric scores and the outcome",
}


@dataclass
class CardInputs:
    pretty_name: str
    license: str
    repo_or_path: str
    pipeline_version: str
    seed: int
    fractions: dict[str, float]
    languages: list[str]
    written: dict[str, list[SplitFiles]]   # configs with rows -> their non-empty splits
    default: str | None
    automated_in_validated: bool
    figures: dict[str, str]                # "specialty" / "rubric" -> relative path
    stats: Any                             # dataset_builder.stats.ReleaseStats
    agreement: dict[str, Any]
    near_dups: dict[str, dict[str, int]]   # config -> split -> eval rows with a train near-duplicate
    total_items: int
    rated_items: int = 0                   # items with any rubric score (the rubric figure's population)
    version: str = ""                      # build.version (semver) or "" (unversioned)
    standard_versions: tuple[str, ...] = ()  # annotation standard versions of the scores
    example: Example | None = None         # one released row, shown on the card
    scored: tuple[str, str] | None = None  # (config, split) the accuracy snippet evaluates
    strike_models: dict[str, ModelStrikeStats] = field(default_factory=dict)  # answerer model id -> attempts
    expert_minutes: list[float] = field(default_factory=list)  # active expert minutes per timed validated row


def expert_minutes(store: Store) -> dict[str, float]:
    """item -> active human minutes spent on it in the review app (curation/review/timing.py)."""
    with store.engine.connect() as conn:
        return validated_item_minutes(conn)


def strike_models(store: Store) -> dict[str, ModelStrikeStats]:
    """Five-strike attempts per answerer model (the model of each attempt's call), every round."""
    return strikes_by_model(store, round=None)


@dataclass(frozen=True)
class Example:
    config: str
    split: str
    text: str  # the row as JSON, long texts shortened


EXAMPLE_FIELDS = ("id", "language", "question", "options", "answer", "answer_letter", "cot", "reasoning", "specialty",
                  "validation", "rubric_median", "difficulty", "cognitive_level", "source", "licence")
EXAMPLE_TEXT_LIMIT = 600  # characters of a long text (the CoT) shown; the row itself is whole in the data


def pick_example(split_rows: dict[str, dict[str, list[Any]]]) -> Example | None:
    """The first row of the first non-empty (config, split), validated rows first; None if the release is empty."""
    for config in CONFIGS:
        for split in SPLITS:
            rows = split_rows.get(config, {}).get(split) or []
            if rows:
                return Example(config, split, _example_json(rows[0]))
    return None


def _example_json(row: Any) -> str:
    data = {"answer_letter": row.answer, **{f: getattr(row, f) for f in EXAMPLE_FIELDS if hasattr(row, f)}}
    data["answer"] = LETTERS.index(row.answer)  # the ClassLabel index, as load_dataset returns it
    for key, value in data.items():
        if isinstance(value, str) and len(value) > EXAMPLE_TEXT_LIMIT:
            data[key] = value[:EXAMPLE_TEXT_LIMIT] + f" … [{len(value) - EXAMPLE_TEXT_LIMIT} more characters]"
    # json.dumps escapes newlines and quotes, so model text cannot close the Markdown code fence
    return json.dumps({f: data[f] for f in EXAMPLE_FIELDS if f in data}, ensure_ascii=False, indent=2)


def scored_split(written: dict[str, list[SplitFiles]]) -> tuple[str, str] | None:
    """The split the card's accuracy snippet scores: the validated test split, else the first held-out one."""
    present = {(c, f.name) for c, files in written.items() for f in files}
    order = [(c, s) for c in CONFIGS for s in ("test", "validation", "train")]
    return next((cs for cs in order if cs in present), None)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def card_yaml(inp: CardInputs) -> str:
    creators = ["expert-generated"] + (["machine-generated"] if inp.automated_in_validated else [])
    data = DatasetCardData(pretty_name=inp.pretty_name, license=inp.license, language=inp.languages,
                           annotations_creators=creators, language_creators=["found", "machine-generated"],
                           source_datasets=["original"], task_categories=["question-answering", "multiple-choice"],
                           task_ids=["multiple-choice-qa"],
                           **({"license_name": "medcot-seed-licences", "license_link": "LICENSE.md"}
                              if inp.license == "other" else {}), tags=["medical", "chain-of-thought", "multiple-choice",
                                                                  "rubric"],
                           size_categories=[_size_category(inp.total_items)],
                           configs=configs_yaml(inp.written, inp.default))
    dataset_infos(inp.written, "medcot release").to_dataset_card_data(data)
    return data.to_yaml()


def _config_rows(inp: CardInputs) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    for c in CONFIGS:
        files = {f.name: f.num_examples for f in inp.written.get(c, [])}
        rows.append({"name": c, "what": CONFIG_WHAT[c], "default": c == inp.default, "written": bool(files),
                     "counts": {s: files.get(s, 0) for s in SPLITS}})
        if not files:
            notes.append(f"`{c}` has no rows in this build and is not declared (load_dataset cannot load an "
                         f"empty config).")
        elif len(files) < len(SPLITS):
            missing = [s for s in SPLITS if s not in files]
            notes.append(f"`{c}`: split(s) {', '.join(missing)} have no rows and are not declared.")
    if inp.default is None:
        notes.append("No default config is declared because `validated` is empty: name a config explicitly.")
    return rows, notes


def _config_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| config | what it holds | " + " | ".join(SPLITS) + " |", "|---|---|" + "---:|" * len(SPLITS)]
    for c in rows:
        name = f"`{c['name']}`" + (" (default)" if c["default"] else "")
        lines.append(f"| {name} | {c['what']} | " + " | ".join(str(c["counts"][s]) for s in SPLITS) + " |")
    return lines


def _agreement_views(inp: CardInputs) -> list[tuple[str, str]]:
    titles = {"human": "human experts only", "all": "all raters, automated reviewers included"}
    return [(v, t) for v, t in titles.items() if v in inp.agreement]


def render_card(inp: CardInputs) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    config_rows, config_notes = _config_rows(inp)
    st = inp.stats
    body = env.get_template(TEMPLATE.name).render(
        pretty_name=inp.pretty_name, automated_in_validated=inp.automated_in_validated, notes=VALIDATION_NOTES,
        pipeline_version=inp.pipeline_version, config_table=_config_table(config_rows), config_rows=config_rows,
        config_notes=config_notes, agreement_views=_agreement_views(inp),
        repo_or_path=inp.repo_or_path, seed=inp.seed, fractions=inp.fractions, steps=st.steps,
        first_correct=st.first_correct, rejected_by_check=st.rejected_by_check, top_reasons=st.top_rejection_reasons,
        excluded=st.excluded, absent=st.absent, specialty_figure=inp.figures.get("specialty"),
        rubric_figure=inp.figures.get("rubric"), specialties=st.specialties, reviewer_kinds=st.reviewer_kinds,
        judgements_by_kind=st.judgements_by_kind, expert_time=_expert_time(inp.expert_minutes), decisions=st.decisions, agreement=inp.agreement, fmt=_fmt,
        near_dup_rule=NEARDUP_RULE, split_rule=SPLIT_RULE, near_dups=inp.near_dups, sources=st.sources, columns=COLUMN_HELP,
        invariant=INVARIANT, ci=_ci, rated_items=inp.rated_items, standard_versions=list(inp.standard_versions),
        version=inp.version, example=inp.example, scored=inp.scored, extractor_file=EXTRACTOR_FILE,
        strike_models=inp.strike_models if len(inp.strike_models) > 1 else {})
    return f"---\n{card_yaml(inp)}\n---\n\n{body}"


def _expert_time(minutes: list[float]) -> dict[str, Any] | None:
    if not minutes:
        return None
    ordered = sorted(minutes)
    return {"n_items": len(ordered), "median": round(statistics.median(ordered), 1),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1), "total_hours": round(sum(ordered) / 60, 1)}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(v: dict[str, Any] | None) -> str:
    """'0.912 [0.870, 0.950]' (n/a where undefined)."""
    if not v or v.get("estimate") is None:
        return "n/a"
    if v.get("low") is None or v.get("high") is None:
        return _fmt(v["estimate"])
    return f"{v['estimate']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"

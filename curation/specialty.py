"""Specialty (paper 3.1, Figure 3): every item gets ONE key of a fixed, versioned, bilingual taxonomy
(`curation/taxonomy.yaml`: 12 disciplines + "other", internal-medicine subspecialties as
"internal_medicine/<sub>").

Items whose source subject is in the taxonomy's `subject_map` take the mapped key; the others are
classified by the LLM with structured output (an enum of the keys). The assignment and the taxonomy
version go in a `specialty` event. Unusable model output leaves the item without a specialty and is
recorded (`specialty_failed` event) and counted, never replaced by a default.
Resumable: items with a specialty are skipped, and so are items whose identical request already failed.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from medcot.config import ConfigError, SpecialtyConfig
from medcot.llm import LLMClient, gather_all, json_schema_format, sampling_params
from medcot.pipeline import RunContext, stage
from medcot.prompts import format_options, load_prompt
from medcot.records import ChatRequest, Event, Item
from medcot.store import Store

DEFAULT_TAXONOMY = Path(__file__).resolve().parent / "taxonomy.yaml"
OTHER = "other"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: int
    labels: dict[str, dict[str, str]]  # key -> {"zh": ..., "en": ...}, subspecialties as "parent/sub"
    subject_map: dict[str, str | None]  # casefolded source subject -> key (None: ask the LLM)

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def keys(self) -> list[str]:
        return list(self.labels)

    def discipline(self, key: str) -> str:
        return key.split("/", 1)[0]

    def from_subject(self, subject: str | None) -> str | None:
        return None if not subject else self.subject_map.get(subject.strip().casefold())

    def label(self, key: str, language: str) -> str:
        return self.labels[key].get(language) or self.labels[key]["en"]


@cache
def load_taxonomy(path: str = "") -> Taxonomy:
    """Read and validate the taxonomy (errors name the file and the problem)."""
    src = Path(path) if path else DEFAULT_TAXONOMY
    try:
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"specialty.taxonomy: cannot read {src}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("version"), int) or not data.get("name"):
        raise ConfigError(f"{src}: needs `name`, an integer `version` and `disciplines`")
    labels: dict[str, dict[str, str]] = {}
    for key, lab in (data.get("disciplines") or {}).items():
        labels[key] = _label(src, key, lab)
        for sub, sublab in ((data.get("subspecialties") or {}).get(key) or {}).items():
            labels[f"{key}/{sub}"] = _label(src, f"{key}/{sub}", sublab)
    unknown_parents = set(data.get("subspecialties") or {}) - set(data.get("disciplines") or {})
    if OTHER not in labels or unknown_parents:
        raise ConfigError(f"{src}: needs an '{OTHER}' discipline; subspecialties of unknown disciplines: "
                          f"{sorted(unknown_parents)}")
    subject_map: dict[str, str | None] = {}
    for subject, key in (data.get("subject_map") or {}).items():
        if key is not None and key not in labels:
            raise ConfigError(f"{src}: subject_map[{subject!r}] = {key!r} is not a taxonomy key")
        subject_map[str(subject).strip().casefold()] = key
    return Taxonomy(str(data["name"]), data["version"], labels, subject_map)


def _label(src: Path, key: str, lab: Any) -> dict[str, str]:
    if not isinstance(lab, dict) or set(lab) != {"zh", "en"} or not lab["en"] or not lab["zh"]:
        raise ConfigError(f"{src}: '{key}' needs exactly a zh and an en name (quote names with commas), got {lab!r}")
    return {"zh": str(lab["zh"]), "en": str(lab["en"])}


def specialty_request(item: Item, tax: Taxonomy, cfg: SpecialtyConfig, model: str) -> ChatRequest:
    prompt = load_prompt(cfg.prompt, item.language)
    choices = "\n".join(f"{k}: {tax.label(k, item.language)}" for k in tax.keys)
    schema = {"type": "object", "properties": {"specialty": {"type": "string", "enum": tax.keys}},
              "required": ["specialty"], "additionalProperties": False}
    return ChatRequest(messages=prompt.messages(choices=choices, question=item.question,
                                                options=format_options(item.options)),
                       model=model, params=sampling_params(cfg.sampling), prompt_version=f"{prompt.tag}+{tax.tag}",
                       stage="specialty", item_id=item.id, response_format=json_schema_format("specialty", schema))


def parse_specialty(content: str, tax: Taxonomy) -> tuple[str | None, str]:
    """(key, "") or (None, reason)."""
    try:
        obj = json.loads(content)
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"
    value = obj.get("specialty") if isinstance(obj, dict) else None
    if not isinstance(value, str):
        return None, "missing key: 'specialty'"
    if value.strip() not in tax.labels:
        return None, f"not a taxonomy key: {value!r}"
    return value.strip(), ""


@dataclass
class SpecialtySummary:
    todo: int = 0
    already_assigned: int = 0
    by_subject_map: int = 0
    by_llm: int = 0
    failed: int = 0
    skipped_failed_before: int = 0
    taxonomy: str = ""
    failures: dict[str, int] = field(default_factory=dict)


async def run_specialty(store: Store, client: LLMClient | None, cfg: SpecialtyConfig, model: str,
                        progress: bool = True) -> SpecialtySummary:
    """Assign a specialty to every item that has none (subject map first, then the LLM)."""
    tax = load_taxonomy(cfg.taxonomy)
    items = store.items()
    failed_before = {(e.item_id, e.payload.get("prompt_version")) for e in store.events(kind="specialty_failed")}
    summary = SpecialtySummary(already_assigned=sum(it.specialty is not None for it in items), taxonomy=tax.tag)
    todo = [it for it in items if it.specialty is None]
    summary.todo = len(todo)
    ask: list[Item] = []
    mapped: list[tuple[str, str, Event]] = []
    for it in todo:
        key = tax.from_subject(it.subject) if cfg.use_subject_map else None
        if key is not None:
            mapped.append((it.id, key, _event(it.id, key, "subject_map", tax, {"subject": it.subject})))
        elif (it.id, specialty_request(it, tax, cfg, model).prompt_version) in failed_before:
            summary.skipped_failed_before += 1
        else:
            ask.append(it)
    if ask and client is None:
        raise RuntimeError("specialty: items need the LLM but no client was given")
    for start in range(0, len(mapped), 500):  # one transaction per 500, not one per item
        store.set_specialties(mapped[start:start + 500])
    summary.by_subject_map = len(mapped)

    async def one(it: Item) -> None:
        req = specialty_request(it, tax, cfg, model)
        res = await client.chat(req)  # type: ignore[union-attr]
        key, reason = parse_specialty(res.content, tax)
        if key is None:
            store.log_event(Event(kind="specialty_failed", item_id=it.id, stage="specialty", actor="llm",
                                  actor_kind="llm", payload={"reason": reason, "call_id": res.call_id,
                                                             "prompt_version": req.prompt_version}))
            summary.failed += 1
            summary.failures[reason.split(":")[0]] = summary.failures.get(reason.split(":")[0], 0) + 1
            return
        store.set_specialty(it.id, key, _event(it.id, key, "llm", tax, {"call_id": res.call_id,
                                                                         "prompt_version": req.prompt_version}))
        summary.by_llm += 1

    await gather_all([one(it) for it in ask], desc="specialty", progress=progress)
    return summary


def _event(item_id: str, key: str, method: str, tax: Taxonomy, extra: dict[str, Any]) -> Event:
    actor, kind = ("llm", "llm") if method == "llm" else ("system", "system")
    return Event(kind="specialty", item_id=item_id, stage="specialty", actor=actor, actor_kind=kind,
                 payload={"specialty": key, "method": method, "taxonomy": tax.tag, **extra})


def specialty_counts(store: Store) -> dict[str, int]:
    counts = Counter(it.specialty or "(none)" for it in store.items())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def specialty_markdown(counts: dict[str, int], run: SpecialtySummary, tax: Taxonomy) -> str:
    lines = [f"Specialty counts (whole store, taxonomy `{tax.tag}`):", "", "| specialty | items |", "|---|---|"]
    for key, n in counts.items():
        name = f"{key} ({tax.label(key, 'en')} / {tax.label(key, 'zh')})" if key in tax.labels else key
        lines.append(f"| {name} | {n} |")
    lines += ["", f"This run: {run.by_subject_map} from the source subject, {run.by_llm} by the LLM, "
              f"{run.failed} unusable LLM answers (left without a specialty: {run.failures or '-'}), "
              f"{run.already_assigned} already assigned."]
    return "\n".join(lines)


@stage("specialty", needs_llm=True)
async def _specialty_stage(ctx: RunContext) -> dict[str, Any]:
    m = ctx.model(ctx.cfg.specialty.model)
    cfg = m.tuned(ctx.cfg.specialty, "sampling")
    run = await run_specialty(ctx.store, m.client, cfg, m.model, ctx.progress)
    tax = load_taxonomy(cfg.taxonomy)
    counts = specialty_counts(ctx.store)
    return {"run": asdict(run), "counts": counts, "markdown": specialty_markdown(counts, run, tax)}

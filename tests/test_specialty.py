"""Specialty: the bundled bilingual taxonomy, the source-subject map, LLM classification by structured output
(against the scripted server), unusable answers recorded and never defaulted, resume."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curation.specialty import load_taxonomy, parse_specialty, run_specialty, specialty_request
from medcot.config import ConfigError, LLMConfig, SpecialtyConfig
from medcot.llm import LLMClient
from medcot.records import Item
from medcot.scripted_server import Reply, ScriptedServer
from medcot.store import Store

MODEL = "scripted"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "spec.db"))
    yield s
    s.close()


def item(iid: str, language: str = "en", subject: str | None = None) -> Item:
    return Item(id=iid, family_id=iid, language=language, subject=subject, answer="A", stage="generated",
                question=f"Question {iid}: which is right?" if language == "en" else f"题目{iid}：哪项正确？",
                options={"A": "a", "B": "b", "C": "c", "D": "d"})


def test_bundled_taxonomy() -> None:
    tax = load_taxonomy()
    top = [k for k in tax.keys if "/" not in k]
    assert len(top) == 13 and top[-1] == "other"  # 12 disciplines + other
    assert "internal_medicine/cardiology" in tax.keys and tax.discipline("internal_medicine/cardiology") == "internal_medicine"
    assert all(tax.labels[k]["zh"] and tax.labels[k]["en"] for k in tax.keys)
    assert tax.label("other", "en").startswith("Other (") and tax.label("pediatrics", "zh") == "儿科"
    assert tax.from_subject("Dental") == "stomatology" and tax.from_subject("gynaecology & obstetrics") == "obstetrics_gynecology"
    assert tax.from_subject("Pharmacology") is None and tax.from_subject(None) is None
    # every MedMCQA subject of the shared seed file is in the map (mapped or explicitly left to the LLM)
    shared = Path(__file__).resolve().parents[1] / "data" / "seeds" / "seed_en.jsonl"
    subjects = {json.loads(line)["subject"] for line in shared.read_text().splitlines() if line.strip()}
    assert {s.casefold() for s in subjects} <= set(tax.subject_map)


def test_bad_taxonomy_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "tax.yaml"
    bad.write_text("name: t\nversion: 1\ndisciplines:\n  other: {zh: 其他, en: Other}\nsubject_map:\n  X: nowhere\n")
    with pytest.raises(ConfigError, match="nowhere"):
        load_taxonomy(str(bad))
    bad.write_text("name: t\nversion: 1\ndisciplines:\n  other: {zh: 其他, en: Other, with comma}\n")
    with pytest.raises(ConfigError, match="quote"):
        load_taxonomy(str(bad))


def test_parse_specialty() -> None:
    tax = load_taxonomy()
    assert parse_specialty('{"specialty": "surgery"}', tax) == ("surgery", "")
    assert parse_specialty('{"specialty": "astrology"}', tax)[1].startswith("not a taxonomy key")
    assert parse_specialty('{"specialty": ', tax)[1].startswith("invalid JSON")
    assert parse_specialty('{"field": "surgery"}', tax)[1].startswith("missing key")


def test_request_is_structured_and_versioned() -> None:
    tax = load_taxonomy()
    req = specialty_request(item("z", "zh"), tax, SpecialtyConfig(), MODEL)
    schema = req.response_format["json_schema"]["schema"]  # type: ignore[index]
    assert schema["properties"]["specialty"]["enum"] == tax.keys
    assert req.prompt_version == f"specialty@1+{tax.tag}" and "内科" in req.messages[-1]["content"]
    assert req.params["temperature"] == 0.0 and "seed" not in req.params


async def test_subject_map_then_llm_failures_recorded_and_resume(store: Store) -> None:
    store.add_items([item("en-dental", subject="Dental"), item("en-pharm", subject="Pharmacology"),
                     item("zh-1", "zh"), item("zh-bad", "zh")])

    def answer(body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        if "zh-bad" in text:
            return Reply('{"specialty": "astrology"}')
        return Reply(json.dumps({"specialty": "internal_medicine/cardiology" if "zh-1" in text else "other"}))

    cfg = LLMConfig(endpoints=[], model=MODEL, max_retries=0)
    async with ScriptedServer(responder=answer) as srv:
        cfg.endpoints = [srv.base_url]
        async with LLMClient(cfg, store) as client:
            run = await run_specialty(store, client, SpecialtyConfig(), MODEL)
            assert srv.count == 3  # the mapped subject made no call
            again = await run_specialty(store, client, SpecialtyConfig(), MODEL)
            assert srv.count == 3 and again.skipped_failed_before == 1 and again.already_assigned == 3
    assert (run.by_subject_map, run.by_llm, run.failed) == (1, 2, 1)
    got = {it.id: it.specialty for it in store.items()}
    assert got == {"en-dental": "stomatology", "en-pharm": "other", "zh-1": "internal_medicine/cardiology",
                   "zh-bad": None}  # never defaulted
    ev = store.events(item_id="zh-1", kind="specialty")[0]
    assert ev.payload["taxonomy"] == "specialty_taxonomy@1" and ev.payload["method"] == "llm" and ev.actor_kind == "llm"
    mapped = store.events(item_id="en-dental", kind="specialty")[0]
    assert mapped.payload["method"] == "subject_map" and mapped.payload["subject"] == "Dental"
    failed = store.events(item_id="zh-bad", kind="specialty_failed")
    assert len(failed) == 1 and "not a taxonomy key" in failed[0].payload["reason"]


async def test_all_mapped_needs_no_client(store: Store) -> None:
    store.add_items([item("a", subject="ENT"), item("b", subject="Skin")])
    run = await run_specialty(store, None, SpecialtyConfig(), MODEL)
    assert run.by_subject_map == 2
    assert {it.specialty for it in store.items()} == {"otolaryngology", "dermatology"}

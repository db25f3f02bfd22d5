"""`medcot curate import-cot`: items with their own chain of thought enter the review flow. Through the real CLI on a
real SQLite store: what is written (items at stage "generated", the initial CoT with honest provenance, the
extractor's answer or None), the seed rules with file/line/field errors and nothing written on error, and the
imported items going through review, five-strike and consensus like generated ones."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import datasets
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from curation.import_cot import PROMPT_VERSION
from curation.review import assign as assigning
from curation.review import sample
from curation.review.consensus import run_consensus
from curation.review.items import get_item, item_revision
from curation.review.records import ReviewInput
from curation.review.submit import submit_review
from curation.strikes import run_strikes
from dataset_builder.build import build_release
from medcot.cli import main
from medcot.config import BuildConfig, LLMConfig, ReviewConfig, StrikesConfig
from medcot.db import EventRow, GenerationRow, ItemRow
from medcot.llm import LLMClient
from medcot.review_tables import DecisionRow
from medcot.revision import content_hash
from medcot.scripted_server import Reply, ScriptedServer
from medcot.store import Store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "import_cot.jsonl"
FIXTURE_IDS = ["byo-en-1", "byo-zh-1", "byo-en-2", "byo-en-3"]
ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}


def import_cot(path: Path, store_url: str) -> Any:
    return CliRunner().invoke(main, ["curate", "import-cot", str(path), "--store", store_url])


def row_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.__tablename__: conn.scalar(select(func.count()).select_from(t)) or 0
                for t in (ItemRow, GenerationRow, EventRow)}


def good(i: int, **change: Any) -> dict[str, Any]:
    rec = {"id": f"cot-{i}", "question": f"Which drug is first-line for condition number {i}?",
           "options": {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}", "D": f"d{i}"}, "answer": "B", "language": "en",
           "cot": f"A. a{i}: no.\nB. b{i}: yes, first-line.\nC. c{i}: no.\nD. d{i}: no.\nAnswer: B"}
    rec.update(change)
    return {k: v for k, v in rec.items() if v is not DROP}


DROP = object()  # a field value meaning "leave this field out of the line"


def write(tmp_path: Path, lines: list[Any], name: str = "cots.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines),
                    encoding="utf-8")
    return path


@pytest.fixture
def store(sqlite_url: str) -> Store:
    return Store(sqlite_url)


def test_import_writes_items_initial_cots_and_provenance(store: Store) -> None:
    res = import_cot(FIXTURE, store.url)
    assert res.exit_code == 0, res.output
    assert res.output.strip().startswith(f"imported 4 items from {FIXTURE}")
    assert "2 agree with the key, 1 disagree, 1 no answer" in res.output
    items = {it.id: it for it in store.items()}
    assert sorted(items) == sorted(FIXTURE_IDS)
    assert {it.stage for it in items.values()} == {"generated"}  # where five-strike and review pick items up
    assert all(it.origin == "seed" and it.family_id == it.id for it in items.values())
    assert items["byo-en-1"].source == "medcot tests: hand-written import-cot fixture"
    assert items["byo-zh-1"].options["D"] == "肾上腺素" and items["byo-en-3"].answer == "A"

    gens = {g.item_id: g for g in store.generations("initial")}
    assert sorted(gens) == sorted(FIXTURE_IDS)
    assert all(g.call_id is None and g.revision == 0 and g.prompt_version == PROMPT_VERSION for g in gens.values())
    assert (gens["byo-en-1"].answer, gens["byo-en-1"].agrees_with_key) == ("B", True)
    assert (gens["byo-zh-1"].answer, gens["byo-zh-1"].agrees_with_key) == ("D", True)
    assert (gens["byo-en-2"].answer, gens["byo-en-2"].agrees_with_key) == ("A", False)  # kept, review will judge
    assert gens["byo-en-3"].answer is None and gens["byo-en-3"].agrees_with_key is None  # a hedge: never guessed
    assert gens["byo-en-3"].matched_by.startswith("none:")
    assert "\r" not in gens["byo-zh-1"].cot and gens["byo-zh-1"].cot.endswith("D. 肾上腺素：首选，立即肌内注射。\n答案：D")
    assert gens["byo-en-1"].reasoning == "Peaked T waves: think potassium first." and gens["byo-zh-1"].reasoning is None
    assert set(gens["byo-en-1"].option_explanations) == set("ABCD")
    assert store.generated_item_ids() >= set(FIXTURE_IDS)  # `medcot curate generate` will not regenerate them

    events = {e.item_id: e for e in store.events(kind="imported")}
    assert sorted(events) == sorted(FIXTURE_IDS) and {e.stage for e in events.values()} == {"import-cot"}
    assert events["byo-en-1"].payload["model"] == "example/reasoner-8b"
    assert events["byo-zh-1"].payload["model"] == "imported"  # the file names no model
    assert events["byo-en-2"].payload["line"] == 3 and events["byo-en-2"].payload["call_id"] is None
    assert events["byo-en-1"].payload["source"] == items["byo-en-1"].source
    assert store.call_totals()["calls"] == 0  # no LLM call was made, and none is claimed


BAD_LINE_2 = [
    ("answer outside the options", {"answer": "E"}, "answer", "is not one of the options"),
    ("missing cot", {"cot": DROP}, "cot", "missing"),
    ("empty cot", {"cot": "   \n"}, "cot", "must be a non-empty string"),
    ("cot not a string", {"cot": ["step 1", "Answer: B"]}, "cot", "must be a non-empty string"),
    ("missing id", {"id": DROP}, "id", "missing"),
    ("duplicate id in the file", {"id": "cot-1"}, "id", "duplicate id 'cot-1' (also line 1)"),
    ("duplicate question in the file", {"question": "Which drug is first-line for condition number 1?"},
     "question", "duplicate question (same as line 1)"),
    ("unknown field", {"temperature": 0.6}, "temperature", "unknown field"),
    ("empty model", {"model": ""}, "model", "must be null or a non-empty string"),
    ("reasoning not a string", {"reasoning": 3}, "reasoning", "must be null or a non-empty string"),
    ("bad language", {"language": "fr"}, "language", "must be one of"),
]


@pytest.mark.parametrize("label,change,field,reason", BAD_LINE_2, ids=[c[0] for c in BAD_LINE_2])
def test_a_bad_line_exits_2_naming_file_line_field_and_writes_nothing(
        store: Store, tmp_path: Path, label: str, change: dict[str, Any], field: str, reason: str) -> None:
    assert import_cot(FIXTURE, store.url).exit_code == 0  # a store that already holds items
    before = row_counts(store)
    path = write(tmp_path, [good(1), good(2, **change), good(3)])
    res = import_cot(path, store.url)
    assert res.exit_code == 2, res.output
    assert re.search(rf"{re.escape(str(path))}:2: field '{field}': [^\n]*{re.escape(reason)}", res.output), res.output
    assert "nothing was written" in res.output
    assert row_counts(store) == before  # lines 1 and 3 are valid: still nothing of the file is written
    assert not {"cot-1", "cot-3"} & store.existing_ids()


def test_bad_json_line_exits_2(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, [good(1), '{"id": "cot-2", "question": "Broken', good(3)])
    res = import_cot(path, store.url)
    assert res.exit_code == 2 and f"{path}:2: field '(line)': invalid JSON" in res.output, res.output
    assert row_counts(store) == {"items": 0, "generations": 0, "events": 0}


def test_ids_and_questions_already_in_the_store_are_errors(store: Store, tmp_path: Path) -> None:
    assert import_cot(FIXTURE, store.url).exit_code == 0
    before = row_counts(store)
    again = json.loads(FIXTURE.read_text(encoding="utf-8").splitlines()[1])
    res = import_cot(write(tmp_path, [good(1), again]), store.url)
    assert res.exit_code == 2 and "cots.jsonl:2: field 'id': id 'byo-zh-1' is already in the store" in res.output
    renamed = {**again, "id": "byo-zh-1-copy"}
    res = import_cot(write(tmp_path, [good(1), renamed]), store.url)
    assert res.exit_code == 2 and "cots.jsonl:2: field 'question': duplicate of stored item 'byo-zh-1'" in res.output
    assert row_counts(store) == before


def test_missing_file_and_csv_are_refused(store: Store, tmp_path: Path) -> None:
    res = import_cot(tmp_path / "nope.jsonl", store.url)
    assert res.exit_code == 2 and "nope.jsonl:0: field '(file)': no such file" in res.output
    csv = tmp_path / "cots.csv"
    csv.write_text("id,question\n", encoding="utf-8")
    res = import_cot(csv, store.url)
    assert res.exit_code == 2 and "reads JSONL" in res.output


def _answer_with_key(items: dict[str, Any]) -> Any:
    """A five-strike model that always finds the key: the shown letter whose text is the key's text."""
    def respond(body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        item = next(it for it in items.values() if it.question in text)
        shown = dict(re.findall(r"^([A-E])\. (.*)$", text, re.M))
        return Reply(f"Answer: {next(L for L, t in shown.items() if t.strip() == item.options[item.answer])}")
    return respond


async def test_imported_items_go_through_review_five_strike_and_consensus(store: Store, tmp_path: Path) -> None:
    assert import_cot(FIXTURE, store.url).exit_code == 0
    cfg = ReviewConfig()
    users = sample.add_users(store, "correct horse battery", reviewers=2, panelists=0, admins=0)
    by_id = {u.id: u for u in users.values()}
    ids = ["byo-en-1", "byo-zh-1"]
    with store.transaction() as conn:  # what the review stage does with every item at stage "generated"
        made = assigning.assign(conn, ids, "review", cfg.reviewers_per_item, assigning.pool(conn, cfg, "review"))
    assert {i: len(v) for i, v in made.items()} == {i: 2 for i in ids}
    for item_id in ids:
        with store.engine.connect() as conn:
            item = get_item(conn, item_id)
            revision = item_revision(conn, item)
            reviewers = assigning.assigned(conn, item_id, "review")
        gen = next(g for g in store.generations() if g.item_id == item_id)
        assert revision == content_hash(item.question, item.options, item.answer, gen.cot)  # judged: the import
        for uid in reviewers:
            form = ReviewInput(1, 1, 1, item.answer, True, "", scores=ALL2, difficulty="moderate",
                               cognitive_level="interpretation", revision=revision)
            submit_review(store, item_id, by_id[uid], form, cfg)
    assert {it.stage for it in store.items(ids=ids)} == {"reviewed"}

    items = {it.id: it for it in store.items()}
    async with ScriptedServer(responder=_answer_with_key(items)) as srv:
        llm = LLMConfig(endpoints=[srv.base_url], model="scripted", timeout_s=5.0, max_retries=0)
        async with LLMClient(llm, store) as client:
            strikes = await run_strikes(store, client, StrikesConfig(), "scripted", progress=False)
    assert strikes.eligible == 4 and strikes.passed == 4  # reviewed and still-generated imports alike
    summary = run_consensus(store, cfg)
    assert summary.outcomes.get("approved") == 2 and summary.expert_validated == 2
    with store.engine.connect() as conn:
        decisions = conn.execute(select(DecisionRow.item_id, DecisionRow.human_approvals,
                                        DecisionRow.expert_validated).where(DecisionRow.item_id.in_(ids))).all()
    assert sorted(decisions) == [("byo-en-1", 2, True), ("byo-zh-1", 2, True)]
    assert {it.stage for it in store.items(ids=ids)} == {"approved"}

    release = build_release(store, BuildConfig(splits={"train": 1.0, "validation": 0.0, "test": 0.0}),
                            tmp_path / "release", cfg).release_dir
    rows = {r["id"]: r for r in datasets.load_dataset(str(release), "validated", split="train",
                                                     cache_dir=str(tmp_path / "hf"))}
    assert set(rows) == set(ids) and rows["byo-en-1"]["provenance"]["model"] == "example/reasoner-8b"
    for row in rows.values():  # released as expert-validated, with the file's model and no LLM call of ours
        assert row["validation"] == "expert" and row["rubric_raters"] == 2 and row["rubric_raters_kind"] == "human"
        assert row["provenance"]["model"] != "scripted" and row["provenance"]["model"]
        assert row["provenance"]["prompt_version"].startswith("imported@1")

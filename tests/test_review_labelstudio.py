"""Label Studio interop (formats only) and the `medcot review` command line."""
from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.items import get_item, lock_item, save_cot
from curation.review.labelstudio import export_tasks, import_export, labeling_config
from curation.review.records import ReviewError
from medcot.cli import main
from medcot.config import ReviewConfig
from medcot.review_tables import RUBRIC_DIMENSIONS as RUBRIC
from medcot.review_tables import ReviewRow, RubricScoreRow, UserRow
from medcot.store import Store

PW = "correct horse battery"


@pytest.fixture
def store(sqlite_url: str) -> Store:
    s = Store(sqlite_url)
    sample.add_items(s, 2)
    sample.add_users(s, PW, reviewers=3, panelists=2, admins=1)
    return s


def test_labeling_configs_are_valid_xml_with_every_control():
    review = ET.fromstring(labeling_config("review", list("ABCD")))
    names = {c.get("name"): c for c in review.iter("Choices")}
    assert set(names) == {"relevance", "correctness", "sufficiency", "answer", "approve", "difficulty",
                          "cognitive_level", *RUBRIC}
    assert [c.get("value") for c in names["answer"]] == list("ABCD")
    assert all(c.get("toName") in {"cot", "question"} for c in names.values())
    assert {t.get("name") for t in review.iter("Text")} == {"question", "options", "key", "cot"}
    panel = ET.fromstring(labeling_config("panel", list("ABCDE")))
    pnames = {c.get("name"): [x.get("value") for x in c] for c in panel.iter("Choices")}
    assert pnames["medical_correctness"] == ["0", "1", "2"] and "revise" in pnames["action"]
    assert {t.get("name") for t in panel.iter("TextArea")} == {"feedback", "revised_cot"}


def test_export_then_import_json_and_json_min(store: Store, tmp_path: Path):
    n, config = export_tasks(store, tmp_path, "review")
    tasks = json.loads((tmp_path / "tasks_review.json").read_text())
    assert n == 2 and config.name == "labeling_config_review.xml"
    assert tasks[0]["data"]["item_id"] == "q0000" and "Answer: C" in tasks[0]["data"]["cot"]

    def result(name: str, value: str, kind: str = "choices") -> dict:
        v = {"choices": [value]} if kind == "choices" else {"text": [value]}
        return {"from_name": name, "to_name": "cot", "type": kind, "value": v, "id": name[:5]}

    # the JSON export: tasks with annotations, completed_by a user id or a user object
    export = [dict(task, id=k + 1, annotations=[
        {"id": 10 + k, "completed_by": 7, "was_cancelled": False, "result": [
            result("relevance", "1"), result("correctness", "1"), result("sufficiency", "1"),
            result("answer", "C"), result("approve", "1"), result("comment", "clear", "textarea"),
            *[result(d, "2") for d in RUBRIC], result("difficulty", "hard"), result("cognitive_level", "recall")]},
        {"id": 20 + k, "completed_by": {"id": 8, "email": "rev2@hospital.org"}, "was_cancelled": True, "result": []},
    ]) for k, task in enumerate(tasks)]
    (tmp_path / "ls.json").write_text(json.dumps(export))
    with pytest.raises(ReviewError, match=r"annotator\(s\) \['7'\] match no active human user"):
        import_export(store, tmp_path / "ls.json", ReviewConfig(), {})
    report = import_export(store, tmp_path / "ls.json", ReviewConfig(), {"7": "rev1"})
    assert report == {"annotations": 2, "stored": 2, "already": 0, "rejected": []}
    assert import_export(store, tmp_path / "ls.json", ReviewConfig(), {"7": "rev1"})["already"] == 2  # idempotent

    # the JSON_MIN export: one flat record per annotation, annotator by email
    rows = [{**t["data"], "id": k + 1, "annotator": "rev2@hospital.org", "annotation_id": 30 + k,
             "relevance": "1", "correctness": "0", "sufficiency": "1", "answer": "A", "approve": "0",
             "comment": "wrong key", "lead_time": 12.5, **{d: "1" for d in RUBRIC}, "difficulty": "easy",
             "cognitive_level": "recall"} for k, t in enumerate(tasks)]
    (tmp_path / "ls_min.json").write_text(json.dumps(rows))
    report = import_export(store, tmp_path / "ls_min.json", ReviewConfig(), {"rev2@hospital.org": "rev2"})
    assert report["stored"] == 2 and report["rejected"] == []
    with store.engine.connect() as conn:
        got = conn.execute(select(UserRow.name, ReviewRow.item_id, ReviewRow.correctness, ReviewRow.answer,
                                  ReviewRow.approve).join(UserRow, UserRow.id == ReviewRow.user_id)
                           .order_by(UserRow.name, ReviewRow.item_id)).all()
    assert got == [("rev1", "q0000", 1, "C", True), ("rev1", "q0001", 1, "C", True),
                   ("rev2", "q0000", 0, "A", False), ("rev2", "q0001", 0, "A", False)]
    assert {it.stage for it in store.items()} == {"reviewed"}  # two reviews each, imported like web reviews
    assert all(t["data"]["revision"] for t in tasks)  # every exported task carries the revision judged


def test_import_of_a_stale_or_unversioned_task_is_refused_and_listed(store: Store, tmp_path: Path):
    export_tasks(store, tmp_path, "review")
    tasks = json.loads((tmp_path / "tasks_review.json").read_text())
    with store.transaction() as conn:  # the CoT of q0000 changes after the export (e.g. a regeneration)
        lock_item(conn, "q0000")
        save_cot(conn, get_item(conn, "q0000"), "A rewritten explanation.\nAnswer: C", None, kind="regenerated",
                 call_id=None, reasoning=None, prompt_version="test", finish_reason="stop")
    base = {"annotator": "rev1", "relevance": "1", "correctness": "1", "sufficiency": "1", "answer": "C",
            "approve": "1", **{d: "2" for d in RUBRIC}, "difficulty": "easy", "cognitive_level": "recall"}
    stale = {**tasks[0]["data"], **base}
    unversioned = {k: v for k, v in {**tasks[1]["data"], **base}.items() if k != "revision"}
    (tmp_path / "old.json").write_text(json.dumps([stale, unversioned]))
    report = import_export(store, tmp_path / "old.json", ReviewConfig(), {})
    assert report["stored"] == 0 and [r["item_id"] for r in report["rejected"]] == ["q0000", "q0001"]
    assert "changed since you opened it" in report["rejected"][0]["reason"]
    assert "which revision" in report["rejected"][1]["reason"]
    with store.engine.connect() as conn:
        assert not conn.scalar(select(func.count()).select_from(ReviewRow))


def test_import_rubric_scores_for_the_panel(store: Store, tmp_path: Path):
    [item] = [i for i in store.existing_ids() if i == "q0000"]
    cfg = ReviewConfig()
    with store.transaction() as conn:
        assigning.assign(conn, [item], "review", 2, assigning.pool(conn, cfg, "review"))
    sample.fail_five_strikes(store, item)
    export_tasks(store, tmp_path, "panel")
    [task] = json.loads((tmp_path / "tasks_panel.json").read_text())
    assert "#1 (round 0" in task["data"]["history"]
    rows = [{**task["data"], "annotator": f"pan{k}@x.org", "medical_correctness": "2", "reasoning_structure": "1",
             "information_sufficiency": "2", "terminology_clarity": "2", "clinical_utility": str(k),
             "difficulty": "hard", "cognitive_level": "problem-solving",
             "action": "accept", "answer": "C", "feedback": ""} for k in (1, 2)]
    (tmp_path / "panel_min.json").write_text(json.dumps(rows))
    report = import_export(store, tmp_path / "panel_min.json", cfg, {"pan1@x.org": "pan1", "pan2@x.org": "pan2"})
    assert report["stored"] == 2, report
    assert task["data"]["revision"] and task["data"]["round"] == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(RubricScoreRow.score).where(RubricScoreRow.dimension == "clinical_utility")
                            .order_by(RubricScoreRow.score)).scalars().all() == [1, 2]
    assert store.items(ids=[item])[0].stage == "panel_done"
    with pytest.raises(ReviewError, match="is a reviewer, not a panelist"):
        import_export(store, tmp_path / "panel_min.json", cfg, {"pan1@x.org": "rev1", "pan2@x.org": "pan2"})


def test_cli(store: Store, tmp_path: Path, monkeypatch):
    runner = CliRunner()
    out = runner.invoke(main, ["review", "--help"]).output
    for cmd in ("serve", "add-user", "stats", "export-audit", "export-labelstudio", "import-labelstudio"):
        assert cmd in out
    monkeypatch.setenv("NEW_PW", "a long enough password")
    r = runner.invoke(main, ["review", "add-user", "drwho", "--role", "panelist", "--password-env", "NEW_PW",
                             "--store", store.url])
    assert r.exit_code == 0 and "added panelist 'drwho'" in r.output
    r = runner.invoke(main, ["review", "add-user", "drwho", "--role", "panelist", "--password-env", "NEW_PW",
                             "--store", store.url])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(main, ["review", "stats", "--store", store.url, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["progress"]["stages"] == {"generated": 2}
    r = runner.invoke(main, ["review", "export-audit", "--store", store.url, "--out", str(tmp_path / "audit.jsonl")])
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert r.exit_code == 0 and any(e["kind"] == "user_created" and e["payload"]["user"] == "drwho" for e in lines)
    r = runner.invoke(main, ["review", "export-labelstudio", "--store", store.url, "--out", str(tmp_path / "ls")])
    assert r.exit_code == 0 and (tmp_path / "ls" / "labeling_config_review.xml").is_file()
    monkeypatch.delenv("MEDCOT_REVIEW_SECRET", raising=False)
    r = runner.invoke(main, ["review", "serve", "--set", f"store.url={store.url}"])
    assert r.exit_code == 2 and "MEDCOT_REVIEW_SECRET" in r.output

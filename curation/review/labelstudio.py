"""Label Studio interop (formats only; Label Studio itself is never installed) and the audit export.

Export: a tasks JSON (one task per item, our item id in `data.item_id`) and a labeling config XML, for the
binary initial-review form or the panel's rubric form. Import: Label Studio's JSON export (tasks with
`annotations[].result[]` of `choices`/`textarea` values, `completed_by` an id or a user object) and its
JSON_MIN export (one flat record per annotation: data fields, one key per control, `annotator` an id or an
email). Every annotation becomes a submission BY A NAMED USER here, through the same code as the web form;
an annotator that maps to no user is an error (nothing is written), never a guess.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import insert, select

from curation.review.assign import is_assigned
from curation.review.auth import get_user_by_name
from curation.review.items import attempts, current_cot, editors, item_revision, lock_item, log, revision_count
from curation.review.judge import history_text
from curation.review.panel import submit_panel
from curation.review.records import Edits, PanelInput, ReviewError, ReviewInput, User
from curation.review.submit import submit_review
from medcot.config import ReviewConfig
from medcot.db import EventRow
from medcot.records import Event
from medcot.review_tables import BINARY_DIMENSIONS, COGNITIVE_LEVELS, DIFFICULTIES, RUBRIC_DIMENSIONS, AssignmentRow
from medcot.store import Store

ROLE_FOR = {"review": "reviewer", "panel": "panelist"}


def _choices(parent: ET.Element, name: str, to: str, values: list[str]) -> None:
    el = ET.SubElement(parent, "Choices", name=name, toName=to, choice="single", required="true")
    for v in values:
        ET.SubElement(el, "Choice", value=v)


def _rubric(view: ET.Element) -> None:
    for dim in RUBRIC_DIMENSIONS:
        ET.SubElement(view, "Header", value=dim.replace("_", " ") + " (0-2)")
        _choices(view, dim, "cot", ["0", "1", "2"])
    ET.SubElement(view, "Header", value="Difficulty")
    _choices(view, "difficulty", "question", list(DIFFICULTIES))
    ET.SubElement(view, "Header", value="Cognitive level")
    _choices(view, "cognitive_level", "question", list(COGNITIVE_LEVELS))


def labeling_config(form: str, letters: list[str]) -> str:
    view = ET.Element("View")
    for name, title in (("question", "Question"), ("options", "Options"), ("key", "Answer key"), ("cot", "Chain of thought")):
        ET.SubElement(view, "Header", value=title)
        ET.SubElement(view, "Text", name=name, value=f"${name}")
    if form == "panel":
        ET.SubElement(view, "Header", value="Five-strike history")
        ET.SubElement(view, "Text", name="history", value="$history")
        _rubric(view)
        _choices(view, "action", "cot", ["accept", "revise", "regenerate", "discard"])
        _choices(view, "answer", "question", letters)
        ET.SubElement(view, "TextArea", name="feedback", toName="cot", maxSubmissions="1")
        ET.SubElement(view, "TextArea", name="revised_cot", toName="cot", maxSubmissions="1")
    else:
        for dim in BINARY_DIMENSIONS:
            ET.SubElement(view, "Header", value=f"{dim} (1/0)")
            _choices(view, dim, "cot", ["1", "0"])
        _choices(view, "answer", "question", letters)
        _rubric(view)
        ET.SubElement(view, "Header", value="Approve the wording (1/0)")
        _choices(view, "approve", "cot", ["1", "0"])
        ET.SubElement(view, "TextArea", name="comment", toName="cot", maxSubmissions="1")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def export_tasks(store: Store, out_dir: Path, form: str) -> tuple[int, Path]:
    """Write tasks_<form>.json and labeling_config_<form>.xml; returns (tasks, config path)."""
    stage = {"review": "generated", "panel": "escalated"}[form]
    tasks, letters = [], set()
    with store.engine.connect() as conn:
        for item in store.items(stage=stage):
            cot = current_cot(conn, item.id)
            data = {"item_id": item.id, "question": item.question, "key": item.answer,
                    "options": "\n".join(f"{k}. {v}" for k, v in sorted(item.options.items())),
                    "cot": cot["cot"] if cot else "", "round": revision_count(conn, item.id),
                    "revision": item_revision(conn, item)}  # the revision judged: checked again at import
            if form == "panel":
                data["history"] = history_text(attempts(conn, item.id))
            tasks.append({"data": data})
            letters |= set(item.options)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"tasks_{form}.json").write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config = out_dir / f"labeling_config_{form}.xml"
    config.write_text(labeling_config(form, sorted(letters) or list("ABCD")), encoding="utf-8")
    return len(tasks), config


# ---- import -------------------------------------------------------------------------------------
def _annotator_id(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("email") or value.get("username") or value.get("id")
    if value is None or value == "":
        raise ReviewError("an annotation has no annotator (completed_by / annotator)")
    return str(value)


def _result_value(r: dict[str, Any]) -> Any:
    value = r.get("value") or {}
    if r.get("type") == "choices":
        choices = value.get("choices") or []
        return choices[0] if len(choices) == 1 else choices
    if r.get("type") == "textarea":
        return "\n".join(value.get("text") or [])
    raise ReviewError(f"unsupported result type {r.get('type')!r} (from_name {r.get('from_name')!r})")


def _records_json(tasks: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for task in tasks:
        data = task.get("data") or {}
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            fields = {r["from_name"]: _result_value(r) for r in ann.get("result") or [] if "from_name" in r}
            yield str(data.get("item_id", "")), _annotator_id(ann.get("completed_by")), {**data, **fields}


def _records_min(rows: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for row in rows:
        fields = {k: (v.get("choices") if isinstance(v, dict) and "choices" in v else v) for k, v in row.items()}
        yield str(row.get("item_id", "")), _annotator_id(row.get("annotator")), fields


def read_export(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(item id, annotator, fields) per annotation, from a JSON or JSON_MIN export."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReviewError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise ReviewError(f"{path}: a Label Studio export is a JSON list of objects")
    if not data:
        return []
    if "annotations" in data[0]:
        records = list(_records_json(data))
    elif "annotator" in data[0]:
        records = list(_records_min(data))
    else:
        raise ReviewError(f"{path}: neither Label Studio JSON (tasks with 'annotations') nor JSON_MIN ('annotator')")
    bad = [r for r in records if not r[0]]
    if bad:
        raise ReviewError(f"{path}: {len(bad)} annotation(s) without data.item_id (export tasks from medcot)")
    return records


def _one(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, list) or value is None or str(value) == "":
        raise ReviewError(f"field {name!r} needs exactly one value, got {value!r}")
    return str(value)


def _labels(fields: dict[str, Any]) -> tuple[dict[str, int] | None, str | None, str | None]:
    scores = {d: int(_one(fields, d)) for d in RUBRIC_DIMENSIONS} if all(d in fields for d in RUBRIC_DIMENSIONS) else None
    return scores, fields.get("difficulty") or None, fields.get("cognitive_level") or None


def _form(fields: dict[str, Any]) -> tuple[str, ReviewInput | PanelInput]:
    """The typed form of one annotation. `revision` comes from the exported task (None for tasks exported
    before revisions were recorded: the submission code refuses those, and the import lists them)."""
    revision = str(fields["revision"]) if fields.get("revision") else None
    scores, difficulty, level = _labels(fields)
    if "action" in fields and scores is not None:
        return "panel", PanelInput(round=int(fields.get("round", 0)), scores=scores, action=_one(fields, "action"),
                                   answer=_one(fields, "answer"), feedback=str(fields.get("feedback") or ""),
                                   revised_cot=str(fields.get("revised_cot") or "") or None, revision=revision,
                                   difficulty=difficulty, cognitive_level=level)
    if all(d in fields for d in BINARY_DIMENSIONS):
        return "review", ReviewInput(relevance=int(_one(fields, "relevance")), correctness=int(_one(fields, "correctness")),
                                     sufficiency=int(_one(fields, "sufficiency")), answer=_one(fields, "answer"),
                                     approve=_one(fields, "approve") == "1", comment=str(fields.get("comment") or ""),
                                     edits=Edits(), revision=revision, scores=scores, difficulty=difficulty,
                                     cognitive_level=level)
    raise ReviewError(f"an annotation has neither the binary review fields nor the rubric fields: {sorted(fields)}")


def _resolve_users(store: Store, names: set[str], mapping: dict[str, str]) -> dict[str, User]:
    users, missing = {}, []
    with store.engine.connect() as conn:
        for ann in sorted(names):
            user = get_user_by_name(conn, mapping.get(ann, ann))
            if user is None or not user.active or not user.is_human:
                missing.append(ann)
            else:
                users[ann] = user
    if missing:
        raise ReviewError(f"annotator(s) {missing} match no active human user: add them with `medcot review add-user` "
                          f"or map them with --annotator LS_ID_OR_EMAIL=USER. Nothing was imported.")
    return users


def _ensure_assignment(store: Store, item_id: str, user: User, phase: str) -> None:
    with store.transaction() as conn:
        lock_item(conn, item_id)
        if is_assigned(conn, item_id, user.id, phase):
            return
        if user.id in editors(conn, item_id):
            raise ReviewError(f"{user.name} edited {item_id} and cannot review it", 403)
        conn.execute(insert(AssignmentRow).values(item_id=item_id, user_id=user.id, phase=phase))
        log(conn, Event(kind="assigned", item_id=item_id, stage=phase, actor="labelstudio-import",
                        payload={"user": user.name, "kind": user.kind, "phase": phase}))


def import_export(store: Store, path: Path, cfg: ReviewConfig, mapping: dict[str, str]) -> dict[str, Any]:
    """Validate everything first (formats, users, roles, items); then submit each annotation in turn."""
    parsed = [(item_id, ann, *_form(fields)) for item_id, ann, fields in read_export(path)]
    users = _resolve_users(store, {ann for _, ann, _, _ in parsed}, mapping)
    known = store.existing_ids()
    for item_id, ann, phase, _ in parsed:
        if item_id not in known:
            raise ReviewError(f"unknown item {item_id!r} in {path}. Nothing was imported.")
        if users[ann].role != ROLE_FOR[phase]:
            raise ReviewError(f"{users[ann].name} is a {users[ann].role}, not a {ROLE_FOR[phase]}. Nothing was imported.")
    # a refused annotation (stale or missing revision, a closed phase ...) is skipped and listed, never stored
    report: dict[str, Any] = {"annotations": len(parsed), "stored": 0, "already": 0, "rejected": []}
    for item_id, ann, phase, form in parsed:
        user = users[ann]
        try:
            _ensure_assignment(store, item_id, user, phase)
            if phase == "review":
                assert isinstance(form, ReviewInput)
                status = submit_review(store, item_id, user, form, cfg, actor_note="labelstudio").status
            else:
                assert isinstance(form, PanelInput)
                status = submit_panel(store, item_id, user, form, cfg)
            report["already" if status == "already" else "stored"] += 1
        except ReviewError as exc:
            report["rejected"].append({"item_id": item_id, "annotator": ann, "reason": str(exc)})
    return report


def audit_lines(store: Store, item_id: str | None = None) -> Iterator[str]:
    query = select(EventRow).order_by(EventRow.id)
    if item_id is not None:
        query = query.where(EventRow.item_id == item_id)
    with store.engine.connect() as conn:
        for r in conn.execute(query).mappings():
            yield json.dumps({"id": r["id"], "at": str(r["created_at"]), "item_id": r["item_id"], "stage": r["stage"],
                              "kind": r["kind"], "actor": r["actor"], "actor_kind": r["actor_kind"],
                              "payload": r["payload"]}, ensure_ascii=False, default=str)

"""The review on a real PostgreSQL server: the whole workflow, concurrent submissions under the item lock,
and the web app on top of it."""
from __future__ import annotations

import re
import threading
import uuid

import pytest
from fastapi.testclient import TestClient
from review_helpers import RUBRIC_FORM, page_form, panel_vote, vote
from sqlalchemy import create_engine, func, select, text

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from curation.review.consensus import run_consensus
from curation.review.panel import submit_panel
from curation.review.records import Edits, ReviewError
from curation.review.stats import collect
from curation.review.submit import submit_adjudication, submit_review
from medcot.config import ReviewConfig, load_config
from medcot.review_tables import ReviewRow, RevisionRow
from medcot.store import Store

pytestmark = pytest.mark.postgres
PW = "correct horse battery"
ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}


@pytest.fixture
def pg_store(pg_url: str):
    """A fresh database on the session's PostgreSQL server (dropped afterwards)."""
    name = f"review_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(pg_url.rsplit("/", 1)[0] + f"/{name}")
    assert store.engine.dialect.name == "postgresql"
    try:
        yield store
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_workflow_on_postgres(pg_store: Store):
    cfg = ReviewConfig()
    store = pg_store
    ids = sample.add_items(store, 3)
    users = sample.add_users(store, PW, reviewers=3, panelists=2, admins=1)
    by_id = {u.id: u for u in users.values()}
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg, "review"))
        who = {i: assigning.assigned(conn, i, "review") for i in ids}
    # item 0: two reviewers submit at the same moment, one of them with a (private) proposal
    errors: list[Exception] = []

    def go(uid: int, edits: Edits) -> None:
        try:
            submit_review(store, ids[0], by_id[uid], vote(store, ids[0], edits=edits), cfg)
        except ReviewError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(who[ids[0]][0], Edits(cot="Edited.\nAnswer: C"))),
               threading.Thread(target=go, args=(who[ids[0]][1], Edits()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.engine.connect() as conn:
        n_reviews = conn.scalar(select(func.count()).select_from(ReviewRow).where(ReviewRow.item_id == ids[0]))
        n_revs = conn.scalar(select(func.count()).select_from(RevisionRow))
    # serialized by the row lock; a proposal changes nothing, so both reviews of the same revision land
    assert (n_revs, n_reviews, errors) == (0, 2, [])
    for uid in who[ids[1]]:
        submit_review(store, ids[1], by_id[uid], vote(store, ids[1]), cfg)
    x, y = who[ids[2]]
    submit_review(store, ids[2], by_id[x], vote(store, ids[2]), cfg)
    submit_review(store, ids[2], by_id[y], vote(store, ids[2], answer="B"), cfg)
    for i in ids:
        sample.set_stage(store, i, "strikes_passed")
    assert run_consensus(store, cfg).outcomes == {"approved": 1, "adjudication": 2}
    admin = users["admin1"]
    # reconciliation: adopt the proposal (a new revision) / confirm the split item; the panel judges both afresh
    assert submit_adjudication(store, ids[0], admin, vote(store, ids[0], edits=Edits(cot="Edited.\nAnswer: C")),
                               cfg).item_stage == "escalated"
    assert submit_adjudication(store, ids[2], admin, vote(store, ids[2]), cfg).outcome == "escalated"
    for i in (ids[0], ids[2]):
        for p in (users["pan1"], users["pan2"]):
            submit_panel(store, i, p, panel_vote(store, i), cfg)
    assert run_consensus(store, cfg).outcomes == {"approved": 2}
    assert {it.stage for it in store.items()} == {"approved"}
    with store.engine.connect() as conn:
        s = collect(conn)
    assert s["validation"] == {"expert_validated": 3, "automated_only": 0}
    # rubric units are revisions: item 0 twice (base by reviewers, new by the panel), items 1 and 2 once each
    assert s["krippendorff_rubric"]["clinical_utility"]["units"] == 4


def _reviewers(store: Store, item_id: str) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.scalars(select(ReviewRow.user_id).where(ReviewRow.item_id == item_id)))


def test_app_on_postgres(pg_store: Store):
    cfg = load_config(None, [f"store.url={pg_store.url}"])
    ids = sample.add_items(pg_store, 1, cot_extra="<script>alert(1)</script>")
    sample.add_users(pg_store, PW, reviewers=2, panelists=0, admins=1)
    with pg_store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
    app = create_app(cfg, secret_key="k" * 40, store=pg_store)
    for name in ("rev1", "rev2"):
        c = TestClient(app, base_url="http://127.0.0.1")
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        c.post("/login", data={"name": name, "password": PW, "csrf_token": token})
        page = c.get(f"/items/{ids[0]}/review").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        r = c.post(f"/items/{ids[0]}/review", data={"relevance": "1", "correctness": "1", "sufficiency": "1",
                                                    "answer": "C", "approve": "1", **RUBRIC_FORM, **page_form(page)})
        assert r.status_code == 200 and "Saved." in r.text  # the banner of code "saved"
    assert pg_store.items()[0].stage == "reviewed"

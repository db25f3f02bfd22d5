"""Expert time: active time per submission (page served -> submit, idle capped) through the real app, pace,
backlog and ETA in `medcot review stats --json` and on the dashboard, and the card's median minutes per
expert-validated item, computed from what was recorded (never a constant)."""
from __future__ import annotations

import json
import re
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from review_helpers import RUBRIC_FORM, page_form
from sqlalchemy import insert, select, update

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from curation.review.timing import expert_time, record_active_time
from dataset_builder.build import build_release
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.cli import main
from medcot.config import BuildConfig, ConfigError, load_config
from medcot.db import EventRow
from medcot.records import Event
from medcot.review_tables import DecisionRow, ReviewTimeRow, UserRow
from medcot.store import Store

PW = "correct horse battery"
FORM = {"relevance": "1", "correctness": "1", "sufficiency": "1", "answer": "C", "approve": "1", "comment": "ok",
        **RUBRIC_FORM}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(app, name: str) -> TestClient:
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.post("/login", data={"name": name, "password": PW, "csrf_token": _csrf(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303
    return c


@pytest.fixture
def env(tmp_path: Path):
    cfg = load_config(None, [f"store.url={tmp_path / 't.db'}"])
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 4)
    users = sample.add_users(store, PW, reviewers=2, panelists=0, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
    return cfg, store, ids, users, create_app(cfg, secret_key="k" * 40, store=store)


def test_active_time_is_page_to_submit_capped(env):
    cfg, store, ids, users, app = env
    rev = users["rev1"]
    opened = datetime.now(UTC) - timedelta(hours=3)
    with store.transaction() as conn:
        store.log_event(Event(kind="item_viewed", item_id=ids[0], stage="app", actor="rev1", actor_kind="human",
                              payload={"phase": "review"}), conn)
        assert record_active_time(conn, ids[1], rev, "review", 20) is None  # never served: nothing recorded
    with store.transaction() as conn:  # make the view 3 h old, then a later view of another phase
        conn.execute(update(EventRow).where(EventRow.kind == "item_viewed").values(created_at=opened))
        assert record_active_time(conn, ids[0], rev, "review", 20, now=opened + timedelta(seconds=95)) == 95
        assert record_active_time(conn, ids[0], rev, "review", 20, now=opened + timedelta(hours=2)) == 1200
        rows = conn.execute(select(ReviewTimeRow.seconds, ReviewTimeRow.capped)).all()
    assert [tuple(r) for r in rows] == [(95.0, False), (1200.0, True)]
    with pytest.raises(ConfigError, match="max_active_minutes"):
        load_config(None, ["review.max_active_minutes=0"])


def test_web_submissions_are_timed_once_and_stats_show_pace_backlog_eta(env, tmp_path: Path):
    cfg, store, ids, users, app = env
    c = _login(app, "rev1")
    mine = [a["item_id"] for a in c.get("/api/assignments").json() if a["open"]]
    assert len(mine) == 4  # two reviewers, two per item: each has all four
    for item in mine[:3]:
        page = c.get(f"/items/{item}/review").text
        form = {**FORM, **page_form(page)}
        assert c.post(f"/items/{item}/review", data=form, follow_redirects=False).status_code == 303
        c.post(f"/items/{item}/review", data=form, follow_redirects=False)  # a double click: not timed twice
    with store.engine.connect() as conn:
        rows = conn.execute(select(ReviewTimeRow.item_id, ReviewTimeRow.seconds, ReviewTimeRow.phase)).all()
        assert sorted(r.item_id for r in rows) == sorted(mine[:3]) and {r.phase for r in rows} == {"review"}
        assert all(0 <= r.seconds < 60 for r in rows)
        t = expert_time(conn, cfg.review)
    assert t["backlog"] == {"review": 8 - 3, "panel": 0, "adjudication": 0}
    assert t["reviewers"]["rev1"]["submissions"] == 3
    assert t["reviewers"]["rev1"]["median_minutes"] == round(statistics.median(r.seconds for r in rows) / 60, 2)
    assert t["team_per_day"] == round(3 / 7, 2) and t["eta_days"] == round(5 / t["team_per_day"], 1)
    res = CliRunner().invoke(main, ["review", "stats", "--store", cfg.store.url, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["expert_time"]["backlog"]["review"] == 5
    res = CliRunner().invoke(main, ["review", "stats", "--store", cfg.store.url])
    assert "backlog (submissions owed): review 5" in res.output and "rev1: 3 timed" in res.output
    own = c.get("/").text
    median = round(statistics.median(r.seconds for r in rows) / 60, 2)
    assert f"Done 3 · remaining 1 · your median {median} min per item" in own
    admin = _login(app, "admin1")
    page = admin.get("/admin").text
    assert '<span class="backlog-review">5</span>' in page and f"{t['eta_days']} days" in page


def test_card_reports_median_expert_minutes_per_validated_item(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = make_store(str(tmp_path / "store.db"), SyntheticSpec(items=60, seed=3))
    with store.transaction() as conn:
        validated = list(conn.scalars(select(DecisionRow.item_id).where(DecisionRow.kind == "approved",
                                                                         DecisionRow.expert_validated.is_(True))))
        humans = list(conn.scalars(select(UserRow.id).where(UserRow.kind == "human")))
        assert len(validated) >= 5 and len(humans) >= 2
        minutes = {}
        for k, item in enumerate(validated[:5]):  # two reviewers each, different times
            a, b = 60.0 * (k + 1), 30.0 * (k + 2)
            conn.execute(insert(ReviewTimeRow), [
                {"item_id": item, "user_id": humans[0], "phase": "review", "seconds": a, "capped": False},
                {"item_id": item, "user_id": humans[1], "phase": "review", "seconds": b, "capped": False}])
            minutes[item] = (a + b) / 60
    result = build_release(store, BuildConfig(), tmp_path / "rel")
    card = (result.release_dir / "README.md").read_text(encoding="utf-8")
    released = {item for item in minutes}  # every validated item of a synthetic store is released
    expected = round(statistics.median(minutes[i] for i in released), 1)
    assert f"a median of **{expected} minutes** of active expert time per expert-validated item" in card
    flat = " ".join(card.split())
    assert "over 5 items timed" in flat, flat[flat.find("Expert time"):][:400]
    store.close()

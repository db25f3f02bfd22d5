"""Accounts over months (deactivate with hand-over, activate, reset a password, routing profiles), the staffing
check in `medcot review stats --json`, routing by language and specialty, login backoff per (account, address),
trusted proxies, and consensus as a background job. Real SQLite stores, the real CLI and the real app."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from review_helpers import run_consensus_job, vote
from sqlalchemy import select, update

from curation.review import assign as assigning
from curation.review import sample
from curation.review.accounts import deactivate, open_assignments, staffing
from curation.review.app import create_app
from curation.review.auth import client_address, create_user
from curation.review.jobs import Jobs
from curation.review.submit import submit_review
from medcot.cli import main
from medcot.config import ConfigError, load_config
from medcot.db import EventRow, ItemRow
from medcot.records import Item
from medcot.review_tables import AssignmentRow
from medcot.store import Store

PW = "correct horse battery"


def cfg_for(db: Path, *sets: str):
    return load_config(None, [f"store.url={db}", *sets])


def add_items(store: Store, n: int, language: str, prefix: str, specialty: str | None = None) -> list[str]:
    items = [Item(id=f"{prefix}{i:03d}", family_id=f"{prefix}{i:03d}", language=language,
                  question=f"{prefix} question {i}?", options=dict(sample.OPTIONS), answer="C", source="sample",
                  specialty=specialty, stage="generated") for i in range(n)]
    store.add_items(items)
    return [it.id for it in items]


def assign_review(store: Store, cfg, ids: list[str]) -> set[str]:
    fallbacks: set[str] = set()
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", cfg.review.reviewers_per_item,
                         assigning.pool(conn, cfg.review, "review"), routing=cfg.review.routing, fallbacks=fallbacks)
    return fallbacks


def assignees(store: Store, item_id: str, phase: str = "review") -> set[str]:
    with store.engine.connect() as conn:
        names = {u.id: u.name for u in assigning.pool(conn, load_config(None).review, phase)}
        ids = assigning.assigned(conn, item_id, phase)
        from curation.review.auth import get_user
        return {names.get(i) or get_user(conn, i).name for i in ids}


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def stats_json(db: Path) -> dict:
    code, out = cli("review", "stats", "--store", str(db), "--json")
    assert code == 0, out
    return json.loads(out)


# ---- deactivation hands open work over; stats shows a shortfall only when nobody is left -------------------------
def test_deactivate_reassigns_open_work_and_stats_reports_shortfall(tmp_path: Path):
    db = tmp_path / "acc.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 6)
    users = sample.add_users(store, PW, reviewers=4, panelists=0, admins=1)
    assign_review(store, cfg, ids)
    rev1 = users["rev1"]
    mine = [i for i in ids if "rev1" in assignees(store, i)]
    assert mine
    done_item = mine[0]  # rev1 finishes one review before leaving: that review stays, it is not handed over
    submit_review(store, done_item, rev1, vote(store, done_item, 1, 1, 1, "C", True), cfg.review)
    assert stats_json(db)["staffing"]["shortfall"] == 0

    code, out = cli("review", "user", "deactivate", "rev1", "--store", str(db))
    assert code == 0, out
    assert f"{len(mine) - 1} open assignment(s) handed over" in out
    for item in mine[1:]:
        who = assignees(store, item)
        assert "rev1" not in who and len(who) == 2  # filled up again by the remaining reviewers
    assert "rev1" in assignees(store, done_item)  # finished work stays
    with store.engine.connect() as conn:
        assert open_assignments(conn, rev1.id, cfg.review) == {}
        handed = conn.execute(select(EventRow.item_id).where(EventRow.kind == "unassigned")).scalars().all()
    assert sorted(handed) == sorted(mine[1:])
    s = stats_json(db)["staffing"]
    assert s["shortfall"] == 0 and s["review"]["open_items"] == 6 and s["review"]["unfilled"] == 0

    # two more leave: one reviewer is left, every item needs two -> a shortfall, named in stats and the CLI
    for name in ("rev2", "rev3"):
        code, out = cli("review", "user", "deactivate", name, "--store", str(db))
        assert code == 0, out
    assert "short of eligible people" in out
    s = stats_json(db)["staffing"]
    assert s["shortfall"] > 0 and s["review"]["short"] == s["shortfall"]
    assert set(s["review"]["short_items"]) <= set(ids)
    code, text = cli("review", "stats", "--store", str(db))
    assert f"Staffing: shortfall {s['shortfall']} item(s)" in text

    # a new reviewer joins: the next assignment fills the gap, the shortfall is gone
    create_user(store, "rev9", "reviewer", PW)
    assign_review(store, cfg, ids)
    assert stats_json(db)["staffing"]["shortfall"] == 0


def test_deactivated_panelist_is_replaced_and_cannot_log_in(tmp_path: Path):
    db = tmp_path / "panel.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    (item,) = sample.add_items(store, 1)
    sample.fail_five_strikes(store, item)
    sample.add_users(store, PW, reviewers=0, panelists=3, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
    before = assignees(store, item, "panel")
    leaving = sorted(before)[0]
    app = create_app(cfg, secret_key="k" * 40, store=store)
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.post("/login", data={"name": leaving, "password": PW, "csrf_token": _csrf(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303 and c.get("/api/me").status_code == 200
    with store.transaction() as conn:
        result = deactivate(conn, leaving, cfg.review)
    assert result.sessions_revoked == 1 and result.unassigned == {"panel": [item]} and not result.short
    after = assignees(store, item, "panel")
    assert leaving not in after and len(after) == 2 and (after - before)  # a replacement panelist
    assert c.get("/api/me").status_code == 401  # the open session ended at once
    r = c.post("/login", data={"name": leaving, "password": PW, "csrf_token": _csrf(c.get("/login").text)})
    assert r.status_code == 401
    code, out = cli("review", "user", "activate", leaving, "--store", str(db))
    assert code == 0, out
    r = c.post("/login", data={"name": leaving, "password": PW, "csrf_token": _csrf(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303


def test_reset_password_and_profile_errors(tmp_path: Path, monkeypatch):
    db = tmp_path / "pw.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    sample.add_users(store, PW, reviewers=1, panelists=0, admins=0)
    monkeypatch.setenv("NEW_PW", "a brand new password")
    code, out = cli("review", "user", "reset-password", "rev1", "--password-env", "NEW_PW", "--store", str(db))
    assert code == 0 and "password of 'rev1' reset" in out
    app = create_app(cfg, secret_key="k" * 40, store=store)
    c = TestClient(app, base_url="http://127.0.0.1")
    for password, status in ((PW, 401), ("a brand new password", 303)):
        r = c.post("/login", data={"name": "rev1", "password": password, "csrf_token": _csrf(c.get("/login").text)},
                   follow_redirects=False)
        assert r.status_code == status
    monkeypatch.setenv("SHORT_PW", "short")
    code, out = cli("review", "user", "reset-password", "rev1", "--password-env", "SHORT_PW", "--store", str(db))
    assert code == 2 and "at least 10 characters" in out
    code, out = cli("review", "user", "set-profile", "nobody", "--languages", "zh", "--store", str(db))
    assert code == 2 and "no user named 'nobody'" in out
    code, out = cli("review", "user", "set-profile", "rev1", "--languages", "Chinese!", "--store", str(db))
    assert code == 2 and "'Chinese!' is not a language code" in out
    code, out = cli("review", "user", "set-profile", "rev1", "--specialties", "cardio", "--store", str(db))
    assert code == 2 and "unknown specialty 'cardio'" in out
    code, out = cli("review", "user", "set-profile", "rev1", "--languages", "zh,en", "--specialties",
                    "internal_medicine", "--store", str(db))
    assert code == 0 and "languages en,zh; specialties internal_medicine" in out
    code, out = cli("review", "user", "set-profile", "rev1", "--languages", "", "--store", str(db))
    assert code == 0 and "languages any; specialties internal_medicine" in out  # the other field is kept
    code, out = cli("review", "user", "list", "--store", str(db))
    assert "rev1\treviewer\thuman\tactive\t-\tinternal_medicine" in out
    code, out = cli("review", "user", "set-profile", "rev1", "--ui-language", "fr", "--store", str(db))
    assert code == 2 and "interface language 'fr' is not one of en, zh" in out
    assert 'lang="en"' in c.get("/", headers={"accept-language": "en"}).text.split(">", 2)[1]
    code, out = cli("review", "user", "set-profile", "rev1", "--ui-language", "zh", "--store", str(db))
    assert code == 0 and "interface zh" in out
    assert '<html lang="zh"' in c.get("/", headers={"accept-language": "en"}).text  # the profile wins


# ---- routing ---------------------------------------------------------------------------------------------------
def _profiles(db: Path, **langs: str) -> None:
    for name, value in langs.items():
        code, out = cli("review", "user", "set-profile", name, "--languages", value, "--store", str(db))
        assert code == 0, out


def test_items_go_to_reviewers_of_their_language(tmp_path: Path):
    db = tmp_path / "route.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    zh = add_items(store, 4, "zh", "zh")
    en = add_items(store, 4, "en", "en")
    sample.add_users(store, PW, reviewers=5, panelists=0, admins=0)
    _profiles(db, rev1="zh", rev2="zh", rev3="en", rev4="en,zh")  # rev5: no profile, reads every language
    assert assign_review(store, cfg, zh + en) == set()
    for item in zh:
        assert assignees(store, item) <= {"rev1", "rev2", "rev4", "rev5"}
    for item in en:
        assert assignees(store, item) <= {"rev3", "rev4", "rev5"}


def test_routing_fallback_any_is_warned_and_wait_leaves_a_shortfall(tmp_path: Path):
    db = tmp_path / "fallback.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    zh = add_items(store, 2, "zh", "zh")
    sample.add_users(store, PW, reviewers=3, panelists=0, admins=0)
    _profiles(db, rev1="zh", rev2="en", rev3="en")  # only one reviewer reads Chinese; each item needs two
    assert assign_review(store, cfg, zh) == set(zh)  # filled from the others, and said so
    for item in zh:
        assert "rev1" in assignees(store, item) and len(assignees(store, item)) == 2
    with store.engine.connect() as conn:
        events = conn.execute(select(EventRow.payload).where(EventRow.kind == "routing_fallback")).scalars().all()
    assert len(events) == 2 and all(e["fitting"] == 1 and e["language"] == "zh" for e in events)

    db2 = tmp_path / "wait.db"
    cfg2 = cfg_for(db2, "review.routing.fallback=wait")
    store2 = Store(cfg2.store.url)
    zh2 = add_items(store2, 2, "zh", "zh")
    sample.add_users(store2, PW, reviewers=3, panelists=0, admins=0)
    _profiles(db2, rev1="zh", rev2="en", rev3="en")
    assert assign_review(store2, cfg2, zh2) == set()
    assert all(assignees(store2, i) == {"rev1"} for i in zh2)
    code, out = cli("review", "stats", "--store", str(db2), "--json", "--set", "review.routing.fallback=wait")
    s = json.loads(out)["staffing"]
    assert s["shortfall"] == 2 and s["review"]["short_items"] == sorted(zh2)
    with pytest.raises(ConfigError, match="review.routing.fallback must be any or wait"):
        load_config(None, ["review.routing.fallback=maybe"])


def test_specialty_routing_discipline_covers_its_subspecialties(tmp_path: Path):
    db = tmp_path / "spec.db"
    cfg = cfg_for(db, "review.routing.specialties=true")
    store = Store(cfg.store.url)
    cardio = add_items(store, 3, "en", "card", specialty="internal_medicine/cardiology")
    surgery = add_items(store, 3, "en", "surg", specialty="surgery")
    sample.add_users(store, PW, reviewers=4, panelists=0, admins=0)
    for name, spec in (("rev1", "internal_medicine"), ("rev2", "internal_medicine/cardiology"),
                       ("rev3", "surgery"), ("rev4", "surgery,pediatrics")):
        code, out = cli("review", "user", "set-profile", name, "--specialties", spec, "--store", str(db))
        assert code == 0, out
    assert assign_review(store, cfg, cardio + surgery) == set()
    assert all(assignees(store, i) == {"rev1", "rev2"} for i in cardio)
    assert all(assignees(store, i) == {"rev3", "rev4"} for i in surgery)


# ---- login abuse -----------------------------------------------------------------------------------------------
def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _login(c: TestClient, name: str, password: str, **headers: str):
    return c.post("/login", data={"name": name, "password": password, "csrf_token": _csrf(c.get("/login").text)},
                  headers=headers, follow_redirects=False)


def test_login_backoff_is_per_account_and_address(tmp_path: Path):
    db = tmp_path / "login.db"
    cfg = cfg_for(db, "review.login_max_failures=3", "review.login_backoff_s=0.6")
    store = Store(cfg.store.url)
    sample.add_users(store, PW, reviewers=1, panelists=0, admins=1)
    app = create_app(cfg, secret_key="k" * 40, store=store)
    shared = TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.5", 4000))
    for i in range(12):  # made-up names from a shared address never stop a real user there
        assert _login(shared, f"nobody{i}", "wrong password!!").status_code == 401
    assert _login(shared, "admin1", PW).status_code == 303
    elsewhere = TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.99", 4000))
    for _ in range(3):
        assert _login(elsewhere, "rev1", "wrong password!!").status_code == 401
    r = _login(elsewhere, "rev1", PW)  # this pair now backs off, even with the right password
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "wait" in r.text
    home = TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.7", 4000))
    assert _login(home, "rev1", PW).status_code == 303  # failures elsewhere do not lock rev1 out at home
    time.sleep(0.7)
    assert _login(elsewhere, "rev1", "wrong password!!").status_code == 401  # after the wait: one more try
    r = _login(elsewhere, "rev1", PW)
    assert r.status_code == 429  # and the wait doubled (1.2 s)
    time.sleep(1.3)
    assert _login(elsewhere, "rev1", PW).status_code == 303  # a success resets the pair
    assert _login(elsewhere, "rev1", "wrong password!!").status_code == 401
    with store.engine.connect() as conn:
        ips = {e["ip"] for e in conn.execute(select(EventRow.payload).where(EventRow.kind == "login")).scalars()}
    assert ips == {"10.0.0.5", "10.0.0.7", "10.0.0.99"}  # the audit log records the client's address


def test_client_address_trusts_only_configured_proxies():
    assert client_address("203.0.113.9", "1.2.3.4", []) == "203.0.113.9"  # no proxies: the header is ignored
    assert client_address("203.0.113.9", "1.2.3.4", ["10.0.0.0/8"]) == "203.0.113.9"  # peer is not a proxy
    assert client_address("10.0.0.2", "1.2.3.4", ["10.0.0.0/8"]) == "1.2.3.4"
    # the client may prepend anything: only the hop the proxy appended counts
    assert client_address("10.0.0.2", "6.6.6.6, 1.2.3.4", ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_address("10.0.0.2", "1.2.3.4, 10.0.0.3", ["10.0.0.0/8"]) == "1.2.3.4"  # two proxies
    assert client_address("10.0.0.2", "not-an-ip", ["10.0.0.0/8"]) == "10.0.0.2"
    with pytest.raises(ConfigError, match="not an IP address or CIDR"):
        load_config(None, ["review.trusted_proxies=[proxy.local]"])


def test_forwarded_for_behind_a_trusted_proxy_keys_the_backoff(tmp_path: Path):
    db = tmp_path / "proxy.db"
    cfg = cfg_for(db, "review.login_max_failures=2", "review.trusted_proxies=[127.0.0.1]")
    store = Store(cfg.store.url)
    sample.add_users(store, PW, reviewers=1, panelists=0, admins=0)
    app = create_app(cfg, secret_key="k" * 40, store=store)
    proxy = TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 4000))
    for _ in range(2):
        assert _login(proxy, "rev1", "wrong password!!", **{"X-Forwarded-For": "198.51.100.1"}).status_code == 401
    assert _login(proxy, "rev1", PW, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    assert _login(proxy, "rev1", PW, **{"X-Forwarded-For": "198.51.100.2"}).status_code == 303  # another client


# ---- consensus as a background job -------------------------------------------------------------------------------
def test_consensus_runs_as_a_job_while_the_app_answers(tmp_path: Path):
    db = tmp_path / "job.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 40)
    users = sample.add_users(store, PW, reviewers=2, panelists=0, admins=1)
    assign_review(store, cfg, ids)
    for item in ids:
        for name in ("rev1", "rev2"):
            submit_review(store, item, users[name], vote(store, item, 1, 1, 1, "C", True), cfg.review)
    with store.transaction() as conn:
        conn.execute(update(ItemRow).where(ItemRow.id.in_(ids)).values(stage="strikes_passed"))
    app = create_app(cfg, secret_key="k" * 40, store=store)
    admin = TestClient(app, base_url="http://127.0.0.1")
    assert _login(admin, "admin1", PW).status_code == 303
    job = run_consensus_job(admin, _csrf(admin.get("/admin").text))
    assert job["status"] == "done" and job["done"] == job["total"] == 40
    assert job["result"]["outcomes"] == {"approved": 40} and job["result"]["expert_validated"] == 40
    page = admin.get("/admin").text
    assert 'data-status="done"' in page and "approved 40" in page
    assert admin.get("/admin/jobs/nope").status_code == 404
    with store.engine.connect() as conn:
        kinds = conn.execute(select(EventRow.kind).where(EventRow.kind.like("consensus_%")).order_by(EventRow.id)).scalars().all()
    assert kinds == ["consensus_started", "consensus_run"]
    reviewer = TestClient(app, base_url="http://127.0.0.1")
    assert _login(reviewer, "rev1", PW).status_code == 303
    assert reviewer.get("/admin/jobs/" + job["id"]).status_code == 403


def test_jobs_run_one_at_a_time_and_report_failures():
    jobs = Jobs()
    release = threading.Event()

    def slow(progress):
        progress(1, 2)
        release.wait(10)
        return {"ok": True}

    first = jobs.start("consensus", slow)
    assert jobs.start("consensus", slow) is first  # already running: the same job
    time.sleep(0.05)
    assert first.as_dict()["done"] == 1 and first.status == "running"
    release.set()
    for _ in range(200):
        if first.status != "running":
            break
        time.sleep(0.01)
    assert first.status == "done" and first.result == {"ok": True} and first.finished_at

    def broken(progress):
        raise RuntimeError("store went away")

    second = jobs.start("consensus", broken)
    for _ in range(200):
        if second.status != "running":
            break
        time.sleep(0.01)
    assert second is not first and second.status == "failed" and "store went away" in second.error


def test_unassigned_rows_are_gone_only_for_open_work(tmp_path: Path):
    """A deactivated reviewer's finished reviews keep their assignment rows (the review is theirs)."""
    db = tmp_path / "rows.db"
    cfg = cfg_for(db)
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 2)
    users = sample.add_users(store, PW, reviewers=2, panelists=0, admins=0)
    assign_review(store, cfg, ids)
    submit_review(store, ids[0], users["rev1"], vote(store, ids[0], 1, 1, 1, "C", True), cfg.review)
    with store.transaction() as conn:
        result = deactivate(conn, "rev1", cfg.review)
        left = conn.execute(select(AssignmentRow.item_id).where(AssignmentRow.user_id == users["rev1"].id)).scalars()
        assert list(left) == [ids[0]]
        assert staffing(conn, cfg.review)["review"]["short"] == 1  # ids[1]: only rev2 is left to review it
    assert result.short == {"review": [ids[1]]}


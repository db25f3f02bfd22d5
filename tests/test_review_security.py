"""Security of the review app over real HTTP requests (Starlette's TestClient on the real app and store):
escaping of model output, CSRF, blindness and access control by URL/API, login throttling, cookies and
headers, and approval routes that must fail with fewer than two human approvals."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_helpers import RUBRIC_FORM, page_form, run_consensus_job, vote
from sqlalchemy import func, select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app, secret_from_env
from curation.review.submit import submit_review
from medcot.config import ConfigError, load_config
from medcot.review_tables import ReviewRow
from medcot.store import Store

PW = "correct horse battery"
XSS = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"
OURS = '<script src="/static/review.js" defer></script>'  # the one script of a page: our own file
FORM = {"relevance": "1", "correctness": "1", "sufficiency": "1", "answer": "C", "approve": "1", "comment": "ok",
        **RUBRIC_FORM}


@pytest.fixture
def env(tmp_path: Path):
    cfg = load_config(None, [f"store.url={tmp_path / 'sec.db'}", "review.login_max_failures=3"])
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 3, cot_extra=XSS)
    users = sample.add_users(store, PW, reviewers=3, panelists=2, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
    app = create_app(cfg, secret_key="s" * 40, store=store)
    return cfg, store, ids, users, app


def client(app) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(app, name: str) -> TestClient:
    c = client(app)
    r = c.post("/login", data={"name": name, "password": PW, "csrf_token": csrf_of(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def assigned_items(store: Store, user, phase: str = "review") -> list[str]:
    with store.engine.connect() as conn:
        return [i for i in store.existing_ids() if user.id in assigning.assigned(conn, i, phase)]


def test_model_output_is_escaped(env):
    cfg, store, ids, users, app = env
    rev = users["rev1"]
    c = login(app, "rev1")
    html = c.get(f"/items/{assigned_items(store, rev)[0]}/review").text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;" in html
    assert html.count(OURS) == 1 and "<script" not in html.replace(OURS, "") and "<img" not in html
    csp = c.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "unsafe" not in csp  # no inline script


def test_reasoning_is_shown_folded_escaped_and_marked_unreviewed(env):
    """The generator's raw thinking (R1's trace) can be expanded on the review page: escaped like any model
    output, and said to be context, not what is validated."""
    from medcot.db import GenerationRow
    cfg, store, ids, users, app = env
    item = assigned_items(store, users["rev1"])[0]
    with store.transaction() as conn:
        conn.execute(GenerationRow.__table__.update().where(GenerationRow.item_id == item)
                     .values(reasoning="Let me think about option C. " + XSS))
    html = login(app, "rev1").get(f"/items/{item}/review").text
    block = html.split('<details class="reasoning" id="reasoning">', 1)[1].split("</details>", 1)[0]
    assert "Let me think about option C. &lt;script&gt;" in block and "<script" not in html.replace(OURS, "")
    assert "not this" in block and "never reviewed" in block
    other = next(i for i in assigned_items(store, users["rev1"]) if i != item)
    assert 'id="reasoning"' not in login(app, "rev1").get(f"/items/{other}/review").text  # none recorded


def test_post_without_csrf_token_is_refused(env):
    cfg, store, ids, users, app = env
    c = login(app, "rev1")
    item = assigned_items(store, users["rev1"])[0]
    assert c.post(f"/items/{item}/review", data=FORM).status_code == 403
    assert c.post(f"/items/{item}/review", data={**FORM, "csrf_token": "forged"}).status_code == 403
    other = client(app)  # another browser's (anonymous) token is not this session's token
    token = csrf_of(other.get("/login").text)
    assert c.post(f"/items/{item}/review", data={**FORM, "csrf_token": token}).status_code == 403
    assert c.post("/logout", data={}).status_code == 403
    assert client(app).post("/login", data={"name": "rev1", "password": PW}).status_code == 403
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ReviewRow)) == 0


def test_unassigned_items_and_others_reviews_are_not_found(env):
    cfg, store, ids, users, app = env
    rev1, rev2 = users["rev1"], users["rev2"]
    mine = set(assigned_items(store, rev1))
    theirs = next(i for i in ids if i not in mine)
    c = login(app, "rev1")
    for url in (f"/items/{theirs}/review", f"/items/{theirs}/panel", f"/items/{theirs}/adjudicate",
                f"/api/items/{theirs}", "/items/nonexistent/review", f"/items/{next(iter(mine))}/panel"):
        assert c.get(url).status_code == 404, url
    token = csrf_of(c.get(f"/items/{next(iter(mine))}/review").text)
    assert c.post(f"/items/{theirs}/review", data={**FORM, "csrf_token": token}).status_code == 404
    shared = next(i for i in mine if rev2.id in assigning_of(store, i))
    submit_review(store, shared, rev2, vote(store, shared, 1, 0, 1, "A", False, "rev2's secret comment"), cfg.review)
    with store.engine.connect() as conn:
        rid = conn.scalar(select(ReviewRow.id).where(ReviewRow.user_id == rev2.id))
    assert c.get(f"/api/reviews/{rid}").status_code == 404
    assert c.get(f"/api/reviews/{rid + 1000}").status_code == 404  # same answer: no existence oracle
    page = c.get(f"/items/{shared}/review").text
    api = c.get(f"/api/items/{shared}").json()
    assert "secret comment" not in page and "secret comment" not in str(api) and api["my_reviews"] == []
    assert login(app, "rev2").get(f"/api/reviews/{rid}").json()["comment"] == "rev2's secret comment"
    for url in ("/admin", "/admin/agreement", "/admin/audit", f"/admin/items/{shared}"):
        assert c.get(url).status_code == 403
    assert client(app).get("/api/me").status_code == 401
    assert client(app).get("/", follow_redirects=False).headers["location"] == "/login"


def assigning_of(store: Store, item_id: str) -> list[int]:
    with store.engine.connect() as conn:
        return assigning.assigned(conn, item_id, "review")


def test_login_throttling_and_cookie_flags(env):
    cfg, store, ids, users, app = env
    c = client(app)
    cookie = c.get("/login").headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    for _ in range(3):
        r = c.post("/login", data={"name": "rev1", "password": "wrong password!", "csrf_token": csrf_of(c.get("/login").text)})
        assert r.status_code == 401 and "wrong user name or password" in r.text
    r = c.post("/login", data={"name": "rev1", "password": PW, "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code == 429  # locked even with the right password
    r = c.post("/login", data={"name": "nobody", "password": PW, "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code == 401  # an unknown name gets the same answer as a wrong password
    forged = client(app)
    forged.cookies.set("medcot_session", c.cookies.get("medcot_session")[:-3] + "abc")
    assert forged.get("/", follow_redirects=False).status_code == 303  # tampered cookie: no session


def test_approval_routes_need_two_human_approvals(env):
    cfg, store, ids, users, app = env
    by_id = {u.id: u for u in users.values()}
    item = ids[0]
    x, y = assigning_of(store, item)
    submit_review(store, item, by_id[x], vote(store, item, 1, 1, 1, "C", True), cfg.review)
    submit_review(store, item, by_id[y], vote(store, item, 1, 1, 1, "A", True), cfg.review)  # disagrees on the answer
    sample.set_stage(store, item, "strikes_passed")
    admin = login(app, "admin1")
    job = run_consensus_job(admin, csrf_of(admin.get("/admin").text))
    assert job["status"] == "done" and job["result"]["outcomes"] == {"adjudication": 1}
    assert store.items(ids=[item])[0].stage == "adjudication"
    page = admin.get(f"/items/{item}/adjudicate").text
    assert "&lt;script&gt;" in page and "<script" not in page.replace(OURS, "")
    # the admin sides with the minority answer: only ONE human approval for the key -> removed, not approved
    r = admin.post(f"/items/{item}/adjudicate", data={**FORM, "answer": "A", **page_form(page)},
                   follow_redirects=False)
    assert r.status_code == 303 and store.items(ids=[item])[0].stage == "removed"
    # no route lets a single reviewer approve: their POST stores a review, the item stays in review
    rev = login(app, by_id[assigning_of(store, ids[1])[0]].name)
    page = rev.get(f"/items/{ids[1]}/review").text
    rev.post(f"/items/{ids[1]}/review", data={**FORM, **page_form(page)})
    assert store.items(ids=[ids[1]])[0].stage == "generated"
    page = admin.get(f"/items/{ids[1]}/adjudicate").text
    r = admin.post(f"/items/{ids[1]}/adjudicate", data={**FORM, "csrf_token": csrf_of(page)})
    assert r.status_code == 409 and store.items(ids=[ids[1]])[0].stage == "generated"


def test_secret_key_is_required_and_default_bind_is_local(monkeypatch):
    cfg = load_config(None)
    monkeypatch.delenv(cfg.review.secret_key_env, raising=False)
    with pytest.raises(ConfigError, match="MEDCOT_REVIEW_SECRET"):
        secret_from_env(cfg)
    assert cfg.review.host == "127.0.0.1"

"""Input handling of the review app over real HTTP (issue 15, item 7): form limits (maxlength and a 400 naming the
field, nothing cut), invalid UTF-8 refused, ASCII digits only, item ids with "/", one 404 for missing and
unassigned items, banner codes instead of text from the URL, Secure cookies and HSTS away from localhost, and
generic regeneration errors for panelists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_helpers import RUBRIC_FORM, page_form, panel_vote, vote
from sqlalchemy import select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from curation.review.panel import submit_panel
from curation.review.records import ReviewError
from curation.review.submit import submit_review
from medcot.config import load_config
from medcot.records import Event
from medcot.review_tables import ReviewRow
from medcot.store import Store

PW = "correct horse battery"
FORM = {"relevance": "1", "correctness": "1", "sufficiency": "1", "answer": "C", "approve": "1", "comment": "ok",
        **RUBRIC_FORM}
SLASHED = "med/qa/0000"


@pytest.fixture
def env(tmp_path: Path):
    cfg = load_config(None, [f"store.url={tmp_path / 'inputs.db'}"])
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 3) + sample.add_items(store, 1, prefix="med/qa/")
    users = sample.add_users(store, PW, reviewers=3, panelists=2, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
    return cfg, store, ids, users, create_app(cfg, secret_key="i" * 40, store=store)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(app, name: str, base_url: str = "http://127.0.0.1") -> TestClient:
    c = TestClient(app, base_url=base_url)
    r = c.post("/login", data={"name": name, "password": PW, "csrf_token": csrf_of(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def mine(store: Store, user, phase: str = "review") -> list[str]:
    with store.engine.connect() as conn:
        return [i for i in store.existing_ids() if user.id in assigning.assigned(conn, i, phase)]


def reviewer_of(store: Store, users, item: str):
    with store.engine.connect() as conn:
        uid = assigning.assigned(conn, item, "review")[0]
    return next(u for u in users.values() if u.id == uid)


def error_text(html: str) -> str:
    return re.search(r'<p class="error" id="(?:error|form-error)"[^>]*>([^<]*)</p>', html).group(1)


def reviews(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(ReviewRow)).mappings()]


def test_form_limits_maxlength_and_a_400_naming_the_field(env):
    cfg, store, ids, users, app = env
    item = mine(store, users["rev1"])[0]
    c = login(app, "rev1")
    page = c.get(f"/items/{item}/review").text
    assert re.search(r'<textarea name="comment" id="comment" rows="2" maxlength="5000">', page)
    assert 'name="edit_cot" id="edit_cot" rows="12" lang="en" maxlength="100000"' in page
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(page), "comment": "x" * 5001})
    assert r.status_code == 400 and "field &#39;comment&#39; is too long: at most 5000 characters" in r.text
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(page), "comment": "x" * 100_000})
    assert r.status_code == 400 and reviews(store) == []  # refused, never cut to fit
    # a textarea's CRLF counts as one character, as the browser's maxlength counts it
    comment = "x" * 4998 + "\r\n" + "y"
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(page), "comment": comment}, follow_redirects=False)
    assert r.status_code == 303
    assert [x["comment"] for x in reviews(store)] == ["x" * 4998 + "\ny"]
    with pytest.raises(ReviewError, match="comment is too long"):  # every route into the store, not just the form
        other = next(i for i in ids if i != item)
        submit_review(store, other, reviewer_of(store, users, other),
                      vote(store, other, comment="z" * 5001), cfg.review)
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(page), "bogus": "y" * 201})
    assert r.status_code == 400 and "field &#39;bogus&#39; is too long" in r.text  # unknown fields are bounded too


def test_invalid_utf8_nul_duplicates_and_other_encodings_are_refused(env):
    cfg, store, ids, users, app = env
    item = mine(store, users["rev1"])[0]
    c = login(app, "rev1")
    page = c.get(f"/items/{item}/review").text
    base = "&".join(f"{k}={v}" for k, v in {**FORM, **page_form(page)}.items() if k != "comment")
    headers = {"content-type": "application/x-www-form-urlencoded"}
    for raw, field in ((b"&comment=ok%FF%FE", "comment"), (b"&comment=\xff", "comment"),
                       (b"&comm%C3ent=x", "a field name")):
        r = c.post(f"/items/{item}/review", content=base.encode() + raw, headers=headers)
        assert r.status_code == 400 and "not valid UTF-8" in r.text and field.replace("'", "&#39;") in r.text
    r = c.post(f"/items/{item}/review", content=base.encode() + b"&comment=a%00b", headers=headers)
    assert r.status_code == 400 and "NUL" in r.text
    r = c.post(f"/items/{item}/review", content=base.encode() + b"&comment=a&comment=b", headers=headers)
    assert r.status_code == 400 and "sent twice" in r.text
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(page)}, files={"f": ("f.txt", b"x")})
    assert r.status_code == 415
    r = c.post(f"/items/{item}/review", content=base.encode(),
               headers={"content-type": "application/x-www-form-urlencoded; charset=latin-1"})
    assert r.status_code == 415
    assert reviews(store) == []
    r = c.post(f"/items/{item}/review", content=base.encode() + "&comment=认可 ✓".encode(), headers=headers,
               follow_redirects=False)
    assert r.status_code == 303 and reviews(store)[0]["comment"] == "认可 ✓"  # real UTF-8 is fine


def test_numbers_are_ascii_digits_only(env):
    cfg, store, ids, users, app = env
    item = ids[0]
    sample.fail_five_strikes(store, item)
    with store.transaction() as conn:
        assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
    c = login(app, "pan1")
    page = c.get(f"/items/{item}/panel").text
    form = {**RUBRIC_FORM, **page_form(page), "answer": "C", "action": "accept"}
    for bad in ("²", "١", "0x1", "-1", "1" * 12):
        r = c.post(f"/items/{item}/panel", data={**form, "round": bad})
        assert r.status_code == 400 and "round must be a whole number (ASCII digits 0-9)" in r.text, bad
    assert login(app, "admin1").get("/admin/audit?before=²").status_code == 200
    assert c.get("/api/reviews/١").status_code == 422


def test_item_ids_with_a_slash_open_and_submit(env):
    cfg, store, ids, users, app = env
    rev = reviewer_of(store, users, SLASHED)
    c = login(app, rev.name)
    assert '/items/med%2Fqa%2F0000/review' in c.get("/").text  # the queue's link
    for url in ("/items/med%2Fqa%2F0000/review", f"/items/{SLASHED}/review"):
        page = c.get(url)
        assert page.status_code == 200 and "<code>med/qa/0000</code>" in page.text
    r = c.post("/items/med%2Fqa%2F0000/review", data={**FORM, **page_form(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/med%2Fqa%2F0000/review?m=saved"
    assert 'id="message" role="status">Saved.' in c.get(r.headers["location"]).text
    assert c.get(f"/api/items/{SLASHED}").json()["id"] == SLASHED
    assert [x["item_id"] for x in reviews(store)] == [SLASHED]


def test_missing_and_unassigned_items_get_one_404(env):
    cfg, store, ids, users, app = env
    c = login(app, "rev1")
    theirs = next(i for i in ids if i not in mine(store, users["rev1"]))
    token = csrf_of(c.get("/").text)
    for phase in ("review", "panel", "adjudicate"):
        answers = []
        for item in (theirs, "no-such-item"):
            for form in ({"csrf_token": token}, {**FORM, "csrf_token": token}):  # a bad form or a good one
                r = c.post(f"/items/{item}/{phase}", data=form)
                answers.append((r.status_code, error_text(r.text)))
        assert answers == [(404, "not found")] * 4, phase


def test_the_banner_shows_only_fixed_codes(env):
    cfg, store, ids, users, app = env
    item = mine(store, users["rev1"])[0]
    c = login(app, "rev1")
    page = c.get(f"/items/{item}/review", params={"m": "Your account is locked: call +1 555 0100"}).text
    assert 'id="message"' not in page and "555" not in page
    assert 'id="message" role="status">Saved.</p>' in c.get(f"/items/{item}/review?m=saved").text
    c.cookies.set("medcot_lang", "zh")
    assert 'id="message" role="status">已保存。</p>' in c.get(f"/items/{item}/review?m=saved").text
    r = c.post(f"/items/{item}/review", data={**FORM, **page_form(c.get(f"/items/{item}/review").text)},
               follow_redirects=False)
    assert r.headers["location"].endswith("?m=saved")


def test_secure_cookies_and_hsts_away_from_localhost(env):
    cfg, store, ids, users, app = env
    local = TestClient(app, base_url="http://127.0.0.1").get("/login")
    assert "secure" not in local.headers["set-cookie"].lower() and "strict-transport-security" not in local.headers
    https_local = TestClient(app, base_url="https://localhost").get("/login")
    assert "; secure" in https_local.headers["set-cookie"].lower()  # HTTPS: Secure, but no HSTS for localhost
    assert "strict-transport-security" not in https_local.headers
    public = TestClient(app, base_url="https://review.example.org")
    r = public.get("/login")
    assert "; secure" in r.headers["set-cookie"].lower() and r.headers["strict-transport-security"] == "max-age=31536000"
    assert 'id="https-needed"' not in r.text
    c = login(app, "rev1", base_url="https://review.example.org")  # the Secure cookie goes back over HTTPS
    assert c.get("/api/me").json()["name"] == "rev1"
    plain = TestClient(app, base_url="http://review.example.org").get("/login")  # no TLS: say why login fails
    assert "; secure" in plain.headers["set-cookie"].lower() and 'id="https-needed"' in plain.text


def test_panelists_see_a_generic_regeneration_error(env):
    cfg, store, ids, users, app = env
    item = ids[1]
    sample.fail_five_strikes(store, item)
    with store.transaction() as conn:
        assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
    for name in ("pan1", "pan2"):
        submit_panel(store, item, users[name], panel_vote(store, item, "regenerate", feedback="more"), cfg.review)
    secret = "upstream 502 Bad Gateway from http://10.0.0.7:8000/v1/chat/completions (key sk-live)"
    store.log_event(Event(kind="regeneration_failed", item_id=item, stage="panel", actor="llm", actor_kind="llm",
                          payload={"error": secret}))
    page = login(app, "pan1").get(f"/items/{item}/panel").text
    assert 'id="regen-error"' in page and "audit log" in page
    assert "10.0.0.7" not in page and "502" not in page and "sk-live" not in page
    assert "10.0.0.7:8000" in login(app, "admin1").get(f"/admin/audit?item={item}").text  # details for admins


def test_cookie_secure_says_https_is_in_front(tmp_path: Path):
    """Behind an HTTPS proxy the app sees plain HTTP (often with a local Host): review.cookie_secure=true makes
    cookies Secure and sends HSTS anyway, and the login page does not claim HTTPS is missing."""
    cfg = load_config(None, [f"store.url={tmp_path / 'proxy.db'}", "review.cookie_secure=true"])
    app = create_app(cfg, secret_key="x" * 40, store=Store(cfg.store.url))
    for base in ("http://127.0.0.1", "http://review.example.org"):
        r = TestClient(app, base_url=base).get("/login")
        assert "; secure" in r.headers["set-cookie"].lower() and r.headers["strict-transport-security"]
        assert 'id="https-needed"' not in r.text, base

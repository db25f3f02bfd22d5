"""The experts' pages over real HTTP (issue 15, item 8): the CoT as safe Markdown with formulas intact, `lang` per
item and per user, English and Chinese labels, the annotation standard's anchors beside each score, the markup
the keyboard shortcuts and the final-submit confirmation use, a 400/409 that keeps what was typed, and
pseudonyms instead of names for a panelist who adjudicates. (The script itself: tests/test_review_browser.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_helpers import RUBRIC_FORM, page_form, vote
from sqlalchemy import update

from curation.review import assign as assigning
from curation.review import i18n, sample
from curation.review.app import create_app
from curation.review.standard import load_standard
from curation.review.submit import submit_review
from medcot.config import load_config
from medcot.db import ItemRow
from medcot.store import Store

PW = "correct horse battery"
FORM = {"relevance": "1", "correctness": "1", "sufficiency": "1", "answer": "C", "approve": "1", "comment": "ok",
        **RUBRIC_FORM}
MARKDOWN = ("\n\n**Step 1.** The dose is $a_1 * b_2$ and \\(x^2 + y_1\\) with $$\\frac{a}{b}$$; it costs $5 and $6.\n"
            "<script>window.__pwned=1</script> [click me](javascript:alert(1)) <javascript:alert(2)>\n"
            "![x](http://evil.example/p.png) <img src=x onerror=\"window.__pwned=2\"> <a href=\"http://e\">a</a>\n\n"
            "[ref]: javascript:alert(3)\n")


@pytest.fixture
def env(tmp_path: Path):
    cfg = load_config(None, [f"store.url={tmp_path / 'pages.db'}"])
    store = Store(cfg.store.url)
    ids = sample.add_items(store, 3, cot_extra=MARKDOWN)
    with store.transaction() as conn:
        conn.execute(update(ItemRow).where(ItemRow.id == ids[2]).values(language="zh"))
    users = sample.add_users(store, PW, reviewers=2, panelists=2, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
    return cfg, store, ids, users, create_app(cfg, secret_key="p" * 40, store=store)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(app, name: str, **headers: str) -> TestClient:
    c = TestClient(app, base_url="http://127.0.0.1", headers=headers)
    r = c.post("/login", data={"name": name, "password": PW, "csrf_token": csrf_of(c.get("/login").text)},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c


def cot_block(html: str) -> str:
    return html.split('<div class="cot markdown" id="cot"', 1)[1].split("</div>", 1)[0]


def test_the_cot_is_safe_markdown_with_formulas_intact(env):
    cfg, store, ids, users, app = env
    cot = cot_block(login(app, "rev1").get(f"/items/{ids[0]}/review").text)
    assert "<strong>Step 1.</strong>" in cot and "<br />" in cot  # Markdown, line breaks kept
    assert '<span class="math">$a_1 * b_2$</span>' in cot  # formulas verbatim: no emphasis, no escapes eaten
    assert '<span class="math">\\(x^2 + y_1\\)</span>' in cot and '<span class="math">$$\\frac{a}{b}$$</span>' in cot
    assert "costs $5 and $6." in cot  # prices are not formulas
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in cot and "&lt;img src=x onerror=" in cot
    assert "[click me](javascript:alert(1))" in cot and "&lt;javascript:alert(2)&gt;" in cot  # links stay text
    assert "![x](http://evil.example/p.png)" in cot and "[ref]: javascript:alert(3)" in cot
    assert set(re.findall(r"<(\w+)", cot)) <= {"p", "strong", "br", "span"}  # no element the model wrote
    assert not re.search(r"<\w+[^>]*\s(?:href|src|on\w+)=", cot)  # and no attribute that loads or runs anything


def test_page_language_per_user_and_item_language_per_element(env):
    cfg, store, ids, users, app = env
    en = login(app, "rev1")
    page = en.get(f"/items/{ids[0]}/review").text
    assert page.startswith('<!doctype html>\n<html lang="en">') and "Submit review" in page
    assert 'id="question" lang="en"' in page and 'id="cot" lang="en"' in page
    zh_item = en.get(f"/items/{ids[2]}/review").text  # a Chinese item in the English interface
    assert '<html lang="en">' in zh_item and 'id="question" lang="zh"' in zh_item and 'id="options" lang="zh"' in zh_item
    assert 'id="cot" lang="zh"' in zh_item and 'id="edit_cot" rows="12" lang="zh"' in zh_item
    assert "医学正确性" in zh_item  # the standard's names and anchors follow the item's language
    zh = login(app, "rev2", **{"accept-language": "fr-CH, zh-CN;q=0.8, en;q=0.5"})
    page = zh.get(f"/items/{ids[0]}/review").text
    assert '<html lang="zh">' in page and "提交评审" in page and "相关性" in page and "Submit review" not in page
    # the switch in the header: a cookie, back to the same page
    r = zh.post("/lang", data={"lang": "en", "next": f"/items/{ids[0]}/review", "csrf_token": csrf_of(page)},
                follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/items/{ids[0]}/review"
    assert "medcot_lang=en" in r.headers["set-cookie"]
    assert '<html lang="en">' in zh.get("/").text
    token = csrf_of(zh.get("/").text)
    assert zh.post("/lang", data={"lang": "fr", "next": "/", "csrf_token": token}).status_code == 400
    r = zh.post("/lang", data={"lang": "zh", "next": "//evil.example/", "csrf_token": token})
    assert r.status_code == 400 and "field &#39;next&#39;" in r.text
    assert zh.post("/lang", data={"lang": "zh", "next": "/"}).status_code == 403  # CSRF like every POST


def test_the_catalogues_match_and_pick_a_language():
    assert set(i18n.EN) == set(i18n.ZH)
    for key, text in i18n.EN.items():  # the same placeholders in both languages
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", i18n.ZH[key])), key
    assert i18n.ui_language(None, (), "zh-TW,zh;q=0.9,en;q=0.8") == "zh"
    assert i18n.ui_language(None, (), "de, en-GB;q=0.7, zh;q=0.3") == "en"
    assert i18n.ui_language(None, ("zh",), "en") == "zh"  # the user's profile before the browser
    assert i18n.ui_language("en", ("zh",), "zh") == "en"  # the explicit switch before both
    assert i18n.ui_language("xx", (), "fr, *;q=0.1") == "en"
    assert i18n.banner("saved", "zh") == "已保存。" and i18n.banner("<b>hi</b>", "en") is None


def test_each_score_shows_its_anchor_text(env):
    cfg, store, ids, users, app = env
    page = login(app, "rev1").get(f"/items/{ids[0]}/review").text
    standard = load_standard()
    for dim in standard.data["dimensions"]:
        for score in (0, 1, 2):
            label = re.search(rf'<label class="anchor"><input [^>]*id="score_{dim}-{score}"[^>]*>(.*?)</label>',
                              page, re.S)
            assert label is not None, (dim, score)
            anchor = standard.anchor(dim, score, "en").replace("'", "&#39;").replace('"', "&#34;")
            assert f'<span class="anchor-text" lang="en">{anchor}</span>' in label.group(1), (dim, score)


def test_shortcut_and_confirmation_markup(env):
    cfg, store, ids, users, app = env
    c = login(app, "rev1")
    page = c.get(f"/items/{ids[0]}/review").text
    form = page.split('<form method="post" class="review" id="review-form"', 1)[1].split("</form>", 1)[0]
    assert form.startswith(' data-final="Submit now? A submission is final')
    radios = re.findall(r'<input type="radio" name="(\w+)" value="([^"]+)"[^>]*?data-key="([^"]+)"', form)
    assert len(radios) == len(re.findall(r'type="radio"', form)) == 3 * 2 + 2 + 5 * 3 + 3 + 3  # every choice keyed
    groups = {}
    for name, _, key in radios:
        groups.setdefault(name, []).append(key)
    assert all(len(set(keys)) == len(keys) for keys in groups.values())  # no key twice in a group
    assert re.findall(r'<option value="([A-D])" data-key="([a-d])"', form) == [(x, x.lower()) for x in "ABCD"]
    assert form.count("data-choice") == 3 + 1 + 1 + 5 + 2 and 'id="shortcuts"' in form
    js = c.get("/static/review.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "window.confirm(form.dataset.final)" in js.text and "requestSubmit" in js.text


def test_a_conflict_or_a_bad_form_keeps_what_was_typed(env):
    cfg, store, ids, users, app = env
    item = ids[0]
    c = login(app, "rev1")
    page = c.get(f"/items/{item}/review").text
    typed = {**FORM, **page_form(page), "revision": "0" * 64, "comment": "my careful note", "relevance": "0",
             "change_cot": "1", "edit_cot": "my edited CoT"}
    r = c.post(f"/items/{item}/review", data=typed)
    assert r.status_code == 409 and 'id="form-error"' in r.text
    assert 'id="relevance-0" data-key="0" checked' in r.text and ">my careful note</textarea>" in r.text
    assert '<option value="C" data-key="c" selected>' in r.text and ">my edited CoT</textarea>" in r.text
    assert 'id="change_cot" checked' in r.text and '<details class="edits" id="edits" open>' in r.text

    # the panel: a stale round is a 409 that keeps the scores, the action and the feedback
    panel_item = ids[1]
    sample.fail_five_strikes(store, panel_item)
    with store.transaction() as conn:
        assigning.assign(conn, [panel_item], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
    p = login(app, "pan1")
    page = p.get(f"/items/{panel_item}/panel").text
    form = {**RUBRIC_FORM, **page_form(page), "round": "7", "answer": "B", "action": "regenerate",
            "feedback": "cite the 2020 guideline", "score_clinical_utility": "1"}
    r = p.post(f"/items/{panel_item}/panel", data=form)
    assert r.status_code == 409 and 'id="form-error"' in r.text
    assert 'id="action-regenerate" data-key="g" checked' in r.text and ">cite the 2020 guideline</textarea>" in r.text
    assert 'id="score_clinical_utility-1" data-key="1" required checked' in r.text
    assert '<option value="B" data-key="b" selected>' in r.text

    # adjudication: a bad form (no relevance) is a 400 that keeps the comment
    adj_item = ids[2]
    for uid in _reviewers(store, adj_item):
        submit_review(store, adj_item, _user(users, uid), vote(store, adj_item), cfg.review)
    sample.set_stage(store, adj_item, "adjudication")
    a = login(app, "admin1")
    page = a.get(f"/items/{adj_item}/adjudicate").text
    form = {**FORM, **page_form(page), "comment": "the key holds"}
    del form["relevance"]
    r = a.post(f"/items/{adj_item}/adjudicate", data=form)
    assert r.status_code == 400 and "relevance" in r.text and ">the key holds</textarea>" in r.text


def _reviewers(store: Store, item: str) -> list[int]:
    with store.engine.connect() as conn:
        return assigning.assigned(conn, item, "review")


def _user(users, uid: int):
    return next(u for u in users.values() if u.id == uid)


def test_a_panelist_adjudicator_sees_reviewer_1_and_2_not_names(env):
    cfg, store, ids, users, app = env
    item = ids[0]
    first, second = (_user(users, u) for u in _reviewers(store, item))
    submit_review(store, item, first, vote(store, item, comment="first says C"), cfg.review)
    submit_review(store, item, second, vote(store, item, answer="A", comment="second says A"), cfg.review)
    sample.set_stage(store, item, "adjudication")
    with store.transaction() as conn:
        assigning.assign(conn, [item], "adjudication", 1, [users["pan1"]])
    page = login(app, "pan1").get(f"/items/{item}/adjudicate").text
    cells = re.findall(r'<td class="reviewer">([^<]*)</td>', page)
    assert sorted(cells) == ["reviewer 1", "reviewer 2"] and "first says C" in page and "second says A" in page
    assert first.name not in page.replace('value="rev', "") and second.name not in page
    zh = login(app, "pan1", **{"accept-language": "zh"}).get(f"/items/{item}/adjudicate").text
    assert sorted(re.findall(r'<td class="reviewer">([^<]*)</td>', zh)) == ["评审专家 1", "评审专家 2"]
    admin = login(app, "admin1").get(f"/items/{item}/adjudicate").text  # admins see who voted
    assert sorted(re.findall(r'<td class="reviewer">([^<]*)</td>', admin)) == sorted([first.name, second.name])

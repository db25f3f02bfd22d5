"""The review app in a real browser (Playwright driving Debian's Chromium; never `playwright install`).

One uvicorn server (in a thread, on a free port) and one scripted OpenAI server (for the guided regeneration)
for the module. Scenarios (issue 12): reviewer A edits CoT and key and approves, reviewer B's page shows the
base text, the key unmoved and an empty answer, and B's approval does not validate A's text; a Label Studio
import of a task made stale in the browser is refused; the builder refuses a forged decision row; an
untouched form submit records no revision. Then the whole flow: a panelist asks for a regeneration, the panel
re-scores, the admin reconciles a proposal and a disagreement, the panel confirms them blind, the agreement
dashboard and the audit log show it. Screenshots go to test-artifacts/review/.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import datasets
import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from curation.review.auth import get_user_by_name
from curation.review.consensus import run_consensus
from curation.review.items import get_item
from curation.review.labelstudio import export_tasks, import_export
from medcot.cli import main
from medcot.config import load_config
from medcot.db import GenerationRow, ItemRow
from medcot.review_tables import RUBRIC_DIMENSIONS, DecisionRow, ReviewRow, RevisionRow, RubricScoreRow, UserRow
from medcot.scripted_server import ScriptedServer
from medcot.store import Store

pytestmark = pytest.mark.browser
PW = "correct horse battery"
XSS = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "review"
GUIDE_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"  # the screenshots of docs/review-guide.md
GUIDE_SHOTS = ("review-queue.png", "review-form.png", "review-panel.png", "review-adjudication.png")
GUIDE_MAX_BYTES = 200_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


class LLMThread:
    """The scripted OpenAI-compatible server on its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ScriptedServer(responder=sample.ScriptedJudge(cot_letter="C"))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LLMThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class AppThread:
    """uvicorn serving the review app from a thread, on a socket bound to a free port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per keep-alive request
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> AppThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the review app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


MULTILINE = {"A": "Adrenaline", "B": "Vasopressin\n(IV)", "C": "Atropine", "D": "Amiodarone"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make system` (or `make test`)", pytrace=False)
    tmp = tmp_path_factory.mktemp("review-browser")
    with LLMThread() as llm:
        cfg = load_config(None, [f"store.url={tmp / 'review.db'}", f"llm.endpoints=[{llm.server.base_url}]",
                                 "llm.model=scripted", "llm.max_retries=0"])
        store = Store(cfg.store.url)
        ids = sample.add_items(store, 4, cot_extra=XSS)
        ids += sample.add_items(store, 1, prefix="m", options=MULTILINE)
        sample.add_users(store, PW, reviewers=2, panelists=3, admins=1)
        with store.transaction() as conn:
            assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
        with AppThread(create_app(cfg, secret_key="b" * 40, store=store)) as app:
            from playwright.sync_api import sync_playwright
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                try:
                    yield {"url": app.url, "browser": browser, "store": store, "ids": ids, "llm": llm, "cfg": cfg,
                           "tmp": tmp}
                finally:
                    browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


CONFIRM = "Submit now? A submission is final: it cannot be changed afterwards."


def _confirm_final_submits(dialog) -> None:
    """The one dialog the app opens: the confirmation of a final submit (accepted); any other fails the test."""
    if dialog.type == "confirm" and dialog.message == CONFIRM:
        dialog.accept()
        return
    dialog.dismiss()
    pytest.fail(f"an unexpected dialog opened: {dialog.type} {dialog.message}")


def login(site, name: str):
    ctx = site["browser"].new_context()
    page = ctx.new_page()
    page.on("dialog", _confirm_final_submits)
    page.goto(site["url"] + "/login")
    page.fill("#name", name)
    page.fill("#password", PW)
    page.click("#login")
    page.wait_for_url(site["url"] + "/")
    return page


def rubric(page, level: int = 2) -> None:
    for dim in RUBRIC_DIMENSIONS:
        page.check(f"#score_{dim}-{level}")
    page.check("#difficulty-moderate")
    page.check("#cognitive_level-interpretation")


def review(page, site, item: str, answer: str = "C", approve: bool = True, comment: str = "",
           cot: str | None = None, key: str | None = None, open_edits: bool = False) -> None:
    page.goto(f"{site['url']}/items/{item}/review")
    for dim in ("relevance", "correctness", "sufficiency"):
        page.check(f"#{dim}-1")
    page.select_option("#answer", answer)
    rubric(page)
    page.check("#approve-1" if approve else "#approve-0")
    page.fill("#comment", comment)
    if cot is not None or key is not None or open_edits:
        page.click("#edits summary")
    if cot is not None:
        page.check("#change_cot")
        page.fill("#edit_cot", cot)
    if key is not None:
        page.check("#change_answer")
        page.select_option("#edit_answer", key)
    page.click("#submit-review")
    page.wait_for_selector("#my-review")


def score(page, site, item: str, action: str, feedback: str = "", answer: str = "C") -> None:
    page.goto(f"{site['url']}/items/{item}/panel")
    rubric(page, 1 if action == "regenerate" else 2)
    page.select_option("#answer", answer)
    page.check(f"#action-{action}")
    page.fill("#feedback", feedback)
    page.click("#submit-panel")
    page.wait_for_selector("#message")


def stage(site, item: str) -> str:
    return site["store"].items(ids=[item])[0].stage


def rows(site, table, item: str):
    with site["store"].engine.connect() as conn:
        return conn.execute(select(table).where(table.item_id == item)).mappings().all()


def test_a_edits_cot_and_key_b_sees_the_base_text_and_b_cannot_validate_a_text(site):
    q0, q1 = site["ids"][0], site["ids"][1]
    rev1 = login(site, "rev1")
    assert rev1.locator("#queue-review .item-link").count() == 5
    rev1.goto(f"{site['url']}/items/{q1}/review")
    cot = rev1.locator("#cot")
    assert "<script>window.__pwned=1</script>" in cot.inner_text()  # model output shown as text ...
    assert cot.locator("script, img").count() == 0  # ... never as markup
    assert rev1.evaluate("window.__pwned") is None
    assert rev1.locator("#answer").input_value() == ""  # no anchoring: the answer starts empty
    shot(rev1, "01-rev1-review-form")
    review(rev1, site, q1, cot="Vasopressin was dropped in 2015; atropine earlier.\nAnswer: B", key="B",
           answer="B", comment="rev1 private note: the key should be B")
    rev2 = login(site, "rev2")
    rev2.goto(f"{site['url']}/items/{q1}/review")
    html = rev2.content()
    assert "Vasopressin was dropped" not in html and "rev1 private note" not in html  # base text, nothing of A
    assert "Atropine: removed from the algorithm" in rev2.locator("#cot").inner_text()
    assert rev2.locator("#key b").inner_text() == "C"  # the key unmoved
    assert rev2.locator("#options li:has(#key-marker)").inner_text().startswith("C.")
    assert rev2.locator("#answer").input_value() == ""  # and not preselected to A's letter
    assert "revision" not in rev2.locator("#item").inner_text().lower()  # nor how often it changed
    api = rev2.context.request.get(f"{site['url']}/api/items/{q1}").json()
    assert api["my_reviews"] == [] and "rev1" not in str(api) and "round" not in api and api["key"] == "C"
    shot(rev2, "02-rev2-sees-the-base-revision")
    review(rev2, site, q1)
    review(rev1, site, q0)
    review(rev2, site, q0)
    assert {stage(site, q0), stage(site, q1)} == {"reviewed"}
    store, cfg = site["store"], site["cfg"]
    sample.set_stage(store, q0, "strikes_passed")
    sample.set_stage(store, q1, "strikes_passed")
    run_consensus(store, cfg.review)
    assert stage(site, q0) == "approved" and stage(site, q1) == "adjudication"  # B's approval validates nothing
    with store.engine.connect() as conn:
        q1_item = get_item(conn, q1)
        approved = conn.scalar(select(func.count()).select_from(DecisionRow).where(
            DecisionRow.item_id == q1, DecisionRow.kind == "approved"))
    assert q1_item.answer == "C" and approved == 0 and not rows(site, RevisionRow, q1)


def test_logout_ends_the_session_and_an_old_cookie_gets_the_login_page(site):
    """Server-side sessions: a cookie saved before logout (or before an admin's revoke) is worthless after."""
    page = login(site, "pan3")
    saved = page.context.cookies()
    page.click("#logout")
    page.wait_for_url(site["url"] + "/login")
    thief = site["browser"].new_context()
    thief.add_cookies(saved)  # the cookie as it was before logout
    other = thief.new_page()
    other.goto(site["url"] + "/")
    assert other.url == site["url"] + "/login" and other.locator("#login").count() == 1
    assert thief.request.get(f"{site['url']}/api/me").status == 401
    # an admin revokes every session of a user: both of their browsers are out at once
    first, second = login(site, "pan3"), login(site, "pan3")
    res = CliRunner().invoke(main, ["review", "user", "revoke-sessions", "pan3", "--store", site["cfg"].store.url])
    assert res.exit_code == 0 and "revoked 2 live session(s)" in res.output, res.output
    for page in (first, second):
        page.goto(site["url"] + "/")
        assert page.url == site["url"] + "/login"
    thief.close()


def test_an_untouched_form_submit_records_no_revision(site):
    m = site["ids"][4]
    rev1, rev2 = login(site, "rev1"), login(site, "rev2")
    for page in (rev1, rev2):
        review(page, site, m, open_edits=True)  # the edit boxes were opened, nothing was ticked or typed
    assert not rows(site, RevisionRow, m)
    assert [r["proposal"] for r in rows(site, ReviewRow, m)] == [None, None]
    assert site["store"].items(ids=[m])[0].options["B"] == "Vasopressin\n(IV)"  # a multi-line option intact
    assert stage(site, m) == "reviewed"


def test_a_label_studio_task_made_stale_in_the_browser_is_refused(site):
    q3 = site["ids"][3]
    store, cfg, tmp = site["store"], site["cfg"], site["tmp"]
    sample.fail_five_strikes(store, q3)
    with store.transaction() as conn:
        assigning.assign(conn, [q3], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
    export_tasks(store, tmp / "ls", "panel")
    [task] = [t for t in json.loads((tmp / "ls" / "tasks_panel.json").read_text()) if t["data"]["item_id"] == q3]
    editor, other = [u for u in ("pan1", "pan2", "pan3") if _assigned(site, q3, u)]
    page = login(site, editor)  # meanwhile a panelist repairs the CoT in the browser: a new revision
    page.goto(f"{site['url']}/items/{q3}/panel")
    assert page.locator("#earlier-reviews").count() == 0  # the panel never sees the initial reviewers' votes
    rubric(page, 1)
    page.select_option("#answer", "C")
    page.check("#action-revise")
    page.click("#repair summary")
    page.check("#change_cot")
    page.fill("#revised_cot", "A repaired explanation.\nAnswer: C")
    page.click("#submit-panel")
    page.wait_for_selector("#message")
    assert rows(site, RevisionRow, q3)
    # the other panelist's Label Studio annotation of the exported (now stale) task is refused and listed
    ann = {**task["data"], "annotator": other, "action": "accept", "answer": "C",
           **{d: "2" for d in RUBRIC_DIMENSIONS}, "difficulty": "easy", "cognitive_level": "recall"}
    (tmp / "stale.json").write_text(json.dumps([ann]))
    before = len(rows(site, DecisionRow, q3))
    report = import_export(store, tmp / "stale.json", cfg.review, {})
    assert report["stored"] == 0 and [r["item_id"] for r in report["rejected"]] == [q3]
    assert "changed" in report["rejected"][0]["reason"] and len(rows(site, DecisionRow, q3)) == before


def _assigned(site, item: str, name: str) -> bool:
    with site["store"].engine.connect() as conn:
        uid = conn.scalar(select(UserRow.id).where(UserRow.name == name))
        return uid in assigning.assigned(conn, item, "panel")


def test_review_panel_reconciliation_and_adjudication_in_the_browser(site):
    q0, q1, q2, q3, _ = site["ids"]
    store = site["store"]
    rev1, rev2 = login(site, "rev1"), login(site, "rev2")
    review(rev1, site, q2, comment="the key is right")
    review(rev2, site, q2, answer="A", comment="I think the key is wrong")  # disagreement
    sample.set_stage(store, q2, "strikes_passed")

    # q3 (repaired by a panelist in the previous test): the other panelists ask for a regeneration, then accept
    scorers = [u for u in ("pan1", "pan2", "pan3") if _assigned(site, q3, u) and not _edited(site, q3, u)]
    first, second = (login(site, u) for u in scorers[:2])
    score(first, site, q3, "regenerate", feedback="Explain why vasopressin is still used.")
    assert first.locator("#waiting").count() == 1
    second.goto(f"{site['url']}/items/{q3}/panel")
    assert "Explain why vasopressin" not in second.content()  # blind within the panel
    score(second, site, q3, "accept")
    deadline = time.monotonic() + 15  # the guided regeneration runs in the app's background
    while second.locator("#panel-form").count() == 0:
        assert time.monotonic() < deadline, "the regeneration did not arrive"
        time.sleep(0.3)
        second.reload()
    assert "Revised following the experts' feedback." in second.locator("#cot").inner_text()
    regen = next(b for b in site["llm"].server.bodies if not b.get("response_format"))
    assert "Explain why vasopressin is still used." in regen["messages"][-1]["content"]
    shot(second, "05-panel-regenerated-cot")
    score(second, site, q3, "accept")
    score(first, site, q3, "accept")
    assert stage(site, q3) == "panel_done"

    admin = login(site, "admin1")
    admin.goto(site["url"] + "/admin")
    admin.click("#run-consensus")
    admin.wait_for_selector('#consensus-job[data-status="done"]')  # a background job; the page refreshes
    assert [stage(site, i) for i in (q2, q3)] == ["adjudication", "approved"]
    # q1: adopt rev1's proposal (the adjudicator sees it), a new revision -> five-strike again (the key changed)
    admin.goto(f"{site['url']}/items/{q1}/adjudicate")
    assert "the key should be B" in admin.locator("#all-reviews").inner_text()
    assert "Vasopressin was dropped" in admin.locator("#all-reviews").inner_text()
    _verdict(admin, answer="B", cot="Vasopressin was dropped in 2015; atropine earlier.\nAnswer: B", key="B")
    assert stage(site, q1) == "restrike"
    # q2: confirm the key as is: one blind approval only, so the panel must confirm it
    admin.goto(f"{site['url']}/items/{q2}/adjudicate")
    assert "I think the key is wrong" in admin.locator("#all-reviews").inner_text()
    _verdict(admin, answer="C")
    assert stage(site, q2) == "escalated"
    shot(admin, "07-admin-reconciled")
    for name in [u for u in ("pan1", "pan2", "pan3") if _assigned(site, q2, u)]:
        score(login(site, name), site, q2, "accept")
    admin.goto(site["url"] + "/admin")
    admin.click("#run-consensus")
    admin.wait_for_selector('#consensus-job[data-status="done"]')  # a background job; the page refreshes
    assert stage(site, q2) == "approved"
    admin.goto(site["url"] + "/admin/agreement")
    assert admin.locator("#cohen tr").count() == 2  # header + the rev1/rev2 pair
    shot(admin, "08-agreement")
    admin.goto(site["url"] + "/admin/audit")
    audit = admin.locator("#audit").inner_text()
    for kind in ("item_viewed", "review_submitted", "revision", "panel_submitted", "regenerated", "decision", "login",
                 "restrike"):
        assert kind in audit
    shot(admin, "09-audit")
    with store.engine.connect() as conn:
        approved = conn.execute(select(DecisionRow.item_id, DecisionRow.human_approvals, DecisionRow.expert_validated)
                                .where(DecisionRow.kind == "approved").order_by(DecisionRow.item_id)).all()
    assert approved == [(q0, 2, True), (q2, 2, True), (q3, 2, True)]


def _edited(site, item: str, name: str) -> bool:
    with site["store"].engine.connect() as conn:
        uid = conn.scalar(select(UserRow.id).where(UserRow.name == name))
        return bool(conn.scalar(select(func.count()).select_from(RevisionRow).where(
            RevisionRow.item_id == item, RevisionRow.user_id == uid)))


def _verdict(admin, answer: str, cot: str | None = None, key: str | None = None) -> None:
    for dim in ("relevance", "correctness", "sufficiency"):
        admin.check(f"#{dim}-1")
    admin.select_option("#answer", answer)
    admin.check("#approve-1")
    if cot is not None or key is not None:
        admin.click("#reconcile summary")
    if cot is not None:
        admin.check("#change_cot")
        admin.fill("#edit_cot", cot)
    if key is not None:
        admin.check("#change_answer")
        admin.select_option("#edit_answer", key)
    admin.click("#submit-adjudication")
    admin.wait_for_url("**/adjudicate?m=*")


def test_the_builder_releases_the_browser_approvals_and_refuses_a_forged_decision_row(site):
    """After the flows above: the release holds exactly the items approved in the browser, each with its two human
    raters' rubric on the released text; a copy of the store with a forged "approved" decision for q1 (approved
    by nobody on its current text) fails `medcot build` naming q1, and nothing is written."""
    q0, q1, q2, q3, _ = site["ids"]
    tmp = site["tmp"]
    url = site["store"].url
    splits = "build.splits={train: 1.0, validation: 0.0, test: 0.0}"
    res = CliRunner().invoke(main, ["build", "--store", url, "--out", str(tmp / "release"), "--set", splits])
    assert res.exit_code == 0, res.output
    released = datasets.load_dataset(str(tmp / "release"), "validated", split="train", cache_dir=str(tmp / "hf"))
    assert sorted(released["id"]) == [q0, q2, q3]
    assert all(r["validation"] == "expert" and r["rubric_raters"] >= 2 and r["rubric_raters_kind"] == "human"
               for r in released)

    forged_db = tmp / "forged.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as src, sqlite3.connect(forged_db) as dst:
        src.backup(dst)  # a consistent copy, WAL included
    forged = Store(str(forged_db))
    with forged.transaction() as conn:
        conn.execute(insert(DecisionRow).values(item_id=q1, user_id=None, kind="approved", human_approvals=2,
                                                automated_approvals=0, expert_validated=True, details={}))
        conn.execute(update(ItemRow).where(ItemRow.id == q1).values(stage="approved"))
    forged.close()
    out = tmp / "forged-release"
    res = CliRunner().invoke(main, ["build", "--store", str(forged_db), "--out", str(out), "--set", splits])
    assert res.exit_code == 2, res.output
    assert f"[validated] {q1}: invariant" in res.output and "nothing was written" in res.output
    assert not out.exists()


def test_keyboard_shortcuts_fill_the_review_and_a_final_submit_asks_first(site):
    """Every choice by keyboard (the highlighted group takes the key shown beside a choice, then the next group is
    highlighted; [ goes back), Ctrl+Enter submits, and the confirmation comes first: cancelled, nothing is sent;
    accepted, the review is stored with exactly the keyed choices. The page runs no script but ours."""
    store, cfg = site["store"], site["cfg"]
    [item] = sample.add_items(store, 1, prefix="k")
    with store.transaction() as conn:
        assigning.assign(conn, [item], "review", 2, assigning.pool(conn, cfg.review, "review"))
    ctx = site["browser"].new_context()
    page = ctx.new_page()
    page.goto(site["url"] + "/login")
    page.fill("#name", "rev1")
    page.fill("#password", PW)
    page.click("#login")
    page.wait_for_url(site["url"] + "/")
    page.goto(f"{site['url']}/items/{item}/review")
    assert page.locator("#group-relevance.current").count() == 1  # the first group is highlighted
    page.locator("h1").click()  # focus outside any field
    for key in ["1", "1", "0", "c", "0", "2", "2", "1", "2", "0", "2", "3"]:
        page.keyboard.press(key)
    assert page.locator("#cognitive_level-problem-solving").is_checked()
    for key in ["[", "2", "1"]:  # back to difficulty, the same choice again, then cognitive level changed
        page.keyboard.press(key)
    assert page.locator("#sufficiency-0").is_checked() and page.locator("#answer").input_value() == "C"
    assert page.locator("#approve-0").is_checked() and page.locator("#score_information_sufficiency-1").is_checked()
    assert page.locator("#difficulty-moderate").is_checked() and page.locator("#cognitive_level-recall").is_checked()
    page.fill("#comment", "typed, then 1 and c stay text")  # keys typed into a text field are text
    assert page.locator("#comment").input_value() == "typed, then 1 and c stay text"
    assert page.locator("#cognitive_level-recall").is_checked()

    seen: list[str] = []

    def cancel(dialog) -> None:
        seen.append(dialog.message)
        dialog.dismiss()
    page.once("dialog", cancel)
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(300)
    assert seen == [CONFIRM] and page.locator("#review-form").count() == 1 and not rows(site, ReviewRow, item)
    page.once("dialog", lambda d: (seen.append(d.message), d.accept()))
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#my-review")
    assert seen == [CONFIRM, CONFIRM]
    [r] = rows(site, ReviewRow, item)
    assert (r["relevance"], r["correctness"], r["sufficiency"], r["answer"], r["approve"]) == (1, 1, 0, "C", False)
    assert (r["difficulty"], r["cognitive_level"], r["comment"]) == ("moderate", "recall",
                                                                     "typed, then 1 and c stay text")
    with store.engine.connect() as conn:
        scores = dict(conn.execute(select(RubricScoreRow.dimension, RubricScoreRow.score).where(
            RubricScoreRow.item_id == item)).all())
    assert scores == {"medical_correctness": 2, "reasoning_structure": 2, "information_sufficiency": 1,
                      "terminology_clarity": 2, "clinical_utility": 0}
    assert page.locator("script").evaluate_all("els => els.map(e => e.getAttribute('src'))") == ["/static/review.js"]
    shot(page, "10-keyboard-review-submitted")
    ctx.close()


GUIDE_COT = ("**Step 1.** Pulseless electrical activity: the 2010 AHA algorithm gives adrenaline 1 mg every "
             "3-5 min and amiodarone for shockable rhythms.\n"
             "**Step 2.** The dose in children is $10\\,\\mu g/kg$; the rate is \\(\\approx 100\\text{/min}\\).\n"
             "**Step 3.** Atropine was removed from the algorithm in 2010.\n\n"
             "- A. Adrenaline: used\n- B. Vasopressin: used (2010)\n- C. Atropine: removed\n- D. Amiodarone: used\n\n"
             "Answer: C")


def test_the_review_guide_screenshots(site):
    """docs/review-guide.md shows what the experts see. With MEDCOT_DOCS_SCREENSHOTS=1 this test takes the
    screenshots again (fresh items, palette PNGs); otherwise it checks that they exist and stay small."""
    if not os.environ.get("MEDCOT_DOCS_SCREENSHOTS"):
        for name in GUIDE_SHOTS:
            path = GUIDE_IMG / name
            assert path.is_file(), f"{path} is missing: run this test with MEDCOT_DOCS_SCREENSHOTS=1"
            assert path.stat().st_size < GUIDE_MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
        return
    store, cfg = site["store"], site["cfg"]
    review_item, panel_item, adj_item = (sample.add_items(store, 1, prefix=p, cot_extra="")[0]
                                         for p in ("guide-r", "guide-p", "guide-a"))
    with store.transaction() as conn:
        conn.execute(update(GenerationRow).where(GenerationRow.item_id.in_([review_item, panel_item, adj_item]))
                     .values(cot=GUIDE_COT))
        assigning.assign(conn, [review_item, adj_item], "review", 2, assigning.pool(conn, cfg.review, "review"))
    rev1, rev2 = login(site, "rev1"), login(site, "rev2")
    review(rev1, site, adj_item, comment="The key is right: atropine left the algorithm in 2010.")
    review(rev2, site, adj_item, answer="B", approve=False, comment="Vasopressin was removed in 2015, not 2010.")
    sample.set_stage(store, adj_item, "adjudication")
    sample.fail_five_strikes(store, panel_item)
    with store.transaction() as conn:
        assigning.assign(conn, [panel_item], "panel", 2, assigning.pool(conn, cfg.review, "panel"))
        panelist = next(u for u in ("pan1", "pan2", "pan3") if get_user_by_name(conn, u).id in
                        assigning.assigned(conn, panel_item, "panel"))
        assigning.assign(conn, [adj_item], "adjudication", 1, [get_user_by_name(conn, panelist)])

    rev1.set_viewport_size({"width": 1100, "height": 760})
    rev1.goto(site["url"] + "/")
    _guide_shot(rev1, "review-queue.png", full_page=False)
    rev1.goto(f"{site['url']}/items/{review_item}/review")
    rev1.locator("h1").click()
    for key in ("1", "1", "1", "c", "1", "2", "2"):  # half-way through by keyboard: the highlight moves on
        rev1.keyboard.press(key)
    _guide_shot(rev1, "review-form.png")
    pan = login(site, panelist)
    pan.set_viewport_size({"width": 1100, "height": 760})
    pan.goto(f"{site['url']}/items/{panel_item}/panel")
    _guide_shot(pan, "review-panel.png")
    pan.goto(f"{site['url']}/items/{adj_item}/adjudicate")
    assert "reviewer 1" in pan.locator("#all-reviews").inner_text()  # pseudonyms, not names
    _guide_shot(pan, "review-adjudication.png")


def _guide_shot(page, name: str, full_page: bool = True) -> None:
    """A screenshot as a 64-colour palette PNG (UI screenshots keep their look), halved if still too large."""
    from PIL import Image
    image = Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    GUIDE_IMG.mkdir(parents=True, exist_ok=True)
    for scale in (1.0, 0.75, 0.5):
        small = image.resize((int(image.width * scale), int(image.height * scale))) if scale < 1 else image
        small.quantize(colors=64).save(GUIDE_IMG / name, optimize=True)
        if (GUIDE_IMG / name).stat().st_size < GUIDE_MAX_BYTES:
            return
    pytest.fail(f"{name} stays above {GUIDE_MAX_BYTES} bytes")

"""The review app in a real browser (Playwright driving Debian's Chromium; never `playwright install`).

One uvicorn server (in a thread, on a free port) and one scripted OpenAI server (for the guided regeneration)
for the module. Scenario: two reviewers review the same items blind, one edits a CoT; a panelist scores an
escalated item and asks for a regeneration, the panel re-scores the new CoT; the admin runs consensus and
adjudicates a disagreement; the agreement dashboard and the audit log show it. Screenshots go to
test-artifacts/review/.
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from medcot.config import load_config
from medcot.review_tables import DecisionRow
from medcot.scripted_server import ScriptedServer
from medcot.store import Store

pytestmark = pytest.mark.browser
PW = "correct horse battery"
XSS = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "review"
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
        sample.add_users(store, PW, reviewers=2, panelists=2, admins=1)
        with store.transaction() as conn:
            assigning.assign(conn, ids, "review", 2, assigning.pool(conn, cfg.review, "review"))
        with AppThread(create_app(cfg, secret_key="b" * 40, store=store)) as app:
            from playwright.sync_api import sync_playwright
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                try:
                    yield {"url": app.url, "browser": browser, "store": store, "ids": ids, "llm": llm, "cfg": cfg}
                finally:
                    browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(site, name: str):
    ctx = site["browser"].new_context()
    page = ctx.new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    page.goto(site["url"] + "/login")
    page.fill("#name", name)
    page.fill("#password", PW)
    page.click("#login")
    page.wait_for_url(site["url"] + "/")
    return page


def review(page, site, item: str, answer: str = "C", approve: bool = True, comment: str = "",
           cot: str | None = None) -> None:
    page.goto(f"{site['url']}/items/{item}/review")
    for dim in ("relevance", "correctness", "sufficiency"):
        page.check(f"#{dim}-1")
    page.select_option("#answer", answer)
    page.check("#approve-1" if approve else "#approve-0")
    page.fill("#comment", comment)
    if cot is not None:
        page.click("#edits summary")
        page.fill("#edit_cot", cot)
    page.click("#submit-review")
    page.wait_for_selector("#my-review")


def score(page, site, item: str, action: str, feedback: str = "") -> None:
    page.goto(f"{site['url']}/items/{item}/panel")
    for dim in ("medical_correctness", "reasoning_structure", "information_sufficiency", "terminology_clarity",
                "clinical_utility"):
        page.check(f"#score_{dim}-{1 if action == 'regenerate' else 2}")
    page.check(f"#action-{action}")
    page.fill("#feedback", feedback)
    page.click("#submit-panel")
    page.wait_for_selector("#message")


def stage(site, item: str) -> str:
    return site["store"].items(ids=[item])[0].stage


def test_review_panel_consensus_and_adjudication_in_the_browser(site):
    q0, q1, q2, q3 = site["ids"]
    rev1 = login(site, "rev1")
    assert rev1.locator("#queue-review .item-link").count() == 4
    shot(rev1, "01-rev1-queue")
    rev1.goto(f"{site['url']}/items/{q0}/review")
    cot = rev1.locator("#cot")
    assert "<script>window.__pwned=1</script>" in cot.inner_text()  # shown as text ...
    assert cot.locator("script, img").count() == 0  # ... never as markup
    assert rev1.evaluate("window.__pwned") is None
    shot(rev1, "02-rev1-review-form-xss-inert")
    review(rev1, site, q0, comment="rev1 private note on q0")
    review(rev1, site, q1, cot="Atropine was removed from the 2010 algorithm; the others stay.\nAnswer: C")
    review(rev1, site, q2, comment="the key is right")
    review(rev1, site, q3)
    shot(rev1, "03-rev1-submitted")

    rev2 = login(site, "rev2")
    rev2.goto(f"{site['url']}/items/{q0}/review")
    assert "rev1 private note" not in rev2.content()  # blind: nothing of rev1's review
    api = rev2.context.request.get(f"{site['url']}/api/items/{q0}").json()  # the API with rev2's session
    assert api["my_reviews"] == [] and "rev1" not in str(api)
    rev2.goto(f"{site['url']}/items/{q1}/review")
    assert "Atropine was removed from the 2010 algorithm" in rev2.locator("#cot").inner_text()
    review(rev2, site, q0)
    review(rev2, site, q1)
    review(rev2, site, q2, answer="A", comment="I think the key is wrong")  # disagreement
    review(rev2, site, q3)
    assert {stage(site, i) for i in site["ids"]} == {"reviewed"}

    store, cfg = site["store"], site["cfg"]
    for i in (q0, q1, q2):  # the five-strike stage's results (another stage, simulated here)
        sample.set_stage(store, i, "strikes_passed")
    sample.fail_five_strikes(store, q3)
    with store.transaction() as conn:  # what the `panel` stage of `medcot run` does first
        assigning.assign(conn, [q3], "panel", 2, assigning.pool(conn, cfg.review, "panel"))

    pan1 = login(site, "pan1")
    pan1.goto(f"{site['url']}/items/{q3}/panel")
    assert pan1.locator("#attempts tr").count() == 6  # header + five failed attempts
    assert "rev2" in pan1.locator("#earlier-reviews").inner_text()
    shot(pan1, "04-pan1-panel-history")
    score(pan1, site, q3, "regenerate", feedback="Explain why vasopressin is still used.")
    assert pan1.locator("#waiting").count() == 1
    pan2 = login(site, "pan2")
    pan2.goto(f"{site['url']}/items/{q3}/panel")
    assert "Explain why vasopressin" not in pan2.content()  # blind within the panel
    score(pan2, site, q3, "accept")
    deadline = time.monotonic() + 15  # the guided regeneration runs in the app's background
    while pan2.locator("#panel-form").count() == 0:
        assert time.monotonic() < deadline, "the regeneration did not arrive"
        time.sleep(0.3)
        pan2.reload()
    assert "Revised following the experts' feedback." in pan2.locator("#cot").inner_text()
    regen = next(b for b in site["llm"].server.bodies if not b.get("response_format"))
    assert "Explain why vasopressin is still used." in regen["messages"][-1]["content"]
    shot(pan2, "05-pan2-regenerated-cot")
    score(pan2, site, q3, "accept")
    score(pan1, site, q3, "accept")
    assert stage(site, q3) == "panel_done"

    admin = login(site, "admin1")
    admin.goto(site["url"] + "/admin")
    admin.click("#run-consensus")
    admin.wait_for_selector("#message")
    assert [stage(site, i) for i in site["ids"]] == ["approved", "approved", "adjudication", "approved"]
    shot(admin, "06-admin-after-consensus")
    admin.click(f"#adjudication-queue a:has-text('{q2}')")
    assert "I think the key is wrong" in admin.locator("#all-reviews").inner_text()  # adjudication sees all
    for dim in ("relevance", "correctness", "sufficiency"):
        admin.check(f"#{dim}-1")
    admin.select_option("#answer", "C")
    admin.check("#approve-1")
    admin.click("#submit-adjudication")
    admin.wait_for_selector("#adjudicated")
    assert stage(site, q2) == "approved"
    shot(admin, "07-admin-adjudicated")
    admin.goto(site["url"] + "/admin/agreement")
    assert admin.locator("#cohen tr").count() == 2  # header + the rev1/rev2 pair
    shot(admin, "08-agreement")
    admin.goto(site["url"] + "/admin/audit")
    audit = admin.locator("#audit").inner_text()
    for kind in ("item_viewed", "review_submitted", "revision", "panel_submitted", "regenerated", "decision", "login"):
        assert kind in audit
    shot(admin, "09-audit")
    with store.engine.connect() as conn:
        approved = conn.execute(select(DecisionRow.item_id, DecisionRow.human_approvals, DecisionRow.expert_validated)
                                .where(DecisionRow.kind == "approved").order_by(DecisionRow.item_id)).all()
    assert approved == [(q0, 2, True), (q1, 2, True), (q2, 2, True), (q3, 2, True)]

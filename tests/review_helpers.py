"""Review forms for tests, judged on the item's current revision (as the web form and every import send them)."""
from __future__ import annotations

from typing import Any

from curation.review.items import get_item, item_revision, revision_count
from curation.review.records import PanelInput, ReviewInput
from medcot.store import Store

ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}
LABELS: dict[str, Any] = dict(scores=ALL2, difficulty="moderate", cognitive_level="interpretation")


def revision_of(store: Store, item_id: str) -> str:
    with store.engine.connect() as conn:
        return item_revision(conn, get_item(conn, item_id))


def vote(store: Store, item_id: str, relevance: int = 1, correctness: int = 1, sufficiency: int = 1,
         answer: str = "C", approve: bool = True, comment: str = "", **kw: Any) -> ReviewInput:
    return ReviewInput(relevance, correctness, sufficiency, answer, approve, comment,
                       **{**LABELS, "revision": revision_of(store, item_id), **kw})


def panel_vote(store: Store, item_id: str, action: str = "accept", scores: dict[str, int] | None = None,
               answer: str = "C", **kw: Any) -> PanelInput:
    with store.engine.connect() as conn:
        rnd = revision_count(conn, item_id)
    return PanelInput(kw.pop("round", rnd), scores or ALL2, action, answer, revision=revision_of(store, item_id), **kw)


RUBRIC_FORM = {**{f"score_{d}": "2" for d in ALL2}, "difficulty": "moderate", "cognitive_level": "interpretation"}


def hidden(html: str, name: str) -> str:
    """The value of a hidden form field on a rendered page (csrf_token, revision, round)."""
    import re
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    if m is None:
        raise AssertionError(f"no hidden field {name!r} on the page")
    return m.group(1)


def page_form(html: str) -> dict[str, str]:
    """What a browser sends back from a review page besides the reviewer's choices."""
    out = {"csrf_token": hidden(html, "csrf_token")}
    if 'name="revision"' in html:
        out["revision"] = hidden(html, "revision")
    return out


def run_consensus_job(client: Any, csrf: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """POST /admin/consensus (a background job) and wait for it: the job's JSON once it has finished."""
    import time
    r = client.post("/admin/consensus", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and "job=" in r.headers["location"], r.text
    job_id = r.headers["location"].split("job=", 1)[1]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}").json()
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"consensus job {job_id} still running after {timeout_s} s")

"""Routes of the review app (see app.py). Handlers are short: parse, check, call the submission code, render.

Database work runs inline on the event loop: it is short, and in one process it then never contends for
SQLite's write lock; password hashing (argon2, ~0.3 s of CPU) runs in a worker thread.
"""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from curation.review import forms, i18n, views
from curation.review.accounts import staffing
from curation.review.app import ReviewApp
from curation.review.auth import (
    SESSION_COOKIE,
    LoginBackoff,
    authenticate,
    list_users,
    open_session,
    revoke_session,
)
from curation.review.consensus import consensus_job
from curation.review.items import get_item
from curation.review.jobs import Job, in_process
from curation.review.panel import regenerate, submit_panel
from curation.review.records import ReviewError, User
from curation.review.stats import collect, fmt
from curation.review.submit import submit_adjudication, submit_review
from curation.review.timing import expert_time, pace, record_active_time
from medcot.db import EventRow
from medcot.llm import LLMClient, LLMError
from medcot.records import Event

AUDIT_PAGE = 200


def register(app: FastAPI, s: ReviewApp) -> None:  # noqa: C901 (a flat list of small routes)
    def need_user(request: Request) -> User:
        user = s.user(request)
        if user is None:
            raise _Redirect("/login")
        return user

    def need_admin(request: Request) -> User:
        user = need_user(request)
        if user.role != "admin":
            raise ReviewError("admins only", 403)
        return user

    @app.exception_handler(_Redirect)
    async def _redirect(request: Request, exc: _Redirect) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not logged in"}, status_code=401)
        return RedirectResponse(exc.url, status_code=303)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login")
    async def login_page(request: Request) -> Response:
        if s.session(request) is not None:
            return s.render(request, "login.html", error=None)
        cookie, data = s.sessions.new(None)  # an anonymous session carries the login form's CSRF token
        response = s.render(request, "login.html", csrf=data["csrf"], error=None)
        s.set_cookie(request, response, cookie)
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        data = await s.form(request)
        ip = s.client_ip(request)
        try:
            user = await asyncio.to_thread(authenticate, s.store, s.throttle, str(data.get("name", "")),
                                           str(data.get("password", "")), ip)
        except ReviewError as exc:
            response = s.render(request, "login.html", status=exc.status, error=str(exc))
            if isinstance(exc, LoginBackoff):
                response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        with s.store.transaction() as conn:  # a fresh server-side session (and CSRF token) after login
            sid = open_session(conn, user.id, s.cfg.review.session_max_age_s)
        cookie, _ = s.sessions.new(user.id, sid)
        response = RedirectResponse("/", status_code=303)
        s.set_cookie(request, response, cookie)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await s.form(request)
        user = s.user(request)
        session = s.session(request)
        with s.store.transaction() as conn:  # the old cookie is worthless from now on, even if kept
            revoke_session(conn, (session or {}).get("sid"))
        if user:
            s.audit(user, "logout", ip=s.client_ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/lang")
    async def set_language(request: Request) -> Response:
        """The interface language switch (header of every page): a cookie, then back to the page."""
        data = await s.form(request)
        lang, back = data.get("lang", ""), data.get("next", "/")
        if lang not in i18n.LANGUAGES:
            raise ReviewError(f"field 'lang' must be one of {', '.join(i18n.LANGUAGES)}")
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            raise ReviewError("field 'next' must be a path of this site")
        response = RedirectResponse(back, status_code=303)
        s.set_language(request, response, lang)
        return response

    @app.get("/")
    async def queue(request: Request) -> Response:
        user = need_user(request)
        with s.store.engine.connect() as conn:
            rows = views.my_assignments(conn, user)
            mine = pace(conn, user.id)
        mine |= {"done": sum(1 for r in rows if r["done"]), "remaining": sum(1 for r in rows if r["open"])}
        return s.render(request, "queue.html", me=user, rows=rows, q=quote, pace=mine)

    # ---- initial review ------------------------------------------------------------------------
    # {item_id:path}: an item id may contain "/" (sent as %2F or as is). Every POST checks the access first, like
    # the pages: a missing item and one that is not the user's get the same 404, before the form is even parsed.
    @app.get("/items/{item_id:path}/review")
    async def review_page(request: Request, item_id: str) -> Response:
        user = need_user(request)
        rubric = s.cfg.review.rubric == "all"
        with s.store.engine.connect() as conn:
            ctx = views.review_context(conn, item_id, user, rubric)
        s.audit(user, "item_viewed", item_id, phase="review")
        return s.render(request, "review.html", me=user, **ctx, typed={}, message=request.query_params.get("m"))

    @app.post("/items/{item_id:path}/review")
    async def review_submit(request: Request, item_id: str) -> Response:
        user = need_user(request)
        data = await s.form(request)
        letters = _letters(s, item_id, user, "review")
        rubric = s.cfg.review.rubric == "all"
        try:
            result = submit_review(s.store, item_id, user, forms.review_input(data, letters, True, rubric),
                                   s.cfg.review, actor_note="web")
        except ReviewError as exc:
            if exc.status not in (400, 409):
                raise
            with s.store.engine.connect() as conn:  # the form again, with what the reviewer typed and why
                ctx = views.review_context(conn, item_id, user, rubric)
            return s.render(request, "review.html", status=exc.status, me=user, **ctx, typed=data, error=str(exc))
        code = "saved" if result.status == "stored" else "already_saved"
        if result.status == "stored":
            _time_it(s, user, item_id, "review")
        return RedirectResponse(f"/items/{quote(item_id, safe='')}/review?m={code}", status_code=303)

    # ---- panel ---------------------------------------------------------------------------------
    @app.get("/items/{item_id:path}/panel")
    async def panel_page(request: Request, item_id: str) -> Response:
        user = need_user(request)
        with s.store.engine.connect() as conn:
            ctx = views.panel_context(conn, item_id, user, s.cfg.review)
        s.audit(user, "item_viewed", item_id, phase="panel")
        return s.render(request, "panel.html", me=user, **ctx, typed={}, message=request.query_params.get("m"))

    @app.post("/items/{item_id:path}/panel")
    async def panel_submit(request: Request, item_id: str) -> Response:
        user = need_user(request)
        data = await s.form(request)
        letters = _letters(s, item_id, user, "panel")
        try:
            status = submit_panel(s.store, item_id, user, forms.panel_input(data, letters), s.cfg.review)
        except ReviewError as exc:
            if exc.status not in (400, 409):
                raise
            with s.store.engine.connect() as conn:  # the form again, with what the panelist typed and why
                ctx = views.panel_context(conn, item_id, user, s.cfg.review)
            return s.render(request, "panel.html", status=exc.status, me=user, **ctx, typed=data, error=str(exc))
        if status != "already":
            _time_it(s, user, item_id, "panel")
        if status == "regenerate":
            s.spawn(_regenerate(s, item_id))
        return RedirectResponse(f"/items/{quote(item_id, safe='')}/panel?m={status}", status_code=303)

    # ---- adjudication --------------------------------------------------------------------------
    def adjudication_page(request: Request, item_id: str, user: User, **extra: Any) -> Response:
        labels = None if user.role == "admin" else views.pseudonyms(i18n.translator(s.language(request, user)))
        with s.store.engine.connect() as conn:
            views.phase_access(conn, item_id, user, "adjudication")
            ctx = views.full_context(conn, item_id, labels, user)
            mine = views.own_review(conn, item_id, user, "adjudication")
        return s.render(request, "adjudicate.html", me=user, **ctx, mine=mine, **extra)

    @app.get("/items/{item_id:path}/adjudicate")
    async def adjudicate_page(request: Request, item_id: str) -> Response:
        user = need_user(request)
        page = adjudication_page(request, item_id, user, typed={}, message=request.query_params.get("m"))
        s.audit(user, "item_viewed", item_id, phase="adjudication")
        return page

    @app.post("/items/{item_id:path}/adjudicate")
    async def adjudicate_submit(request: Request, item_id: str) -> Response:
        user = need_user(request)
        data = await s.form(request)
        letters = _letters(s, item_id, user, "adjudication")
        try:
            result = submit_adjudication(s.store, item_id, user,
                                         forms.review_input(data, letters, allow_edits=True), s.cfg.review)
        except ReviewError as exc:
            if exc.status not in (400, 409):
                raise
            return adjudication_page(request, item_id, user, status=exc.status, typed=data, error=str(exc))
        code = result.outcome or result.status  # a banner code (i18n), never free text in the URL
        if result.status == "stored":
            _time_it(s, user, item_id, "adjudication")
        return RedirectResponse(f"/items/{quote(item_id, safe='')}/adjudicate?m={code}", status_code=303)

    # ---- JSON API (read-only; same access rules as the pages) ----------------------------------
    @app.get("/api/me")
    async def api_me(request: Request) -> dict[str, Any]:
        user = need_user(request)
        return {"name": user.name, "role": user.role, "kind": user.kind}

    @app.get("/api/assignments")
    async def api_assignments(request: Request) -> list[dict[str, Any]]:
        user = need_user(request)
        with s.store.engine.connect() as conn:
            return views.my_assignments(conn, user)

    @app.get("/api/items/{item_id:path}")
    async def api_item(request: Request, item_id: str) -> dict[str, Any]:
        user = need_user(request)
        with s.store.engine.connect() as conn:
            out = views.api_item(conn, item_id, user)
        s.audit(user, "item_viewed", item_id, phase="api")
        return out

    @app.get("/api/reviews/{review_id}")
    async def api_review(request: Request, review_id: int) -> dict[str, Any]:
        user = need_user(request)
        with s.store.engine.connect() as conn:
            return views.api_review(conn, review_id, user)

    # ---- admin ---------------------------------------------------------------------------------
    @app.get("/admin")
    async def admin(request: Request) -> Response:
        user = need_admin(request)

        def read() -> dict[str, Any]:  # agreement bootstraps take seconds on a big store: off the event loop
            with s.store.engine.connect() as conn:
                return {"stats": collect(conn, "human"), "staffing": staffing(conn, s.cfg.review),
                        "expert_time": expert_time(conn, s.cfg.review),
                        "users": list_users(conn),
                        "queue": [dict(item_id=it.id, question=it.question[:140])
                                  for it in s.store.items(stage="adjudication")]}
        ctx = await asyncio.to_thread(read)
        return s.render(request, "admin.html", me=user, **ctx, q=quote, job=s.jobs.latest("consensus"),
                        message=request.query_params.get("m"))

    @app.post("/admin/consensus")
    async def admin_consensus(request: Request) -> Response:
        """Start consensus as a background job (pages keep answering while it decides); the dashboard and
        /admin/jobs/{id} show its progress and outcome."""
        user = need_admin(request)
        await s.form(request)

        def finished(job: Job) -> None:
            s.audit(user, "consensus_run", job=job.id, status=job.status, error=job.error, **job.result)

        job = s.jobs.start("consensus", in_process(consensus_job, s.store.url, s.cfg.review),
                           lambda job: s.audit(user, "consensus_started", job=job.id), finished)
        return RedirectResponse(f"/admin?job={job.id}", status_code=303)

    @app.get("/admin/jobs/{job_id}")
    async def admin_job(request: Request, job_id: str) -> dict[str, Any]:
        need_admin(request)
        job = s.jobs.get(job_id)
        if job is None:
            raise ReviewError("no such job (jobs are kept until the app restarts)", 404)
        return job.as_dict()

    @app.get("/admin/agreement")
    async def agreement(request: Request) -> Response:
        user = need_admin(request)
        raters = request.query_params.get("raters", "human")
        if raters not in ("human", "all"):
            raise ReviewError("raters is human or all")
        def read() -> dict[str, Any]:
            with s.store.engine.connect() as conn:
                return collect(conn, raters)
        return s.render(request, "agreement.html", me=user, stats=await asyncio.to_thread(read), fmt=fmt)

    @app.get("/admin/audit")
    async def audit(request: Request) -> Response:
        user = need_admin(request)
        query = select(EventRow).order_by(EventRow.id.desc()).limit(AUDIT_PAGE)
        if item := request.query_params.get("item"):
            query = query.where(EventRow.item_id == item)
        if kind := request.query_params.get("kind"):
            query = query.where(EventRow.kind == kind)
        if (before := request.query_params.get("before", "")).isascii() and before.isdigit():
            query = query.where(EventRow.id < int(before))
        with s.store.engine.connect() as conn:
            events = [dict(r) for r in conn.execute(query).mappings()]
        return s.render(request, "audit.html", me=user, events=events, q=quote, page=AUDIT_PAGE,
                        item=item or "", kind=kind or "")

    @app.get("/admin/items/{item_id:path}")
    async def admin_item(request: Request, item_id: str) -> Response:
        user = need_admin(request)
        with s.store.engine.connect() as conn:
            ctx = views.full_context(conn, item_id, None, user)  # admins see names
        s.audit(user, "item_viewed", item_id, phase="admin")
        return s.render(request, "admin_item.html", me=user, **ctx)


def _letters(s: ReviewApp, item_id: str, user: User, phase: str) -> list[str]:
    """The item's option letters, once the user may open it in this phase (404 "not found" otherwise)."""
    with s.store.engine.connect() as conn:
        views.phase_access(conn, item_id, user, phase)
        return sorted(get_item(conn, item_id).options)


def _time_it(s: ReviewApp, user: User, item_id: str, phase: str) -> None:
    """Record the active expert time of a submission just stored (curation/review/timing.py)."""
    with s.store.transaction() as conn:
        record_active_time(conn, item_id, user, phase, s.cfg.review.max_active_minutes)


class _Redirect(Exception):
    def __init__(self, url: str):
        self.url = url


async def _regenerate(s: ReviewApp, item_id: str) -> None:
    """A panel asked for a guided regeneration: run it now through the configured LLM. If the LLM cannot be
    reached the request stays pending (shown on the page, logged) and the `panel` stage of `medcot run` does it."""
    try:
        async with LLMClient(s.cfg.llm, s.store) as client:
            await regenerate(s.store, client, s.cfg.generate, s.cfg.llm.model, item_id, s.cfg.review)
    except (LLMError, ReviewError) as exc:
        s.store.log_event(Event(kind="regeneration_failed", item_id=item_id, stage="panel", actor="llm",
                                actor_kind="llm", payload={"error": str(exc)[:2000]}))

"""The review web app: FastAPI + server-rendered Jinja2 templates (autoescaped), no JavaScript.

    medcot review serve --config C          # 127.0.0.1:8020 by default; the session key from $MEDCOT_REVIEW_SECRET

Pages: login, my queue, the initial review form (2.3.1), the panel's rubric form with the five-strike history
(2.3.4), adjudication (2.3.5), and for admins: progress, adjudication queue, agreement dashboard, audit log.
Every POST needs the session's CSRF token; every item page checks the assignment (404 otherwise); every
view and submission is an audit event. Model output is only ever rendered as escaped text.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import MutableHeaders

from curation.review.auth import SESSION_COOKIE, LoginThrottle, Sessions, csrf_ok, get_user, session_live
from curation.review.records import ReviewError, User
from medcot.config import Config, ConfigError
from medcot.records import Event
from medcot.store import Store

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secret_from_env(cfg: Config) -> str:
    key = os.environ.get(cfg.review.secret_key_env, "")
    if not key:
        raise ConfigError(f"the review app needs a session-signing key: set ${cfg.review.secret_key_env} to a long "
                          f"random string (e.g. `export {cfg.review.secret_key_env}=$(python -c "
                          f"'import secrets; print(secrets.token_urlsafe(48))')`)")
    return key


class _Headers:
    """Security headers on every response (a plain ASGI middleware: no per-request task overhead)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ReviewApp:
    """State shared by the routes: config, store, sessions, templates, login throttle."""

    def __init__(self, cfg: Config, secret_key: str | None, store: Store | None):
        self.cfg = cfg
        self.store = store or Store(cfg.store.url)
        self.sessions = Sessions(secret_key if secret_key is not None else secret_from_env(cfg),
                                 cfg.review.session_max_age_s)
        self.throttle = LoginThrottle(cfg.review.login_max_failures, cfg.review.login_window_s)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)
        self.tasks: set[asyncio.Task[Any]] = set()

    # ---- sessions ---------------------------------------------------------------------------
    def session(self, request: Request) -> dict[str, Any] | None:
        return self.sessions.load(request.cookies.get(SESSION_COOKIE))

    def user(self, request: Request) -> User | None:
        s = self.session(request)
        if not s or s.get("uid") is None:
            return None
        with self.store.engine.connect() as conn:
            if not session_live(conn, s.get("sid"), int(s["uid"])):  # logged out, revoked or expired
                return None
            user = get_user(conn, int(s["uid"]))
        return user if user and user.active and user.is_human else None

    def set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=self.cfg.review.session_max_age_s, httponly=True,
                            samesite="strict", secure=self.cfg.review.cookie_secure, path="/")

    async def form(self, request: Request) -> dict[str, Any]:
        """The posted form, after the CSRF check (403 without the session's token)."""
        data = await request.form()
        if not csrf_ok(self.session(request), data.get("csrf_token")):  # type: ignore[arg-type]
            raise ReviewError("missing or invalid CSRF token: reload the page and try again", 403)
        return dict(data)

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s = self.session(request)
        html = self.env.get_template(name).render(csrf=s["csrf"] if s else "", me=ctx.pop("me", None), **ctx)
        return HTMLResponse(html, status_code=status)

    def audit(self, user: User, kind: str, item_id: str | None = None, **payload: Any) -> None:
        self.store.log_event(Event(kind=kind, item_id=item_id, stage="app", actor=user.name, actor_kind=user.kind,
                                   payload=payload))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def create_app(cfg: Config, secret_key: str | None = None, store: Store | None = None) -> FastAPI:
    """The ASGI app. `secret_key` defaults to the env var named by review.secret_key_env (required)."""
    state = ReviewApp(cfg, secret_key, store)
    app = FastAPI(title="medcot review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.add_middleware(_Headers)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(ReviewError)
    async def _error(request: Request, exc: ReviewError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return state.render(request, "error.html", status=exc.status, message=str(exc), code=exc.status,
                            me=state.user(request))

    from curation.review import routes
    routes.register(app, state)
    return app

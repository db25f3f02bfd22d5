"""The review web app: FastAPI + server-rendered Jinja2 templates (autoescaped); one small script of our own
(static/review.js: keyboard shortcuts, the confirmation before a final submit) and no other.

    medcot review serve --config C          # 127.0.0.1:8020 by default; the session key from $MEDCOT_REVIEW_SECRET

Pages: login, my queue, the initial review form (2.3.1), the panel's rubric form with the five-strike history
(2.3.4), adjudication (2.3.5), and for admins: progress, adjudication queue, agreement dashboard, audit log.
Every POST needs the session's CSRF token; every item page checks the assignment (404 otherwise); every
view and submission is an audit event. Model output is only ever rendered escaped (the CoT as Markdown with raw
HTML, links and images off: markup.py). Interface texts in English and Chinese (i18n.py). Away from localhost
(by the request's host) cookies are Secure and responses carry HSTS.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import URL, MutableHeaders

from curation.review import forms, i18n
from curation.review.auth import (
    SESSION_COOKIE,
    LoginThrottle,
    Sessions,
    client_address,
    csrf_ok,
    get_user,
    session_live,
)
from curation.review.jobs import Jobs
from curation.review.markup import markdown_html
from curation.review.records import ReviewError, User
from medcot.config import Config, ConfigError
from medcot.records import Event
from medcot.store import Store

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000"
FORM_TYPE = "application/x-www-form-urlencoded"


def is_local(host: str | None) -> bool:
    """Whether a request's host name is this computer (loopback address or *localhost)."""
    name = (host or "").lower().rstrip(".").strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secret_from_env(cfg: Config) -> str:
    key = os.environ.get(cfg.review.secret_key_env, "")
    if not key:
        raise ConfigError(f"the review app needs a session-signing key: set ${cfg.review.secret_key_env} to a long "
                          f"random string (e.g. `export {cfg.review.secret_key_env}=$(python -c "
                          f"'import secrets; print(secrets.token_urlsafe(48))')`)")
    return key


class _Headers:
    """Security headers on every response (a plain ASGI middleware: no per-request task overhead); HSTS when
    review.cookie_secure is set (HTTPS in front) or the request's host is not this computer. Browsers ignore
    HSTS received over plain HTTP, so it never locks out a local http:// user."""

    def __init__(self, app: Any, always_hsts: bool = False):
        self.app = app
        self.always_hsts = always_hsts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
                if self.always_hsts or not is_local(URL(scope=scope).hostname):
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ReviewApp:
    """State shared by the routes: config, store, sessions, templates, login throttle."""

    def __init__(self, cfg: Config, secret_key: str | None, store: Store | None):
        self.cfg = cfg
        self.store = store or Store(cfg.store.url)
        self.sessions = Sessions(secret_key if secret_key is not None else secret_from_env(cfg),
                                 cfg.review.session_max_age_s)
        self.throttle = LoginThrottle(cfg.review.login_max_failures, cfg.review.login_window_s,
                                      cfg.review.login_backoff_s)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["markdown"] = markdown_html
        self.env.globals["maxlen"] = forms.max_length
        self.tasks: set[asyncio.Task[Any]] = set()
        self.jobs = Jobs()

    def client_ip(self, request: Request) -> str:
        """The client's address (X-Forwarded-For only through review.trusted_proxies)."""
        return client_address(request.client.host if request.client else None,
                              request.headers.get("x-forwarded-for"), self.cfg.review.trusted_proxies)

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

    def cookie_secure(self, request: Request) -> bool:
        """Secure cookies when configured, over HTTPS, and always when the app is reached by a non-local name."""
        return self.cfg.review.cookie_secure or request.url.scheme == "https" or not is_local(request.url.hostname)

    def https_missing(self, request: Request) -> bool:
        """Reached from elsewhere over plain HTTP (and review.cookie_secure does not say HTTPS is in front): the
        Secure session cookie will not come back, so the login page says why logging in fails."""
        return not (self.cfg.review.cookie_secure or request.url.scheme == "https" or is_local(request.url.hostname))

    def set_cookie(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=self.cfg.review.session_max_age_s, httponly=True,
                            samesite="strict", secure=self.cookie_secure(request), path="/")

    def set_language(self, request: Request, response: Response, lang: str) -> None:
        response.set_cookie(i18n.LANG_COOKIE, lang, max_age=i18n.LANG_COOKIE_MAX_AGE_S, httponly=True,
                            samesite="strict", secure=self.cookie_secure(request), path="/")

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form (url-encoded UTF-8, every field checked: forms.parse_urlencoded), after the CSRF check
        (403 without the session's token)."""
        body = await _body(request, forms.MAX_BODY)
        ctype, _, params = request.headers.get("content-type", "").partition(";")
        charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
        if body and (ctype.strip().lower() != FORM_TYPE or charset not in ("utf-8", "utf8")):
            raise ReviewError(f"a form is sent as {FORM_TYPE} in UTF-8", 415)
        data = forms.parse_urlencoded(body)
        if not csrf_ok(self.session(request), data.get("csrf_token")):
            raise ReviewError("missing or invalid CSRF token: reload the page and try again", 403)
        return data

    def language(self, request: Request, user: User | None) -> str:
        profile = ((user.ui_language,) if user and user.ui_language else ()) + (user.languages if user else ())
        return i18n.ui_language(request.cookies.get(i18n.LANG_COOKIE), profile, request.headers.get("accept-language"))

    def render(self, request: Request, name: str, status: int = 200, csrf: str | None = None,
               **ctx: Any) -> HTMLResponse:
        """A page in the user's interface language; `message` is a banner code (i18n.banner), never shown raw."""
        me = ctx.pop("me", None)
        lang = self.language(request, me)
        if csrf is None:
            s = self.session(request)
            csrf = s["csrf"] if s else ""
        html = self.env.get_template(name).render(
            csrf=csrf, me=me, lang=lang, t=i18n.translator(lang), here=_here(request),
            insecure=self.https_missing(request),
            **{**ctx, "message": i18n.banner(ctx.get("message"), lang)})
        return HTMLResponse(html, status_code=status)

    def audit(self, user: User, kind: str, item_id: str | None = None, **payload: Any) -> None:
        self.store.log_event(Event(kind=kind, item_id=item_id, stage="app", actor=user.name, actor_kind=user.kind,
                                   payload=payload))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) beyond `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ReviewError(f"the form is too large (at most {limit} bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ReviewError(f"the form is too large (at most {limit} bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _here(request: Request) -> str:
    """This page's path, where the language switch returns to (not its query: a banner is not shown twice)."""
    return request.url.path


def create_app(cfg: Config, secret_key: str | None = None, store: Store | None = None) -> FastAPI:
    """The ASGI app. `secret_key` defaults to the env var named by review.secret_key_env (required)."""
    state = ReviewApp(cfg, secret_key, store)
    app = FastAPI(title="medcot review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.add_middleware(_Headers, always_hsts=cfg.review.cookie_secure)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(ReviewError)
    async def _error(request: Request, exc: ReviewError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return state.render(request, "error.html", status=exc.status, error=str(exc), code=exc.status,
                            me=state.user(request))

    from curation.review import routes
    routes.register(app, state)
    return app

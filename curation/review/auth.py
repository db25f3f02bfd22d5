"""Accounts and sessions of the review app.

- Passwords: argon2id (argon2-cffi's defaults), rehashed on login when the parameters change.
- Sessions: an itsdangerous-signed, time-limited cookie (HttpOnly, SameSite=Strict) holding the user id, the
  session's CSRF token and, once logged in, a random session id whose record lives in the store
  (`review_sessions`, by its sha256): logout and `medcot review user revoke-sessions` revoke it at once, and
  the user row is re-read on every request, so a deactivated account is out at once.
- CSRF: every form carries the session's token; a POST without the matching token is refused (403).
- Login throttling: failures are audit events; too many for one account (store-wide) or from one client
  address (this process) within the window lock further attempts (429) until the window passes.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from curation.review.items import log
from curation.review.records import ReviewError, User
from medcot.db import EventRow
from medcot.records import Event
from medcot.review_tables import ACTOR_KINDS, ROLES, SessionRow, UserRow
from medcot.store import Store

SESSION_COOKIE = "medcot_session"
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password: equalizes the time of unknown-user logins")
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ReviewError(f"a password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def _user(row: Any) -> User:
    return User(id=row["id"], name=row["name"], role=row["role"], kind=row["kind"], active=row["active"])


def create_user(store: Store, name: str, role: str, password: str | None, kind: str = "human",
                password_hash: str | None = None) -> User:
    """Add an account. Humans need a password (or an argon2 hash made by `hash_password`, e.g. to create many
    accounts with one hash); automated reviewers (kind llm/demo) have none and cannot log in."""
    if password_hash is not None and not password_hash.startswith("$argon2"):
        raise ReviewError("password_hash must be an argon2 hash")
    if role not in ROLES:
        raise ReviewError(f"role must be one of {', '.join(ROLES)}")
    if kind not in ACTOR_KINDS:
        raise ReviewError(f"kind must be one of {', '.join(ACTOR_KINDS)}")
    if not name or len(name) > 120 or name != name.strip():
        raise ReviewError("a user name is 1-120 characters without surrounding spaces")
    if kind == "human" and not (password or password_hash):
        raise ReviewError("a human account needs a password")
    pw_hash = password_hash or (hash_password(password) if password else None)
    try:
        with store.transaction() as conn:
            uid = conn.execute(insert(UserRow).values(name=name, role=role, kind=kind, password_hash=pw_hash)
                               .returning(UserRow.id)).scalar_one()
            log(conn, Event(kind="user_created", stage="auth", actor="admin-cli", payload={
                "user": name, "role": role, "kind": kind}))
    except IntegrityError as exc:
        raise ReviewError(f"user {name!r} already exists", 409) from exc
    return User(id=uid, name=name, role=role, kind=kind)


def ensure_automated_user(conn: Connection, name: str, role: str, kind: str = "llm") -> User:
    """The account an automated reviewer acts under (created on first use; it has no password)."""
    row = conn.execute(select(UserRow).where(UserRow.name == name)).mappings().first()
    if row is not None:
        if row["kind"] == "human":
            raise ReviewError(f"{name!r} is a human account; an automated reviewer cannot act under it")
        return _user(row)
    uid = conn.execute(insert(UserRow).values(name=name, role=role, kind=kind, password_hash=None)
                       .returning(UserRow.id)).scalar_one()
    log(conn, Event(kind="user_created", stage="auth", actor="system", payload={"user": name, "role": role,
                                                                                 "kind": kind}))
    return User(id=uid, name=name, role=role, kind=kind)


def get_user(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(UserRow).where(UserRow.id == user_id)).mappings().first()
    return _user(row) if row else None


def get_user_by_name(conn: Connection, name: str) -> User | None:
    row = conn.execute(select(UserRow).where(UserRow.name == name)).mappings().first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(select(UserRow).order_by(UserRow.id)).mappings()]


class LoginThrottle:
    """Failures per account come from the audit log (shared by every process); per client address in memory."""

    def __init__(self, max_failures: int, window_s: int):
        self.max_failures, self.window_s = max_failures, window_s
        self._by_ip: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _ip_failures(self, ip: str) -> int:
        cutoff = time.monotonic() - self.window_s
        q = self._by_ip[ip]
        while q and q[0] < cutoff:
            q.popleft()
        return len(q)

    def blocked(self, conn: Connection, name: str, ip: str) -> bool:
        with self._lock:
            if self._ip_failures(ip) >= self.max_failures * 4:  # many accounts tried from one address
                return True
        since = datetime.now(UTC) - timedelta(seconds=self.window_s)
        n = conn.scalar(select(func.count()).select_from(EventRow).where(
            EventRow.kind == "login_failed", EventRow.actor == name, EventRow.created_at >= since)) or 0
        return n >= self.max_failures

    def failed(self, ip: str) -> None:
        with self._lock:
            self._by_ip[ip].append(time.monotonic())


def authenticate(store: Store, throttle: LoginThrottle, name: str, password: str, ip: str) -> User:
    """The user, or ReviewError 401 (wrong name or password, same message) / 429 (throttled)."""
    name = name.strip()[:120]
    with store.transaction() as conn:  # the audit events commit before the error is raised
        blocked = throttle.blocked(conn, name, ip)
        if blocked:
            log(conn, Event(kind="login_throttled", stage="auth", actor=name, actor_kind="human", payload={"ip": ip}))
        row = conn.execute(select(UserRow).where(UserRow.name == name)).mappings().first()
    if blocked:
        raise ReviewError("too many failed logins: wait and try again later", 429)
    ok = _verify(row["password_hash"] if row and row["active"] else None, password) and row is not None
    with store.transaction() as conn:
        if not ok:
            throttle.failed(ip)
            log(conn, Event(kind="login_failed", stage="auth", actor=name, actor_kind="human", payload={"ip": ip}))
    if not ok or row is None:
        raise ReviewError("wrong user name or password", 401)
    with store.transaction() as conn:
        if _HASHER.check_needs_rehash(row["password_hash"]):
            conn.execute(update(UserRow).where(UserRow.id == row["id"]).values(password_hash=_HASHER.hash(password)))
        log(conn, Event(kind="login", stage="auth", actor=name, actor_kind=row["kind"], payload={"ip": ip}))
    return _user(row)


def _verify(pw_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(pw_hash or _DUMMY_HASH, password) and pw_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class Sessions:
    """Signed session cookies: {"uid": user id, "csrf": token}; expired or tampered cookies are no session."""

    def __init__(self, secret_key: str, max_age_s: int):
        if not secret_key or len(secret_key) < 16:
            raise ReviewError("the session secret key must have at least 16 characters")
        self._s = URLSafeTimedSerializer(secret_key, salt="medcot-review-session")
        self.max_age_s = max_age_s

    def new(self, user_id: int | None, sid: str | None = None) -> tuple[str, dict[str, Any]]:
        data = {"uid": user_id, "csrf": secrets.token_urlsafe(32), "sid": sid}
        return self._s.dumps(data), data

    def load(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            data = self._s.loads(cookie, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def open_session(conn: Connection, user_id: int, max_age_s: int) -> str:
    """A new server-side session for the user; returns its id (goes into the signed cookie only)."""
    sid = secrets.token_urlsafe(32)
    conn.execute(insert(SessionRow).values(sid_hash=_sid_hash(sid), user_id=user_id,
                                           expires_at=time.time() + max_age_s, revoked=False))
    return sid


def session_live(conn: Connection, sid: Any, user_id: int) -> bool:
    if not isinstance(sid, str) or not sid:
        return False
    row = conn.execute(select(SessionRow.user_id, SessionRow.expires_at, SessionRow.revoked)
                       .where(SessionRow.sid_hash == _sid_hash(sid))).first()
    return bool(row and row.user_id == user_id and not row.revoked and row.expires_at > time.time())


def revoke_session(conn: Connection, sid: Any) -> None:
    if isinstance(sid, str) and sid:
        conn.execute(update(SessionRow).where(SessionRow.sid_hash == _sid_hash(sid)).values(revoked=True))


def revoke_user_sessions(conn: Connection, user_id: int) -> int:
    """Revoke every live session of a user; returns how many were live."""
    res = conn.execute(update(SessionRow).where(SessionRow.user_id == user_id, SessionRow.revoked.is_(False),
                                                SessionRow.expires_at > time.time()).values(revoked=True))
    return int(res.rowcount or 0)


def csrf_ok(session: dict[str, Any] | None, token: str | None) -> bool:
    return bool(session and token and hmac.compare_digest(str(session["csrf"]), str(token)))

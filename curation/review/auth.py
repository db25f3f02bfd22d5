"""Accounts and sessions of the review app.

- Passwords: argon2id (argon2-cffi's defaults), rehashed on login when the parameters change.
- Sessions: an itsdangerous-signed, time-limited cookie (HttpOnly, SameSite=Strict) holding the user id, the
  session's CSRF token and, once logged in, a random session id whose record lives in the store
  (`review_sessions`, by its sha256): logout and `medcot review user revoke-sessions` revoke it at once, and
  the user row is re-read on every request, so a deactivated account is out at once.
- CSRF: every form carries the session's token; a POST without the matching token is refused (403).
- Login throttling: failures are audit events (with the client's address); after too many for one (account,
  address) pair, that pair backs off exponentially (429 with Retry-After). No account is ever locked for
  everyone: made-up names from a shared address, or failures from elsewhere, never stop a user's own login.
- Client address: the TCP peer, or behind a configured trusted proxy the X-Forwarded-For hop it vouches for.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from curation.review.items import log
from curation.review.records import ReviewError, User
from medcot.db import EventRow
from medcot.records import Event
from medcot.review_tables import ACTOR_KINDS, ROLES, ReviewerProfileRow, SessionRow, UserRow
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


def _profiled(conn: Connection, users: list[User]) -> list[User]:
    ids = [u.id for u in users]
    profiles = {r.user_id: r for r in conn.execute(select(ReviewerProfileRow).where(ReviewerProfileRow.user_id.in_(ids)))}
    for u in users:
        if (p := profiles.get(u.id)) is not None:
            u.languages, u.specialties = tuple(p.languages or ()), tuple(p.specialties or ())
            u.ui_language = p.ui_language
    return users


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
    return _profiled(conn, [_user(row)])[0] if row else None


def get_user_by_name(conn: Connection, name: str) -> User | None:
    row = conn.execute(select(UserRow).where(UserRow.name == name)).mappings().first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[User]:
    return _profiled(conn, [_user(r) for r in conn.execute(select(UserRow).order_by(UserRow.id)).mappings()])


class LoginThrottle:
    """Backoff per (account, client address), from the audit log (shared by every process): after
    `max_failures` failures of a pair within the window (since its last successful login), each further attempt
    must wait `backoff_s` * 2**(failures beyond the limit) after the last failure, capped at the window. Nothing
    is ever locked for others: failures from another address, or for other accounts, do not count."""

    def __init__(self, max_failures: int, window_s: int, backoff_s: float = 2.0):
        self.max_failures, self.window_s, self.backoff_s = max_failures, window_s, backoff_s

    def wait_s(self, conn: Connection, name: str, ip: str) -> float:
        """Seconds this (account, address) must still wait before its next attempt (0: go ahead)."""
        now = datetime.now(UTC)
        rows = conn.execute(select(EventRow.kind, EventRow.payload, EventRow.created_at).where(
            EventRow.actor == name, EventRow.kind.in_(("login_failed", "login")),
            EventRow.created_at >= now - timedelta(seconds=self.window_s)).order_by(EventRow.id))
        failures: list[datetime] = []
        for kind, payload, at in rows:
            if (payload or {}).get("ip") != ip:
                continue
            failures = [] if kind == "login" else failures + [at if at.tzinfo else at.replace(tzinfo=UTC)]
        beyond = len(failures) - self.max_failures
        if beyond < 0:
            return 0.0
        wait = min(self.backoff_s * 2 ** beyond, float(self.window_s))
        return max(0.0, (failures[-1] - now).total_seconds() + wait)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the right-most address of
    X-Forwarded-For that is not itself a trusted proxy (anything left of it could be forged by the client)."""
    nets = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in nets)

    client = peer or "?"
    if not nets or not is_trusted(client) or not forwarded_for:
        return client
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return client  # a malformed header: fall back to the proxy's own address, never trust junk
        client = hop
    return client


class LoginBackoff(ReviewError):
    """Too many failed logins from this address for this account: try again after `retry_after_s`."""

    def __init__(self, wait_s: float):
        self.retry_after_s = max(1, math.ceil(wait_s))
        super().__init__(f"too many failed logins: wait {self.retry_after_s} s and try again", 429)


def authenticate(store: Store, throttle: LoginThrottle, name: str, password: str, ip: str) -> User:
    """The user, or ReviewError 401 (wrong name or password, same message) / 429 (throttled)."""
    name = name.strip()[:120]
    with store.transaction() as conn:  # the audit events commit before the error is raised
        wait = throttle.wait_s(conn, name, ip)
        if wait > 0:
            log(conn, Event(kind="login_throttled", stage="auth", actor=name, actor_kind="human",
                            payload={"ip": ip, "wait_s": round(wait, 1)}))
        row = conn.execute(select(UserRow).where(UserRow.name == name)).mappings().first()
    if wait > 0:
        raise LoginBackoff(wait)
    ok = _verify(row["password_hash"] if row and row["active"] else None, password) and row is not None
    with store.transaction() as conn:
        if not ok:
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

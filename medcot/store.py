"""The store: the system of record (SQLite with WAL by default, PostgreSQL by URL)."""
from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, event, func, insert, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError

from medcot.db import AttemptRow, Base, CallRow, CandidateRow, EventRow, GenerationRow, ItemRow
from medcot.records import Attempt, CallRecord, Candidate, Event, Generation, Item
from medcot.review_tables import StoreSecretRow  # (importing it registers the review tables on Base)

# The LLM-call hot path (a cache lookup before and one insert after every request) uses Core statements built
# once: building ORM statements per call (`insert(...).values(**row)`) cost more than the SQL itself.
_CALLS = CallRow.__table__
_CALL_FIELDS: tuple[str, ...] = CallRecord.__slots__  # type: ignore[attr-defined]
_GET_CALL = select(_CALLS.c.id, *(_CALLS.c[k] for k in _CALL_FIELDS)).where(_CALLS.c.cache_key == bindparam("key"))
_INSERT_CALL = insert(_CALLS).returning(_CALLS.c.id)
_ATTEMPT_FIELDS = tuple(c.name for c in AttemptRow.__table__.columns if c.name not in ("id", "created_at"))


def normalize_text(text: str) -> str:
    """NFKC, lower case, no whitespace: the key for exact-duplicate checks."""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


class StoreError(ValueError):
    """The store cannot be opened: unreachable database, no driver installed, or (read-only) no such store."""


class StoreMissingError(StoreError):
    """A read-only command was pointed at a store that does not exist (nothing was created)."""


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def store_url(url_or_path: str, create: bool = True) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite); create=False never makes a folder."""
    if "://" in url_or_path:
        if url_or_path.startswith("postgresql://"):
            return "postgresql+psycopg://" + url_or_path[len("postgresql://"):]
        return url_or_path
    path = Path(url_or_path).expanduser().resolve()
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite") or ":memory:" in url or url.rstrip("/").endswith(":"):
        return None
    return Path(url.split(":///", 1)[1]) if ":///" in url else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


RATER_KEY = "rater_pseudonym_key"  # HMAC key of the published reviewer pseudonyms


class Store:
    """The store. create=False (read-only commands: status, build, review stats/export, eval contamination)
    opens an existing medcot store only: a missing SQLite file, or a database without medcot's tables, raises
    StoreMissingError naming it, and nothing is created."""

    def __init__(self, url: str, create: bool = True):
        self.url = store_url(url, create)
        db_file = _sqlite_file(self.url)
        if not create and db_file is not None and not db_file.is_file():
            raise StoreMissingError(f"store {db_file} does not exist (this command never creates a store: check "
                                    "the path, or create it with `medcot run` / `medcot curate`)")
        try:
            self.engine: Engine = create_engine(self.url, future=True)
        except (ModuleNotFoundError, NoSuchModuleError, ArgumentError) as exc:
            raise StoreError(f"store {_safe(self.url)}: cannot use this database URL ({exc}); install its driver "
                             "(PostgreSQL: pip install 'psycopg[binary]') or fix the URL") from exc
        try:
            self._open(create, db_file)
        except OperationalError as exc:
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreError(f"cannot reach the store {_safe(self.url)}: {reason}") from exc

    def _open(self, create: bool, db_file: Path | None) -> None:
        if not create and not inspect(self.engine).has_table(ItemRow.__tablename__):  # before any pragma writes
            self.engine.dispose()
            raise StoreMissingError(f"{db_file or _safe(self.url)} is not a medcot store (no "
                                    f"`{ItemRow.__tablename__}` table); nothing was changed")
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self.engine.dispose()  # so that every pooled connection gets the pragmas
        if create:
            Base.metadata.create_all(self.engine)
            self.secret(RATER_KEY)

    def secret(self, name: str) -> str:
        """A random per-store secret, created on first use and stable afterwards (never printed or logged)."""
        with self.transaction() as conn:
            value = conn.scalar(select(StoreSecretRow.value).where(StoreSecretRow.name == name))
            if value is None:
                value = secrets.token_hex(32)
                conn.execute(insert(StoreSecretRow).values(name=name, value=value))
        return value

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- items -------------------------------------------------------------
    def add_items(self, items: Iterable[Item], event_kind: str = "imported", actor: str = "system") -> int:
        """Insert items and their creation events in ONE transaction (all or nothing)."""
        rows = [_item_row(it) for it in items]
        if not rows:
            return 0
        with self.transaction() as conn:
            conn.execute(insert(ItemRow), rows)
            conn.execute(insert(EventRow), [
                _event_row(Event(kind=event_kind, item_id=r["id"], stage="seeds", actor=actor)) for r in rows])
        return len(rows)

    def existing_questions(self) -> dict[str, str]:
        """normalised question -> item id, for duplicate checks."""
        with self.engine.connect() as conn:
            return {q: i for i, q in conn.execute(select(ItemRow.id, ItemRow.norm_question))}

    def existing_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(ItemRow.id)))

    def items(self, stage: str | None = None, ids: Iterable[str] | None = None) -> list[Item]:
        query = select(ItemRow).order_by(ItemRow.created_at, ItemRow.id)
        if stage is not None:
            query = query.where(ItemRow.stage == stage)
        if ids is not None:
            query = query.where(ItemRow.id.in_(list(ids)))
        with self.engine.connect() as conn:
            return [_item_from_row(r) for r in conn.execute(query).mappings()]

    def count_items(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(ItemRow)) or 0

    def stage_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ItemRow.stage, func.count()).group_by(ItemRow.stage))
            return {stage: n for stage, n in rows}

    # ---- LLM calls (the response cache) --------------------------------------
    def get_call(self, cache_key: str) -> tuple[int, CallRecord] | None:
        with self.engine.connect() as conn:
            row = conn.execute(_GET_CALL, {"key": cache_key}).first()
        if row is None:
            return None
        return row[0], CallRecord(*row[1:])

    def record_call(self, call: CallRecord) -> int:
        """Store a call; a concurrent duplicate (same cache key) returns the existing row's id."""
        try:
            with self.transaction() as conn:
                return conn.execute(_INSERT_CALL, {k: getattr(call, k) for k in _CALL_FIELDS}).scalar_one()
        except IntegrityError:
            found = self.get_call(call.cache_key)
            if found is None:
                raise
            return found[0]

    def call_totals(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            n, p, c = conn.execute(select(func.count(), func.coalesce(func.sum(CallRow.prompt_tokens), 0),
                                          func.coalesce(func.sum(CallRow.completion_tokens), 0))).one()
        return {"calls": n, "prompt_tokens": p, "completion_tokens": c}

    # ---- generations ----------------------------------------------------------
    def generated_item_ids(self, purpose: str = "initial") -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(GenerationRow.item_id).where(GenerationRow.purpose == purpose)))

    def save_generation(self, gen: Generation, new_stage: str = "generated") -> bool:
        """Store a generation, move the item's stage and log the event in one transaction.
        Returns False when that generation already exists (a rerun), changing nothing."""
        try:
            with self.transaction() as conn:
                conn.execute(insert(GenerationRow).values(**asdict(gen)))
                conn.execute(ItemRow.__table__.update().where(ItemRow.id == gen.item_id).values(stage=new_stage))
                conn.execute(insert(EventRow).values(**_event_row(Event(
                    kind=new_stage, item_id=gen.item_id, stage="generate", actor="llm", actor_kind="llm",
                    payload={"call_id": gen.call_id, "answer": gen.answer, "agrees_with_key": gen.agrees_with_key,
                             "prompt_version": gen.prompt_version}))))
            return True
        except IntegrityError:
            return False

    def generations(self, purpose: str = "initial") -> list[Generation]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(GenerationRow).where(GenerationRow.purpose == purpose)
                                .order_by(GenerationRow.item_id)).mappings().all()
        return [Generation(**{k: r[k] for k in Generation.__slots__}) for r in rows]  # type: ignore[attr-defined]

    # ---- events -------------------------------------------------------------
    def log_event(self, ev: Event, conn: Connection | None = None) -> None:
        if conn is not None:
            conn.execute(insert(EventRow).values(**_event_row(ev)))
            return
        with self.transaction() as c:
            c.execute(insert(EventRow).values(**_event_row(ev)))

    def events(self, item_id: str | None = None, kind: str | None = None) -> list[Event]:
        query = select(EventRow).order_by(EventRow.id)
        if item_id is not None:
            query = query.where(EventRow.item_id == item_id)
        if kind is not None:
            query = query.where(EventRow.kind == kind)
        with self.engine.connect() as conn:
            return [Event(kind=r["kind"], item_id=r["item_id"], stage=r["stage"], actor=r["actor"],
                          actor_kind=r["actor_kind"], payload=r["payload"]) for r in conn.execute(query).mappings()]


    # ---- expansion, specialty, five-strike (issue 3) ------------------------------------------------------
    def save_expansion(self, items: list[Item], item_events: list[Event], rejects: list[Candidate], done: Event) -> bool:
        """A family's expansion in ONE transaction: new items, their lineage events, rejected candidates and
        the family's `expansion_done` event. False (nothing written) if the items already exist."""
        try:
            with self.transaction() as conn:
                if items:
                    conn.execute(insert(ItemRow), [_item_row(it) for it in items])
                if rejects:
                    conn.execute(insert(CandidateRow), [asdict(c) for c in rejects])
                conn.execute(insert(EventRow), [_event_row(ev) for ev in [*item_events, done]])
            return True
        except IntegrityError:
            return False

    def expanded_families(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(EventRow.item_id).where(EventRow.kind == "expansion_done")))

    def rejected_candidates(self, family_id: str | None = None) -> list[Candidate]:
        query = select(CandidateRow).order_by(CandidateRow.id)
        if family_id is not None:
            query = query.where(CandidateRow.family_id == family_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Candidate(**{k: r[k] for k in Candidate.__slots__}) for r in rows]  # type: ignore[attr-defined]

    def set_specialty(self, item_id: str, specialty: str, ev: Event) -> None:
        self.set_specialties([(item_id, specialty, ev)])

    def set_specialties(self, assigned: list[tuple[str, str, Event]]) -> None:
        """Several (item, specialty, event) assignments in ONE transaction."""
        with self.transaction() as conn:
            for item_id, specialty, ev in assigned:
                conn.execute(ItemRow.__table__.update().where(ItemRow.id == item_id).values(specialty=specialty))
                self.log_event(ev, conn)

    def save_attempt(self, attempt: Attempt, new_stage: str | None = None, ev: Event | None = None) -> bool:
        """A five-strike attempt, with the item's stage change and its event when it resolves the item, in
        ONE transaction. False (nothing written) when that attempt is already stored."""
        row = {k: getattr(attempt, k) for k in _ATTEMPT_FIELDS}
        try:
            with self.transaction() as conn:
                conn.execute(insert(AttemptRow), [row])
                if new_stage is not None:
                    conn.execute(ItemRow.__table__.update().where(ItemRow.id == attempt.item_id)
                                 .values(stage=new_stage))
                if ev is not None:
                    self.log_event(ev, conn)
            return True
        except IntegrityError:
            return False

    def attempts(self, round: int = 0) -> list[Attempt]:
        """Every attempt of a round, with the token counts of its call, ordered by item and attempt."""
        query = (select(AttemptRow, func.coalesce(CallRow.prompt_tokens, 0).label("prompt_tokens"),
                        func.coalesce(CallRow.completion_tokens, 0).label("completion_tokens"))
                 .outerjoin(CallRow, CallRow.id == AttemptRow.call_id).where(AttemptRow.round == round)
                 .order_by(AttemptRow.item_id, AttemptRow.attempt_no))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Attempt(**{k: r[k] for k in Attempt.__slots__}) for r in rows]  # type: ignore[attr-defined]

def _item_row(item: Item) -> dict[str, Any]:
    row = asdict(item)
    row["norm_question"] = normalize_text(item.question)
    return row


def _item_from_row(row: Any) -> Item:
    return Item(**{k: row[k] for k in Item.__slots__})  # type: ignore[attr-defined]


def _event_row(ev: Event) -> dict[str, Any]:
    return asdict(ev)

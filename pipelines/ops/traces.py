"""The gateway's database: users' keys (hashes only), one trace per request, and feedback on answers.

A SQLite file under ``CBNANO_HOME`` by default; in the lab ``CBNANO_GATEWAY_DB`` is an SQLAlchemy URL of the
coordinator's PostgreSQL. Keys are 32 random bytes (``cbn_…``): only their sha256 is stored, a request's key
is looked up by its hash and compared with ``hmac.compare_digest``, and no key is ever written to a trace or
a log. Traces hold no secret: time, user, model, latency, tokens, the sources' ids, status.

    store = GatewayStore.from_settings(settings)
    key = store.add_key("alice")            # shown once
    store.user_for(key)                      # "alice"
    store.record(Trace(user="alice", model="catalysis+rag", ...))
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

import sqlalchemy as sa

from pipelines.contracts import RatedAnswer
from pipelines.settings import Settings

KEY_PREFIX = "cbn_"
LAST_USED_EVERY_S = 60.0  # how often a key's last_used_at is written (not on every request)
TRACE_FLUSH_S = 0.5  # a queued trace is in the database within about this long
TRACE_BATCH = 200
log = logging.getLogger(__name__)
META = sa.MetaData()
KEYS = sa.Table(
    "gateway_keys",
    META,
    sa.Column("user", sa.String(128), primary_key=True),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("last_used_at", sa.String(32)),
)
TRACES = sa.Table(
    "gateway_traces",
    META,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("at", sa.String(32), nullable=False, index=True),
    sa.Column("user", sa.String(128), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("tokens_in", sa.Integer),
    sa.Column("tokens_out", sa.Integer),
    sa.Column("sources", sa.Text, nullable=False),  # JSON list of doc ids
    sa.Column("error", sa.Text),
    sa.Column("answer", sa.Text),  # +rag answers only: what the feedback rates and a dataset may reuse
    sa.Column("question", sa.Text),
)
SPANS = sa.Table(  # the steps inside one request: each platform tool a +tools answer called
    "gateway_spans",
    META,
    sa.Column("trace_id", sa.String(64), primary_key=True),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),  # JSON, as the model sent it
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
)
LIMITS = sa.Table(  # a user's own limits and priority (the gateway's defaults where a column is null)
    "gateway_limits",
    META,
    sa.Column("user", sa.String(128), primary_key=True),
    sa.Column("rpm", sa.Integer),
    sa.Column("tokens_per_day", sa.Integer),
    sa.Column("priority", sa.String(16)),
)
FEEDBACK = sa.Table(
    "gateway_feedback",
    META,
    sa.Column("trace_id", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(128), nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("at", sa.String(32), nullable=False),
)


class GatewayStoreError(RuntimeError):
    """The gateway's database refused an operation (unknown user, duplicate key, unreachable database)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def key_hash(key: str) -> str:
    """The stored form of a key (its sha256: keys are random, so no slow hash is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyInfo(TypedDict):
    """A user with a key, as ``gateway keys list`` shows it (never the key or its hash)."""

    user: str
    created_at: str
    last_used_at: str | None


class TraceRow(TypedDict):
    """A recorded request with its feedback, as ``gateway traces`` prints it."""

    id: str
    at: str
    user: str
    endpoint: str
    model: str
    status: int
    latency_ms: float
    tokens_in: int | None
    tokens_out: int | None
    sources: list[str]  # doc ids
    error: str | None
    answer: str | None
    question: str | None
    rating: int | None
    comment: str | None


@dataclass
class Trace:
    """One request as the gateway recorded it."""

    user: str
    endpoint: str
    model: str
    status: int
    latency_ms: float
    tokens_in: int | None = None
    tokens_out: int | None = None
    sources: list[str] = field(default_factory=list)
    error: str | None = None
    answer: str | None = None
    question: str | None = None
    id: str = field(default_factory=lambda: f"cbn-{secrets.token_hex(12)}")
    at: str = field(default_factory=_now)
    spans: list[Span] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        """The table row (its spans go to their own table)."""
        out = asdict(self)
        out.pop("spans")
        out["sources"] = json.dumps(self.sources)
        return out


class Span(TypedDict):
    """One step inside a request (a tool call of a ``+tools`` answer)."""

    name: str
    arguments: str
    ok: bool
    latency_ms: float
    error: str | None


def default_url(settings: Settings) -> str:
    """``CBNANO_GATEWAY_DB``, else a SQLite file under ``CBNANO_HOME``."""
    return settings.gateway_db or f"sqlite:///{Path(settings.home) / 'gateway.db'}"


class GatewayStore:
    """Keys, traces and feedback in one SQLAlchemy database (tables created on first use)."""

    def __init__(self, url: str) -> None:
        self.sqlite_file: Path | None = None
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            path = url.removeprefix("sqlite:///")
            # SQLite's URI form (sqlite:///file:/path?mode=ro&uri=true) names the same file
            self.sqlite_file = Path(path.removeprefix("file:").partition("?")[0])
            self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            # SQLite: a connection per use, so the file is opened by its path each time (a pooled connection
            # would keep writing to a file deleted under it, and never see a restored one)
            pool = {"poolclass": sa.pool.NullPool} if self.sqlite_file else {"pool_pre_ping": True}
            self.engine = sa.create_engine(url, **pool)
        except (sa.exc.ArgumentError, ImportError) as exc:  # not a URL, or a dialect that is not installed
            raise GatewayStoreError(
                "CBNANO_GATEWAY_DB is not a database URL this gateway can use (e.g. sqlite:////path/gateway.db "
                f"or postgresql+psycopg2://user:password@host/db): {type(exc).__name__}"
            ) from None
        self._ready = False
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}  # user -> when this process last wrote their last_used_at
        self._reader: tuple[sqlite3.Connection, int] | None = None  # (connection, inode) for the key checks
        # traces are written by one background thread in batches: a request never waits on a write lock
        self._pending: queue.Queue[Trace | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._flushed = threading.Condition()
        self._now = threading.Event()  # set: the writer writes what is queued without waiting
        self._queued = 0
        self._written = 0

    def __repr__(self) -> str:  # the URL may carry a password
        return f"GatewayStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayStore:
        """The configured database."""
        return cls(default_url(settings))

    def _begin(self) -> Any:
        with self._lock:
            if self._ready and self.sqlite_file is not None and not self.sqlite_file.is_file():
                raise GatewayStoreError(
                    f"the gateway's database file {self.sqlite_file} is gone (deleted while the gateway ran): "
                    "restore it, or restart the gateway to begin a new one (keys must then be added again)"
                )
            if not self._ready:
                try:
                    META.create_all(self.engine)
                except sa.exc.SQLAlchemyError as exc:
                    where = self.engine.url.render_as_string(hide_password=True)
                    raise GatewayStoreError(
                        f"gateway database {where}: {exc.__class__.__name__}: {exc}"
                    ) from None
                self._ready = True
        return self.engine.begin()

    # ---- keys ---------------------------------------------------------------------------------------------
    def add_key(self, user: str) -> str:
        """Create ``user``'s key and return it (shown once; only its hash is kept). One key per user."""
        if not user or len(user) > 128 or not user.isprintable() or user.strip() != user:
            raise GatewayStoreError(f"a user name is 1-128 printable characters, not {user!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._begin() as conn:
            if conn.execute(sa.select(KEYS.c.user).where(KEYS.c.user == user)).first():
                raise GatewayStoreError(f"{user} already has a key: revoke it first")
            conn.execute(KEYS.insert().values(user=user, key_sha256=key_hash(key), created_at=_now()))
        return key

    def revoke(self, user: str) -> None:
        """Delete ``user``'s key; raises :class:`GatewayStoreError` if there is none."""
        with self._begin() as conn:
            if conn.execute(KEYS.delete().where(KEYS.c.user == user)).rowcount == 0:
                raise GatewayStoreError(f"{user} has no key")

    def keys(self) -> list[KeyInfo]:
        """Users with a key: name, created, last used (never a key or a hash)."""
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(KEYS.c.user, KEYS.c.created_at, KEYS.c.last_used_at).order_by(KEYS.c.user)
            )
            return [KeyInfo(user=r.user, created_at=r.created_at, last_used_at=r.last_used_at) for r in rows]

    def has_keys(self) -> bool:
        """True when at least one user has a key."""
        with self._begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(KEYS)).scalar_one() > 0

    def user_for(self, key: str) -> str | None:
        """The user whose key this is, or None; marks the key used."""
        digest = key_hash(key)
        with self._begin() as conn:
            row = conn.execute(
                sa.select(KEYS.c.user, KEYS.c.key_sha256).where(KEYS.c.key_sha256 == digest)
            ).first()
            if row is None or not hmac.compare_digest(row.key_sha256, digest):
                return None
        now = time.monotonic()
        if self._use_due(row.user, now):
            self._used[row.user] = now  # at most one write per user a minute, not one per request
            try:
                with self._begin() as conn:
                    conn.execute(KEYS.update().where(KEYS.c.user == row.user).values(last_used_at=_now()))
            except sa.exc.SQLAlchemyError as exc:  # a read-only database still authenticates
                log.warning("gateway: last use of %s not recorded: %s", row.user, type(exc).__name__)
        return str(row.user)

    def user_for_at_once(self, key: str) -> tuple[bool, str | None]:
        """``(True, user or None)`` when the key can be checked without waiting: a SQLite database read through
        a read-only connection of its own that never waits on a lock (the event loop may call this); else
        ``(False, None)``, and the caller asks :meth:`user_for` from a worker thread. That is the case for
        another database, a file deleted, replaced or not yet made, a write under way, and a user whose last
        use is due to be written."""
        if self.sqlite_file is None or not self._ready:
            return False, None
        digest = key_hash(key)
        try:
            conn = self._key_reader()
            row = conn.execute(
                "SELECT user, key_sha256 FROM gateway_keys WHERE key_sha256 = ?", (digest,)
            ).fetchone()
        except (sqlite3.Error, OSError):  # locked by a write (it waits for nothing), or the file is gone
            return False, None
        if row is None or not hmac.compare_digest(row[1], digest):
            return True, None
        if self._use_due(row[0], time.monotonic()):
            return False, None
        return True, str(row[0])

    def _use_due(self, user: str, now: float) -> bool:
        """Whether ``user``'s last use is due to be written (this process writes it once a minute)."""
        return now - self._used.get(user, -LAST_USED_EVERY_S) >= LAST_USED_EVERY_S

    def _key_reader(self) -> sqlite3.Connection:
        """The read-only connection for :meth:`user_for_at_once`, opened again when the file at the path is
        another one (restored) than the one it has open."""
        assert self.sqlite_file is not None
        inode = os.stat(self.sqlite_file).st_ino  # FileNotFoundError (an OSError) when it is gone
        if self._reader is None or self._reader[1] != inode:
            if self._reader is not None:
                self._reader[0].close()
            conn = sqlite3.connect(
                f"{self.sqlite_file.resolve().as_uri()}?mode=ro", uri=True, timeout=0, check_same_thread=False
            )
            self._reader = (conn, inode)
        return self._reader[0]

    def ping(self) -> str:
        """Empty when the database answers (its tables there), else what is wrong (for ``/health``)."""
        try:
            with self._begin() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(KEYS))
        except (GatewayStoreError, sa.exc.SQLAlchemyError) as exc:
            return str(exc)[:300]
        return ""

    def set_limits(
        self,
        user: str,
        rpm: int | None = None,
        tokens_per_day: int | None = None,
        priority: str | None = None,
    ) -> None:
        """Set ``user``'s own limits (None: leave as is); ``user`` must have a key."""
        with self._begin() as conn:
            if conn.execute(sa.select(KEYS.c.user).where(KEYS.c.user == user)).first() is None:
                raise GatewayStoreError(f"{user} has no key")
            old = conn.execute(sa.select(LIMITS).where(LIMITS.c.user == user)).first()
            values = {k: v for k, v in (("rpm", rpm), ("tokens_per_day", tokens_per_day),
                                        ("priority", priority)) if v is not None}  # fmt: skip
            if old is None:
                conn.execute(LIMITS.insert().values(user=user, **values))
            elif values:
                conn.execute(LIMITS.update().where(LIMITS.c.user == user).values(**values))

    def limits(self) -> dict[str, dict[str, Any]]:
        """Every user's own limits: user -> {rpm, tokens_per_day, priority} (None where the default holds)."""
        with self._begin() as conn:
            return {r.user: {"rpm": r.rpm, "tokens_per_day": r.tokens_per_day, "priority": r.priority}
                    for r in conn.execute(sa.select(LIMITS))}  # fmt: skip

    def tokens_since(self, user: str, since: str) -> int:
        """Tokens in and out of ``user``'s requests recorded at or after ``since`` (ISO time)."""
        self.flush()
        spent = sa.func.coalesce(TRACES.c.tokens_in, 0) + sa.func.coalesce(TRACES.c.tokens_out, 0)
        query = sa.select(sa.func.coalesce(sa.func.sum(spent), 0)).where(
            TRACES.c.user == user, TRACES.c.at >= since
        )
        with self._begin() as conn:
            return int(conn.execute(query).scalar_one())

    # ---- traces and feedback --------------------------------------------------------------------------------
    def record(self, trace: Trace) -> None:
        """Queue one request's trace for the background writer (it is in the database within
        ``TRACE_FLUSH_S``; this process's own reads flush first)."""
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, name="gateway-traces", daemon=True)
                self._writer.start()
            self._queued += 1
        self._pending.put(trace)

    def _write_loop(self) -> None:
        while True:
            first = self._pending.get()
            batch = [first]
            if first is not None and self._pending.qsize() < TRACE_BATCH:
                # the batch gathers while the writer sleeps, so a request's put wakes no thread (waking this
                # one for every trace cost the event loop a thread switch per request under load); a full
                # batch is written at once, and flush() and close() wake it early
                self._now.wait(TRACE_FLUSH_S)
                self._now.clear()
            while len(batch) < TRACE_BATCH and batch[-1] is not None:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            traces = [t for t in batch if t is not None]
            try:
                if traces:
                    spans = [
                        {**s, "trace_id": t.id, "n": n} for t in traces for n, s in enumerate(t.spans, 1)
                    ]
                    with self._begin() as conn:
                        if self.sqlite_file is not None:
                            # a batch of traces is not worth a wait for the disk: without it, the commit held
                            # SQLite's lock for ~16 ms, and key checks arriving meanwhile had to wait for it.
                            # A crashed process loses nothing (the OS has the pages); a crashed OS may lose
                            # the last batch. Keys and feedback are written with SQLite's default.
                            conn.exec_driver_sql("PRAGMA synchronous=OFF")
                        conn.execute(TRACES.insert(), [t.row() for t in traces])
                        if spans:
                            conn.execute(SPANS.insert(), spans)
            except Exception as exc:  # noqa: BLE001 - a lost batch is logged; the writer keeps going
                log.error("gateway: %d trace(s) not recorded: %s", len(traces), exc)
            with self._flushed:
                self._written += len(traces)
                self._flushed.notify_all()
            if len(traces) < len(batch):  # None: close() asked the writer to stop
                return

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every trace this process queued is written."""
        with self._lock:
            target = self._queued
        self._now.set()
        with self._flushed:
            self._flushed.wait_for(lambda: self._written >= target, timeout=timeout_s)

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._writer is not None and self._writer.is_alive():
            self.flush()
            self._pending.put(None)
            self._writer.join(10)
        if self._reader is not None:
            self._reader[0].close()
            self._reader = None
        self.engine.dispose()

    def traces(self, since: str = "", limit: int = 1000) -> list[TraceRow]:
        """Traces at or after ``since`` (ISO date or time), oldest first, with their feedback if any."""
        query = (
            sa.select(TRACES, FEEDBACK.c.rating, FEEDBACK.c.comment)
            .select_from(TRACES.outerjoin(FEEDBACK, FEEDBACK.c.trace_id == TRACES.c.id))
            .where(TRACES.c.at >= since)
            .order_by(TRACES.c.at, TRACES.c.id)
            .limit(limit)
        )
        self.flush()
        with self._begin() as conn:
            out: list[TraceRow] = []
            for r in conn.execute(query):
                row = dict(r._mapping)
                row["sources"] = json.loads(row["sources"] or "[]")
                out.append(cast(TraceRow, row))  # the TRACES columns and the two of FEEDBACK
            return out

    def spans(self, trace_id: str) -> list[Span]:
        """The steps recorded inside one request, in order."""
        self.flush()
        query = sa.select(SPANS).where(SPANS.c.trace_id == trace_id).order_by(SPANS.c.n)
        with self._begin() as conn:
            return [Span(name=r.name, arguments=r.arguments, ok=bool(r.ok), latency_ms=r.latency_ms,
                         error=r.error) for r in conn.execute(query)]  # fmt: skip

    def feedback(self, trace_id: str, user: str, rating: int, comment: str = "") -> bool:
        """Rate a recorded answer (1 or -1; a second rating replaces the first); False for an unknown id or
        another user's answer (ratings feed datasets: nobody rates, or overwrites the rating of, answers they
        were not given)."""
        self.flush()
        with self._begin() as conn:
            owner = conn.execute(sa.select(TRACES.c.user).where(TRACES.c.id == trace_id)).first()
            if owner is None or owner.user != user:
                return False
            conn.execute(FEEDBACK.delete().where(FEEDBACK.c.trace_id == trace_id))
            conn.execute(
                FEEDBACK.insert().values(
                    trace_id=trace_id, user=user, rating=rating, comment=comment, at=_now()
                )
            )
        return True

    def rated(self, model_prefix: str, rating: int) -> list[RatedAnswer]:
        """``+rag`` answers of a model rated ``rating`` (question, answer, sources, comment)."""
        query = (
            sa.select(TRACES.c.id, TRACES.c.model, TRACES.c.question, TRACES.c.answer, TRACES.c.sources,
                      FEEDBACK.c.comment, FEEDBACK.c.at)
            .select_from(TRACES.join(FEEDBACK, FEEDBACK.c.trace_id == TRACES.c.id))
            .where(TRACES.c.model == f"{model_prefix}+rag", FEEDBACK.c.rating == rating)
            .order_by(FEEDBACK.c.at)
        )  # fmt: skip
        with self._begin() as conn:
            return [
                RatedAnswer(
                    id=r.id, model=r.model, question=r.question, answer=r.answer,
                    sources=json.loads(r.sources or "[]"), comment=r.comment, at=r.at,
                )
                for r in conn.execute(query)
            ]  # fmt: skip

"""The PostgreSQL store: many server processes on one database.

Sequencing happens inside PostgreSQL: an append locks its tenant's ``heads``
row ``FOR UPDATE`` in its transaction, so any number of processes take turns
per tenant and produce one gap-free order, while different tenants append in
parallel. A batch goes in with ``COPY`` in one transaction. Events are
partitioned by month (``date``); partitions are created ahead of time, outside
the append transactions. Searches may go to a read replica (``read_url``).

URL: ``postgresql://user@host:5432/db?read_url=<url-encoded URL>&pool_max=10``;
every other query parameter goes to libpq as is (``options``, ``sslmode`` ...).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from auditledger.errors import ConfigError, StoreError
from auditledger.query import Query
from auditledger.store import (
    VERIFY_CHUNK,
    Cursor,
    Facets,
    Head,
    LeafRow,
    NativeLines,
    Order,
    Row,
    VerifyChunk,
    merge_positions,
)
from auditledger.store.postgres_sql import (
    DETAIL_KEYS,
    Dense,
    dense_count,
    details_count,
    filtered,
    has_text,
    portable,
)
from auditledger.store.sqlite import migrations

log = logging.getLogger(__name__)

_COLUMNS = (
    "e.id, e.tenant, e.seq, e.date, e.resource_type, e.action, e.actor_type, e.actor_id, "
    "e.actor_name, e.outcome, e.idempotency_key, e.body"
)
_EVENT_COLUMNS = (
    "id, tenant, seq, date, resource_type, action, actor_type, actor_id, actor_name, outcome, idempotency_key, body"
)
_COPY_LEAVES = "COPY leaves (tenant, seq, hash) FROM STDIN (FORMAT BINARY)"
_COPY_EVENTS = f"COPY events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_DETAILS = "COPY details (tenant, key, value, seq) FROM STDIN (FORMAT BINARY)"
_LEAF_TYPES = ("text", "int8", "bytea")
_EVENT_TYPES = ("text", "text", "int8", "int8", "text", "text", "text", "text", "text", "text", "text", "bytea")
_DETAIL_TYPES = ("text", "text", "text", "int8")
# The shipper's native record (formats.native_line) built by PostgreSQL. Row by row: string_agg over
# the window measured 2.8x slower here (15.x sorts inside the aggregate, and grows the bytea as it goes).
_NATIVE_LINES = (
    "SELECT e.seq, substring(e.body FROM 1 FOR octet_length(e.body) - 1) "
    "|| convert_to(',\"leaf_hash\":\"' || encode(l.hash, 'hex') || '\"}' || chr(10), 'UTF8') "
    "FROM events e JOIN leaves l ON l.tenant = e.tenant AND l.seq = e.seq "
    "WHERE e.tenant = %s AND e.seq >= %s AND e.seq < %s ORDER BY e.seq"
)
_VERIFY_FIELDS = (
    "e.id, e.date, e.resource_type, e.action, e.actor_type, e.actor_id, e.actor_name, e.outcome, e.body"
)
_VERIFY_POSITIONS = (
    f"SELECT l.seq, l.hash, l.purged, {_VERIFY_FIELDS} FROM leaves l "
    "LEFT JOIN events e ON e.tenant = l.tenant AND e.seq = l.seq AND e.seq >= %(lo)s AND e.seq < %(hi)s "
    "WHERE l.tenant = %(tenant)s AND l.seq >= %(lo)s AND l.seq < %(hi)s ORDER BY l.seq"
)
_VERIFY_LEAFLESS = (
    f"SELECT e.seq, NULL, 0, {_VERIFY_FIELDS} FROM events e "
    "WHERE e.tenant = %(tenant)s AND e.seq >= %(lo)s AND e.seq < %(hi)s "
    "AND NOT EXISTS (SELECT 1 FROM leaves l WHERE l.tenant = e.tenant AND l.seq = e.seq)"
)
_VERIFY_DETAILS = (
    "SELECT seq, count(*), json_object_agg(key, value)::text FROM details "
    "WHERE tenant = %(tenant)s AND seq >= %(lo)s AND seq < %(hi)s GROUP BY seq"
)
MONTHS_AHEAD = 2  # the current month and this many after it always have a partition
_OWN_PARAMS = ("read_url", "pool_min", "pool_max")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without our own parameters, and those parameters."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in _OWN_PARAMS else rest.append((key, value)))
    scheme = "postgresql" if parts.scheme in ("postgresql", "postgres") else parts.scheme
    # quote, not quote_plus: libpq reads "+" as a plus sign, so a space in `options` must be %20.
    query = urlencode(rest, quote_via=quote)
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment)), ours


def _int_param(ours: dict[str, str], name: str, default: int) -> int:
    value = ours.get(name)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ConfigError(f"store URL parameter {name}={value!r}: expected a number from 1 to 1000")
    return int(value)


def month_start(micros: int) -> datetime:
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def _fail(action: str, url: str, exc: psycopg.Error) -> StoreError:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
    return StoreError(f"{action} failed on {url}: {text}")


class PostgresStore:
    """The shared store of several ``auditledger serve`` processes."""

    # A details term matching this many entries of a tenant is tested per row, not collected
    # (at 1M events: collecting 10,000 seqs or probing ~50 x 100 rows both take a few ms).
    dense_at = 10_000

    def __init__(self, url: str, *, read_url: str | None = None) -> None:
        self.url = url
        conninfo, ours = split_url(url)
        self._shown = _redact(conninfo)
        read = read_url or ours.get("read_url")
        pool_min = _int_param(ours, "pool_min", 1)
        pool_max = _int_param(ours, "pool_max", 10)
        if pool_min > pool_max:
            raise ConfigError(f"store URL: pool_min={pool_min} is larger than pool_max={pool_max}")
        # One direct connection first: a wrong host or database is a clear error, not a pool timeout.
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise _fail("opening", self._shown, exc) from None
        self._partition_lock = threading.Lock()
        self._partitions_until = 0  # micros: every month before it has a partition
        self._pool = self._make_pool(conninfo, pool_min, pool_max)
        self._read_pool = self._pool
        try:
            if read:
                read_info, _ = split_url(read)
                self._read_pool = self._make_pool(read_info, 1, pool_max)
            self.ensure_partitions()
        except BaseException:
            self.close()
            raise

    def _make_pool(self, conninfo: str, low: int, high: int) -> ConnectionPool:
        pool: ConnectionPool = ConnectionPool(
            conninfo,
            min_size=low,
            max_size=high,
            # No server-side prepared statements: after five runs PostgreSQL may switch a prepared
            # search to one generic plan, which is 10x slower for values unlike the first ones
            # (a common flowId after rare ones). Planning each search with its values is cheaper.
            kwargs={"autocommit": True, "prepare_threshold": None},
            check=ConnectionPool.check_connection,  # a restarted server leaves dead connections behind
            name=f"auditledger-{uuid.uuid4().hex[:8]}",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=30)
        except psycopg.Error as exc:
            pool.close()
            raise _fail("opening a connection pool", _redact(conninfo), exc) from None
        return pool

    def close(self) -> None:
        self._pool.close()
        if self._read_pool is not self._pool:
            self._read_pool.close()

    # ------------------------------------------------------------ schema

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Apply every NNNN_name.sql of the postgres folder not yet in schema_migrations, in order."""
        pending = migrations("postgres")
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() != (None,):
            # Up to date: nothing to lock or create, so a server role without DDL rights can open the store.
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            pending = [m for m in pending if m[0] not in applied]
        for version, name, script in pending:
            # One transaction per migration, under a lock so that servers starting together take turns.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('auditledger-migrate:' || current_schema()))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone()
                if done:
                    continue
                try:
                    conn.execute(script.encode("utf-8"))  # no parameters: several statements in one go
                except psycopg.Error as exc:
                    raise StoreError(f"migration {version:04d}_{name} failed on {self._shown}: {exc}") from None
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))

    def schema_version(self) -> int:
        return int(self._query("SELECT coalesce(max(version), 0) FROM schema_migrations", ())[0][0])

    def upgrade(self) -> int:
        """Apply pending migrations (done on open too) and make partitions ahead; the schema version."""
        with self._pool.connection() as conn:
            self._migrate(conn)
        self.ensure_partitions()
        return self.schema_version()

    def ensure_partitions(self, start: int | None = None, end: int | None = None) -> list[str]:
        """Monthly partitions covering ``[start, end)`` (micros); default: this month and the next ones.

        A month whose rows already sit in events_default keeps them there (PostgreSQL
        refuses to create that partition): still correct, only not pruned.
        """
        now = time.time_ns() // 1000
        lo = month_start(now if start is None else start)
        stop = _next_month(month_start(now)) if end is None else datetime.fromtimestamp(end / 1e6, UTC)
        if end is None:
            for _ in range(MONTHS_AHEAD):
                stop = _next_month(stop)
        made: list[str] = []
        with self._partition_lock, self._pool.connection() as conn:
            month = lo
            while month < stop:
                name = f"events_{month:%Y_%m}"
                following = _next_month(month)
                try:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(hashtext('auditledger-part:' || current_schema()))")
                        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,):
                            conn.execute(
                                sql.SQL("CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({})").format(
                                    sql.Identifier(name), sql.Literal(_micros(month)), sql.Literal(_micros(following))
                                )
                            )
                            made.append(name)
                except psycopg.errors.CheckViolation:
                    log.info("partition %s not created: events_default holds rows of that month", name)
                except psycopg.errors.InsufficientPrivilege:
                    # A server role that does not own `events` (the documented deployment) cannot
                    # create partitions: `auditledger db upgrade` does, run by the owner. Until then
                    # rows go to events_default; try again in a day.
                    log.warning("cannot create partition %s as this role; run `auditledger db upgrade`", name)
                    self._partitions_until = time.time_ns() // 1000 + 86_400_000_000 * 8
                    return made
                except psycopg.Error as exc:
                    raise _fail(f"creating partition {name}", self._shown, exc) from None
                month = following
            if end is None:
                self._partitions_until = max(self._partitions_until, _micros(stop))
        return made

    def space_used(self) -> int:
        """Bytes of this schema's tables with their indexes and TOAST (retention's hook)."""
        rows = self._query(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            (),
        )
        return int(rows[0][0])

    def reclaim_space(self, before: datetime | None = None) -> list[str]:
        """Drop past monthly partitions that purge has emptied (retention's hook); the dropped names.

        Only whole months that end by ``before`` (default: the start of this month) and hold no
        row go; leaves and heads are untouched, so the ledger verifies as before.
        """
        limit = _micros(month_start(time.time_ns() // 1000))
        if before is not None:
            limit = min(limit, int(before.timestamp() * 1_000_000))
        dropped: list[str] = []
        rows = self._query(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events') AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'",
            (),
        )
        with self._partition_lock, self._pool.connection() as conn:
            for name, bound in rows:
                upper = int(str(bound).rsplit("TO ('", 1)[1].split("'")[0])
                if upper > limit:
                    continue
                try:
                    with conn.transaction():
                        table = sql.Identifier(name)
                        if conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone() is None:
                            conn.execute(sql.SQL("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
                            if conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone() is None:
                                conn.execute(sql.SQL("DROP TABLE {}").format(table))
                                dropped.append(name)
                except psycopg.errors.InsufficientPrivilege:
                    log.warning("cannot drop partition %s as this role; the owner's `db upgrade` role can", name)
                    break
                except psycopg.Error as exc:
                    raise _fail(f"dropping partition {name}", self._shown, exc) from None
        return dropped

    def purge_details_sql(self, events_where: str) -> str:
        """The statement deleting the details rows of the events ``events_where`` selects (alias ``e``)."""
        # details_tenant_seq serves the lookup; retention binds the same parameters as for events.
        return f"DELETE FROM details WHERE (tenant, seq) IN (SELECT e.tenant, e.seq FROM events e WHERE {events_where})"

    def partitions(self) -> list[str]:
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events') ORDER BY c.relname",
            (),
        )
        return [r[0] for r in rows]

    # ------------------------------------------------------------ writing

    @contextmanager
    def write(self) -> Iterator[PostgresWriteTxn]:
        # A month ahead of need, outside the append: creating a partition locks the parent table.
        if time.time_ns() // 1000 + 86_400_000_000 * 7 >= self._partitions_until:
            self.ensure_partitions()
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield PostgresWriteTxn(conn, self._shown)
        except psycopg.Error as exc:
            raise _fail("writing", self._shown, exc) from None

    # ------------------------------------------------------------ reading

    def get(self, tenant: str | None, id: str) -> Row | None:
        where = "e.id = %s"
        params: list[Any] = [id]
        if tenant is not None:
            where += " AND e.tenant = %s"
            params.append(tenant)
        # A UUIDv7 carries its event's millisecond: look in that month's partition first.
        ms = _uuid7_millis(id)
        if ms is not None:
            rows = self._rows(
                f"SELECT {_COLUMNS} FROM events e WHERE {where} AND e.date >= %s AND e.date < %s",
                [*params, ms * 1000, ms * 1000 + 1000],
            )
            if rows:
                return rows[0]
        rows = self._rows(f"SELECT {_COLUMNS} FROM events e WHERE {where}", params)
        return rows[0] if rows else None

    def get_by_seq(self, tenant: str, seq: int) -> Row | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM events e WHERE e.tenant = %s AND e.seq = %s", [tenant, seq])
        return rows[0] if rows else None

    def search(
        self, tenant: str | None, query: Query, *, limit: int, after: Cursor | None = None, order: Order = "desc"
    ) -> list[Row]:
        prefix, where, params = filtered(tenant, query, self._keys_for(tenant, query), self._dense(tenant))
        direction = "DESC" if order == "desc" else "ASC"
        cmp = "<" if order == "desc" else ">"
        if tenant is not None:
            # Within a tenant date grows strictly with seq (verify checks it): ordering by
            # date is ordering by seq, and lets PostgreSQL read the partitions in order.
            if after is not None:
                where += f" AND e.seq {cmp} %s"
                params.append(after.seq)
                if after.date > 0:
                    # The page's own date bound, implied by the seq one for every cursor we issue,
                    # lets a deep page start where it should instead of skipping newer rows.
                    where += f" AND e.date {cmp} %s"
                    params.append(after.date)
            order_by = f"e.date {direction}"
        else:
            if after is not None:
                where += f" AND (e.date, e.tenant, e.seq) {cmp} (%s, %s, %s)"
                params += [after.date, after.tenant, after.seq]
            order_by = f"e.date {direction}, e.tenant {direction}, e.seq {direction}"
        params.append(int(limit))
        return self._rows(
            f"{prefix}SELECT {_COLUMNS} FROM events e WHERE {where} ORDER BY {order_by} LIMIT %s", params, read=True
        )

    def count(self, tenant: str | None, query: Query, *, cap: int) -> int:
        alone = details_count(tenant, query, int(cap)) if tenant is not None else None
        if alone is not None:
            return int(self._query(*alone, read=True)[0][0])
        # Frequent terms collected, not tested per row: reaching a cap of 10,000 that way probes
        # far more rows than collecting the matches once. A rare free word is still an index lookup.
        keys = self._keys_for(tenant, query)
        prefix, where, params = filtered(tenant, query, keys, self._dense(tenant), probe=False)
        params.append(int(cap) + 1)
        rows = self._query(
            f"{prefix}SELECT count(*) FROM (SELECT 1 FROM events e WHERE {where} LIMIT %s) s", params, read=True
        )
        return int(rows[0][0])

    def facets(self, tenant: str | None, query: Query, *, bucket_micros: int, counts: bool = True) -> Facets:
        prefix, where, params = filtered(tenant, query, self._keys_for(tenant, query))

        def count_by(column: str) -> dict[str, int]:
            if not counts:
                return {}
            text = f"{prefix}SELECT {column}, count(*) FROM events e WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1"
            return {str(k): int(n) for k, n in self._query(text, params, read=True)}

        step = max(1, int(bucket_micros))  # an int, so it can be written into the SQL
        timeline = self._query(
            f"{prefix}SELECT (e.date / {step}) * {step}, count(*) FROM events e WHERE {where} GROUP BY 1 ORDER BY 1",
            params,
            read=True,
        )
        return Facets(
            count_by("e.resource_type"),
            count_by("e.action"),
            count_by("e.actor_type"),
            [(int(b), int(n)) for b, n in timeline],
        )

    def _dense(self, tenant: str | None) -> Dense | None:
        """For one tenant: whether a details condition matches at least ``dense_at`` of its entries.

        Not for facets, which read every match: collecting them is cheapest there.
        """
        if tenant is None:
            return None

        def dense(cond: str, params: list[Any]) -> bool:
            found = self._query(dense_count(cond), [tenant, *params, self.dense_at], read=True)
            return int(found[0][0]) >= self.dense_at

        return dense

    def _keys_for(self, tenant: str | None, query: Query) -> list[str]:
        if not has_text(query):
            return []
        tenants = [tenant] if tenant is not None else [h.tenant for h in self.heads()]
        keys: set[str] = set()
        for name in tenants:
            keys.update(k for (k,) in self._query(DETAIL_KEYS, {"t": name}, read=True))
        return sorted(keys)

    def heads(self) -> list[Head]:
        rows = self._query("SELECT tenant, size, last_date FROM heads ORDER BY tenant", ())
        return [Head(t, s, d) for t, s, d in rows]

    def scan(self, tenant: str, start: int = 0, end: int | None = None) -> Iterator[LeafRow]:
        """Leaves joined with their events in chunks; rows without a leaf come out as leafless positions."""
        stop = end if end is not None else 1 << 62
        chunk = 5000
        pos = start
        while pos < stop:
            hi = min(pos + chunk, stop)
            leaves = self._query(
                "SELECT seq, hash, purged FROM leaves WHERE tenant = %s AND seq >= %s AND seq < %s ORDER BY seq",
                (tenant, pos, hi),
            )
            rows = {
                r.seq: r
                for r in self._rows(
                    f"SELECT {_COLUMNS} FROM events e WHERE e.tenant = %s AND e.seq >= %s AND e.seq < %s",
                    [tenant, pos, hi],
                    with_details=True,
                )
            }
            yield from merge_positions(leaves, rows)
            if not leaves and not rows:
                more = self._query(
                    "SELECT least((SELECT min(seq) FROM leaves WHERE tenant = %s AND seq >= %s), "
                    "(SELECT min(seq) FROM events WHERE tenant = %s AND seq >= %s))",
                    (tenant, hi, tenant, hi),
                )[0][0]
                if more is None:
                    return
                hi = int(more)
            pos = hi

    def verify_chunks(self, tenant: str, start: int, end: int) -> Generator[VerifyChunk, None, None]:
        """Positions for verify, read in one REPEATABLE READ transaction (one snapshot)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # Without fresh statistics the planner probes every monthly partition once per leaf
                # (a nested loop); both sides are one seq range, which a merge join reads in order.
                conn.execute("SET LOCAL enable_nestloop = off")
                for lo in range(start, end, VERIFY_CHUNK):
                    args = {"tenant": tenant, "lo": lo, "hi": min(lo + VERIFY_CHUNK, end)}
                    positions = conn.execute(_VERIFY_POSITIONS, args).fetchall()
                    joined = sum(1 for p in positions if p[11] is not None)
                    row = conn.execute(
                        "SELECT count(*) FROM events WHERE tenant = %(tenant)s AND seq >= %(lo)s AND seq < %(hi)s",
                        args,
                    ).fetchone()
                    if row is not None and row[0] != joined:  # events with no leaf (forged): rare
                        positions += conn.execute(_VERIFY_LEAFLESS, args).fetchall()
                        positions.sort(key=lambda p: int(p[0]))
                    details = {seq: (n, text) for seq, n, text in conn.execute(_VERIFY_DETAILS, args)}
                    yield VerifyChunk(positions, details)
        except psycopg.Error as exc:
            raise _fail("reading", self._shown, exc) from None

    def checked_chunks(self, tenant: str, start: int, end: int) -> None:
        """None: verify checks every position in Python (``verify_chunks``)."""
        return None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(portable(sql), list(params))

    def native_lines(self, tenant: str, start: int, end: int) -> NativeLines:
        """From the primary: a replica may not have the window yet."""
        rows = self._query(_NATIVE_LINES, (tenant, start, end))
        return NativeLines([seq for seq, _ in rows], b"".join([line for _, line in rows]))

    def _query(self, text: str, params: Any, *, read: bool = False) -> list[Any]:
        pool = self._read_pool if read else self._pool
        try:
            with pool.connection() as conn:
                return conn.execute(text.encode("utf-8"), params).fetchall()
        except psycopg.Error as exc:
            raise _fail("reading", self._shown, exc) from None

    def _rows(self, text: str, params: Sequence[Any], *, with_details: bool = False, read: bool = False) -> list[Row]:
        raw = self._query(text, params, read=read)
        details: dict[tuple[str, int], dict[str, str]] = {}
        if with_details and raw:
            tenant = raw[0][1]
            seqs = [r[2] for r in raw]
            for key, value, seq in self._query(
                "SELECT key, value, seq FROM details WHERE tenant = %s AND seq >= %s AND seq <= %s",
                (tenant, min(seqs), max(seqs)),
            ):
                details.setdefault((tenant, seq), {})[key] = value
        return [
            Row(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bytes(r[11]), b"",
                details.get((r[1], r[2]), {}),
            )
            for r in raw
        ]


class PostgresWriteTxn:
    """One append transaction; a tenant's head row stays locked until it ends."""

    def __init__(self, conn: psycopg.Connection[Any], shown: str) -> None:
        self.conn = conn
        self._shown = shown
        self._locked: dict[str, tuple[int, int]] = {}

    def head(self, tenant: str) -> Head:
        size, last = self._lock(tenant)
        return Head(tenant, size, last)

    def _lock(self, tenant: str) -> tuple[int, int]:
        found = self._locked.get(tenant)
        if found is not None:
            return found
        lock = "SELECT size, last_date FROM heads WHERE tenant = %s FOR UPDATE"
        try:
            row = self.conn.execute(lock, (tenant,)).fetchone()
            if row is None:
                # A new tenant: whoever inserts first wins, the others wait here and then lock it.
                self.conn.execute(
                    "INSERT INTO heads (tenant, size, last_date) VALUES (%s, 0, 0) ON CONFLICT (tenant) DO NOTHING",
                    (tenant,),
                )
                row = self.conn.execute(lock, (tenant,)).fetchone()
        except psycopg.Error as exc:
            raise _fail("locking the head", self._shown, exc) from None
        assert row is not None
        self._locked[tenant] = (int(row[0]), int(row[1]))
        return self._locked[tenant]

    def find_idempotent(self, tenant: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        # Under the head lock, so that two processes cannot both miss the same key.
        self._lock(tenant)
        found: dict[str, tuple[str, int]] = {}
        rows = self.query_native(
            "SELECT idempotency_key, id, seq FROM events WHERE tenant = %s AND idempotency_key = ANY(%s)",
            (tenant, list(keys)),
        )
        for key, id, seq in rows:
            found[key] = (id, seq)
        return found

    def insert(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            with self.conn.cursor() as cur:
                # Binary COPY: no text escaping on either side, and bytea goes as it is, not as hex.
                with cur.copy(_COPY_LEAVES) as copy:
                    copy.set_types(_LEAF_TYPES)
                    for r in rows:
                        copy.write_row((r.tenant, r.seq, r.leaf_hash))
                with cur.copy(_COPY_EVENTS) as copy:
                    copy.set_types(_EVENT_TYPES)
                    for r in rows:
                        copy.write_row(r[:12])  # Row's first fields are the events columns, in order
                with cur.copy(_COPY_DETAILS) as copy:
                    copy.set_types(_DETAIL_TYPES)
                    for r in rows:
                        tenant, seq = r.tenant, r.seq
                        for k, v in r.details.items():
                            copy.write_row((tenant, k, v, seq))
        except psycopg.Error as exc:
            raise _fail("insert", self._shown, exc) from None

    def set_head(self, head: Head) -> None:
        self._locked[head.tenant] = (head.size, head.last_date)
        self.query_native(
            "INSERT INTO heads (tenant, size, last_date) VALUES (%s, %s, %s) ON CONFLICT (tenant) "
            "DO UPDATE SET size = excluded.size, last_date = excluded.last_date",
            (head.tenant, head.size, head.last_date),
            fetch=False,
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.conn.execute(portable(sql).encode("utf-8"), list(params)).rowcount
        except psycopg.Error as exc:
            raise _fail("write", self._shown, exc) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.query_native(portable(sql), list(params))

    def query_native(self, text: str, params: Any, *, fetch: bool = True) -> list[Any]:
        """PostgreSQL SQL with ``%s`` placeholders inside this transaction."""
        try:
            cur = self.conn.execute(text.encode("utf-8"), params)
            return cur.fetchall() if fetch and cur.description is not None else []
        except psycopg.Error as exc:
            raise _fail("write", self._shown, exc) from None


def _uuid7_millis(id: str) -> int | None:
    try:
        value = uuid.UUID(id)
    except ValueError:
        return None
    return value.int >> 80 if value.version == 7 else None


def _redact(conninfo: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(conninfo)
    if parts.password is None:
        return conninfo
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

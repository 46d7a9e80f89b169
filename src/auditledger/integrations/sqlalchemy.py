"""SQLAlchemy ORM auto-capture: CREATE / UPDATE / DELETE events from flushes.

Mark a mapped class and install the auditor on the session factory:

    @audit_model("FLOW", details={"namespace": "namespace", "flowId": "flow_id"}, secret=("token",))
    class Flow(Base): ...

    SessionLocal = sessionmaker(engine)
    SQLAlchemyAuditor(AuditLog.open("sqlite:///audit.db")).install(SessionLocal)

Each flush turns new, changed and deleted instances of audited classes into
events (``after`` for CREATE, ``before`` for DELETE, the changed columns on
both sides for UPDATE), secret columns replaced by a mask before anything
leaves the process. Events wait with the transaction that produced them: a
rolled-back savepoint or transaction drops its events, and the root commit
records all of them as one atomic batch, changes flushed during the commit
itself included (by the commit's own flushes, after other ``before_commit``
listeners). By default that happens *before* the database commits, inside
``Session.commit()``: if the ledger refuses, the commit raises and the
application's change is not committed, so no change goes unaudited (the
ledger and the application database are two databases, so a crash between
the two commits can still leave an event whose change was not committed;
``write="after_commit"`` chooses the opposite risk). With an
:class:`~auditledger.integrations.outbox.Outbox` as the sink the batch is one
row of the application's own transaction instead, moved to the ledger in the
background: change and events commit together, on any database.

Bulk statements on audited classes (``session.execute(update(Flow)...)``,
``delete``, ORM bulk ``insert``, ``Query.update/delete``) bypass the
per-instance trail; they are refused with a :class:`ConfigError` unless the
statement carries ``execution_options(auditledger_skip=True)``, which says
"I record this myself". The legacy ``Session.bulk_save_objects`` /
``bulk_insert_mappings`` / ``bulk_update_mappings`` and raw SQL are not seen
by the ORM events at all: don't use them on audited tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

try:
    from sqlalchemy import event, inspect
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, SessionTransaction, attributes, sessionmaker
    from sqlalchemy.sql import ClauseElement
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from auditledger.errors import ConfigError

    raise ConfigError(
        f"the SQLAlchemy integration needs SQLAlchemy: pip install 'auditledger[sqlalchemy]' ({exc})"
    ) from None

from auditledger.errors import ConfigError
from auditledger.integrations.context import Sink, build_event, emit, resolve_sink, resolve_tenant
from auditledger.integrations.outbox import Outbox
from auditledger.ledger import AuditLog
from auditledger.model import KESTRA_RESOURCE_TYPES, MAX_SAFE_INT, NAME_RE

MASK = "[masked]"
MASK_CHANGED = "[masked, changed]"
SKIP_OPTION = "auditledger_skip"
_SPEC_ATTR = "__auditledger__"
_PENDING_KEY = "auditledger.pending"
_SNAPSHOT_KEY = "auditledger.deleted"
_RECEIPTS_KEY = "auditledger.receipts"  # write="in_transaction": written, waiting for the session's commit
_CONNECTIONS_KEY = "auditledger.connections"  # the root transaction's connections, from after_begin
_DEFERRED_KEY = "auditledger.deferred"  # the batch waits for the first connection's COMMIT
_OUTBOX_KEY = "auditledger.outbox"  # events written to an Outbox in this transaction, for after its commit

T = TypeVar("T", bound=type)
DetailSource = str | Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How one mapped class is audited."""

    resource_type: str
    details: Mapping[str, DetailSource]
    secret: frozenset[str]
    ignore: frozenset[str]
    state: str | None
    update_state: Literal["changed", "full"]


def audit_model(
    resource_type: str,
    *,
    details: Mapping[str, DetailSource] | None = None,
    secret: Iterable[str] = (),
    ignore: Iterable[str] = (),
    state: str | None = None,
    update_state: Literal["changed", "full"] = "changed",
) -> Callable[[T], T]:
    """Class decorator marking a mapped class as audited.

    ``details`` maps detail keys to attribute names (or callables of the
    instance); by default ``{"id": <primary key>}``. ``secret`` columns are
    masked in before/after. ``ignore`` columns neither appear nor make an
    UPDATE (``updated_at``). ``state`` names one column whose value *is* the
    resource's state (a flow's YAML source): before/after are that value
    rather than a map of columns. ``update_state="full"`` records every
    column on UPDATE, not only the changed ones.
    """
    if resource_type not in KESTRA_RESOURCE_TYPES and NAME_RE.fullmatch(resource_type) is None:
        raise ConfigError(f"audit_model: resource type {resource_type!r} is not of the form ^[A-Z][A-Z0-9_]{{0,63}}$")
    secrets = frozenset(secret)
    if state is not None and state in secrets:
        raise ConfigError(f"audit_model: the state column {state!r} cannot also be secret")
    if update_state not in ("changed", "full"):
        raise ConfigError(f"audit_model: update_state must be 'changed' or 'full', got {update_state!r}")
    spec = ModelSpec(resource_type, dict(details or {}), secrets, frozenset(ignore), state, update_state)

    def mark(cls: T) -> T:
        mapper: Any = inspect(cls, raiseerr=False)
        if mapper is None:
            raise ConfigError(f"audit_model: {cls.__name__} is not a mapped class (apply it below the mapping)")
        keys = set(mapper.columns.keys())
        for name in (*spec.secret, *spec.ignore, *([spec.state] if spec.state else [])):
            if name not in keys:
                raise ConfigError(f"audit_model({resource_type!r}): {cls.__name__} has no column {name!r}")
        for key, source in spec.details.items():
            if isinstance(source, str) and not hasattr(cls, source):
                raise ConfigError(f"audit_model({resource_type!r}): details[{key!r}] names no attribute {source!r}")
        setattr(cls, _SPEC_ATTR, spec)
        # Load the old value before a set, even when it was expired: without it
        # an UPDATE after a commit would not know its "before".
        for key in keys - spec.ignore:
            event.listen(getattr(cls, key), "set", _noop, active_history=True)
        return cls

    return mark


def _noop(*_args: Any) -> None:
    return None


def spec_of(obj: object) -> ModelSpec | None:
    spec = getattr(type(obj), _SPEC_ATTR, None)
    return spec if isinstance(spec, ModelSpec) else None


# ---------------------------------------------------------------- values


def json_value(value: Any) -> Any:
    """A column value as JSON the ledger accepts (dates as ISO texts, decimals as texts ...)."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else str(value)
    if isinstance(value, enum.Enum):
        return json_value(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    if isinstance(value, ClauseElement):
        return "[sql expression]"
    return str(value)


@dataclass(frozen=True, slots=True)
class _ClassInfo:
    """What every flush asks about one mapped class, computed once per class."""

    columns: tuple[str, ...]  # the audited columns, in the mapper's order
    primary_key: tuple[str, ...]


_INFO: dict[type, _ClassInfo] = {}


def _info(obj: object, spec: ModelSpec) -> _ClassInfo:
    cls = type(obj)
    found = _INFO.get(cls)
    if found is None:
        mapper = inspect(cls)
        found = _INFO[cls] = _ClassInfo(
            tuple(k for k in mapper.column_attrs.keys() if k not in spec.ignore),  # noqa: SIM118
            tuple(c.key for c in mapper.primary_key),
        )
    return found


def _columns(obj: object, spec: ModelSpec) -> tuple[str, ...]:
    """The audited columns of ``obj``'s class."""
    return _info(obj, spec).columns


def _snapshot(obj: object, spec: ModelSpec) -> dict[str, Any]:
    """Every audited column's current value (loading expired ones)."""
    return {key: getattr(obj, key) for key in _columns(obj, spec)}


def _masked(values: Mapping[str, Any], spec: ModelSpec, changed: bool = False) -> dict[str, Any]:
    return {
        k: ((MASK_CHANGED if changed else MASK) if k in spec.secret and v is not None else json_value(v))
        for k, v in values.items()
    }


def _details(obj: object, spec: ModelSpec, values: Mapping[str, Any]) -> dict[str, str]:
    if not spec.details:
        pk = [values[key] if key in values else getattr(obj, key, None) for key in _info(obj, spec).primary_key]
        return {} if any(v is None for v in pk) else {"id": ",".join(str(v) for v in pk)}
    out: dict[str, str] = {}
    for key, source in spec.details.items():
        if callable(source):
            value = source(obj)
        elif source in values:
            value = values[source]
        else:
            value = getattr(obj, source, None)
        if value is None:
            continue
        if source in spec.secret:
            value = MASK
        out[key] = value if type(value) is str else str(json_value(value))
    return out


# ---------------------------------------------------------------- the auditor


@dataclass(slots=True)
class _Pending:
    transaction: SessionTransaction | None
    event: dict[str, Any]
    cls: type


@dataclass
class SQLAlchemyAuditor:
    """Session event listeners turning flushes of audited classes into ledger events."""

    sink: Sink | None = None
    tenant: str | None = None
    write: Literal["before_commit", "after_commit", "in_transaction"] = "before_commit"
    _installed: list[tuple[Any, str, Callable[..., Any]]] = field(default_factory=list, repr=False)
    _guarded: set[int] = field(default_factory=set, repr=False)  # ids of the engines the bulk guard listens on

    def __post_init__(self) -> None:
        if self.write not in ("before_commit", "after_commit", "in_transaction"):
            raise ConfigError(f"write must be 'before_commit', 'after_commit' or 'in_transaction', got {self.write!r}")
        if isinstance(self.sink, Outbox):
            if self.write == "after_commit":
                raise ConfigError(
                    "an Outbox sink is written in the session's own transaction: write='after_commit' "
                    "would commit the change first; leave write at its default"
                )
        elif self.write == "in_transaction" and self.sink is not None and not isinstance(self.sink, AuditLog):
            raise ConfigError(
                f"write='in_transaction' writes the events in the session's own transaction: the sink must be an "
                f"AuditLog on the application's database or an Outbox, not {type(self.sink).__name__}"
            )

    def install(self, target: sessionmaker[Any] | type[Session] | Session) -> SQLAlchemyAuditor:
        """Listen on a ``sessionmaker``, a ``Session`` subclass or one session."""
        hooks: list[tuple[str, Callable[..., Any]]] = [
            ("before_flush", self._before_flush),
            ("after_flush", self._after_flush),
            ("after_soft_rollback", self._after_soft_rollback),
            ("after_transaction_end", self._after_transaction_end),
            # The bulk guard listens on each engine the sessions use, from their first
            # transaction on it: a session-level do_orm_execute listener would make
            # SQLAlchemy build an ORMExecuteState for every statement, SELECTs included.
            ("after_begin", self._after_begin),
        ]
        if self.write == "after_commit":
            hooks.append(("after_commit", self._commit))
        else:
            hooks += [("before_commit", self._commit), ("after_commit", self._committed)]
        for name, fn in hooks:
            event.listen(target, name, fn)
            self._installed.append((target, name, fn))
        return self

    def remove(self) -> None:
        for target, name, fn in self._installed:
            event.remove(target, name, fn)
        self._installed.clear()
        self._guarded.clear()

    # ------------------------------------------------------------ listeners

    def _before_flush(self, session: Session, _ctx: Any, _instances: Any) -> None:
        snapshots: dict[int, dict[str, Any]] = session.info.setdefault(_SNAPSHOT_KEY, {})
        for obj in session.deleted:
            spec = spec_of(obj)
            if spec is not None and id(obj) not in snapshots:
                snapshots[id(obj)] = _snapshot(obj, spec)

    def _after_flush(self, session: Session, _ctx: Any) -> None:
        txn = session.get_nested_transaction() or session.get_transaction()
        pending: list[_Pending] = session.info.setdefault(_PENDING_KEY, [])
        snapshots: dict[int, dict[str, Any]] = session.info.pop(_SNAPSHOT_KEY, {})
        deleted = session.deleted  # a new set at each access: taken once
        for obj in session.new:
            spec = spec_of(obj)
            if spec is not None:
                values = _snapshot(obj, spec)
                after = json_value(values[spec.state]) if spec.state else _masked(values, spec)
                pending.append(
                    _Pending(txn, self._event(spec, "CREATE", _details(obj, spec, values), None, after), type(obj))
                )
        for obj in session.dirty:
            spec = spec_of(obj)
            if spec is not None and obj not in deleted:
                self._update(obj, spec, txn, pending)
        for obj in deleted:
            spec = spec_of(obj)
            if spec is not None:
                values = snapshots.get(id(obj)) or {
                    k: v for k, v in inspect(obj).dict.items() if k in _columns(obj, spec)
                }
                before = json_value(values.get(spec.state)) if spec.state else _masked(values, spec)
                pending.append(
                    _Pending(txn, self._event(spec, "DELETE", _details(obj, spec, values), before, None), type(obj))
                )
        if self.write == "after_commit" and pending and self.sink is None and _scope_outbox():
            # Checked here, in the flush: at after_commit the change would be committed already.
            raise ConfigError(
                "the current scope's sink is an Outbox, written in the session's own transaction: "
                "write='after_commit' would commit the change first; leave write at its default"
            )

    def _update(self, obj: object, spec: ModelSpec, txn: SessionTransaction | None, pending: list[_Pending]) -> None:
        state = attributes.instance_state(obj)
        columns = _columns(obj, spec)
        # Only an attribute with an entry in committed_state can have history (SQLAlchemy puts
        # the old value there on the first change): the other columns need no history call.
        committed = state.committed_state
        old: dict[str, Any] = {}
        new: dict[str, Any] = {}
        for key in columns:
            if key not in committed:
                continue
            history = attributes.get_state_history(state, key)
            if history.has_changes():
                old[key] = history.deleted[0] if history.deleted else None
                new[key] = history.added[0] if history.added else None
        if not new:
            return  # only relationships or ignored columns changed
        values = state.dict
        current = {key: values.get(key) for key in columns}
        if spec.state:
            before = json_value(old.get(spec.state, current.get(spec.state)))
            after = json_value(new.get(spec.state, current.get(spec.state)))
        else:
            if spec.update_state == "full":
                old = {**current, **old}
                new = {**current, **new}
            changed = {k for k in new if k in spec.secret}
            before = {k: (MASK if k in spec.secret and v is not None else json_value(v)) for k, v in old.items()}
            after = {
                k: ((MASK_CHANGED if k in changed else MASK) if k in spec.secret and v is not None else json_value(v))
                for k, v in new.items()
            }
        pending.append(
            _Pending(txn, self._event(spec, "UPDATE", _details(obj, spec, current), before, after), type(obj))
        )

    def _event(self, spec: ModelSpec, action: str, details: dict[str, str], before: Any, after: Any) -> dict[str, Any]:
        return build_event(spec.resource_type, action, details=details, before=before, after=after)

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        """Drop the events of the transaction (or savepoint) rolled back and of those nested in it."""
        pending: list[_Pending] = session.info.get(_PENDING_KEY, [])
        session.info[_PENDING_KEY] = [p for p in pending if not _within(p.transaction, previous)]
        session.info.pop(_SNAPSHOT_KEY, None)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the root ended: whatever is left was never committed
            info = session.info
            info.pop(_PENDING_KEY, None)
            info.pop(_SNAPSHOT_KEY, None)
            info.pop(_RECEIPTS_KEY, None)
            info.pop(_CONNECTIONS_KEY, None)
            info.pop(_DEFERRED_KEY, None)
            info.pop(_OUTBOX_KEY, None)

    def _commit(self, session: Session) -> None:
        """Write the transaction's batch: at ``after_commit``, or before the database commits.

        Before the database commits, every change the commit flushes must be in the batch.
        ``Session.commit()`` runs the ``before_commit`` listeners, then flushes until the session
        is clean, then commits each connection. When this listener is the last of them, flushing
        here until clean (an ``after_flush`` hook may change more) leaves the commit nothing to
        flush, and the batch is written here. A listener after this one may still change objects:
        then the batch waits for the ``commit`` event of the transaction's first connection, the
        last moment before the database commits (a connection listener only then, because any
        listener on a connection makes each of its statements dispatch).
        """
        if self.write != "after_commit":
            if session.in_nested_transaction():
                return  # a savepoint's RELEASE: its events wait for the root
            if list(session.dispatch.before_commit)[-1] != self._commit:
                self._defer(session)
                return
            for _ in range(100):  # the bound SQLAlchemy's own commit loop gives its flushes
                if session._is_clean():
                    break
                session.flush()
        self._write(session, None)

    def _defer(self, session: Session) -> None:
        session.info[_DEFERRED_KEY] = True
        for connection in session.info.get(_CONNECTIONS_KEY, ()):
            self._listen_commit(session, connection)

    def _listen_commit(self, session: Session, connection: Connection) -> None:
        def at_commit(conn: Connection) -> None:
            if session.info.pop(_DEFERRED_KEY, None):  # the first connection to commit writes the batch
                self._write(session, conn)

        event.listen(connection, "commit", at_commit)

    def _write(self, session: Session, committing: Connection | None) -> None:
        pending: list[_Pending] = session.info.get(_PENDING_KEY, [])
        if not pending:
            return
        sink = resolve_sink(self.sink)
        if self.write == "in_transaction" or isinstance(sink, Outbox):
            self._write_in_transaction(session, pending, committing, sink)
        else:
            emit([p.event for p in pending], sink=sink, tenant=self.tenant)
        session.info[_PENDING_KEY] = []  # cleared only once the sink took them

    def _write_in_transaction(
        self, session: Session, pending: list[_Pending], committing: Connection | None, ledger: Sink
    ) -> None:
        """The events into the ledger's tables, or an outbox's, through the session's connection, before it commits."""
        if not isinstance(ledger, AuditLog | Outbox):
            raise ConfigError(
                "write='in_transaction' needs an AuditLog on the application's database or an Outbox as its sink, "
                f"got {type(ledger).__name__}"
            )
        known: list[Connection] = session.info.get(_CONNECTIONS_KEY, [])
        connections: dict[int, tuple[Any, Connection]] = {}
        for cls in {p.cls for p in pending}:
            mapper: Any = inspect(cls)
            if committing is None and not known:
                conn = session.connection(bind_arguments={"mapper": mapper})
            else:
                # From within the commit the session hands out no connection: find the one its flushes used.
                bind = session.get_bind(mapper=mapper)
                conn = next((c for c in known if c is bind or c.engine is bind), committing or known[0])
            dbapi = conn.connection.dbapi_connection
            connections[id(dbapi)] = (dbapi, conn)
        if len(connections) > 1:
            where = ledger.label if isinstance(ledger, Outbox) else "the ledger's database"
            raise ConfigError(
                "this commit's audited changes are in more than one database; one transaction can carry "
                f"their events only when they share the database of {where}"
            )
        ((dbapi, conn),) = connections.values()
        if isinstance(ledger, Outbox):
            if conn.engine.url != ledger.engine.url:
                raise ConfigError(
                    f"{ledger.label} is in {ledger.engine.url.render_as_string()}, but this commit's audited changes "
                    f"are in {conn.engine.url.render_as_string()}: one transaction cannot carry their events"
                )
            keys = ledger.write(dbapi, [p.event for p in pending], tenant=resolve_tenant(self.tenant))
            session.info[_OUTBOX_KEY] = session.info.get(_OUTBOX_KEY, 0) + len(keys)
            return
        receipts = ledger.record_many([p.event for p in pending], tenant=resolve_tenant(self.tenant), within=dbapi)
        session.info.setdefault(_RECEIPTS_KEY, []).extend(receipts)

    def _committed(self, session: Session) -> None:
        if session.info.pop(_DEFERRED_KEY, None):
            # No connection of the session committed: it joined a transaction it does not own
            # (a session bound to a connection already in a transaction). Written now, the events
            # still come before that transaction's commit.
            self._write(session, None)
        written = session.info.pop(_OUTBOX_KEY, 0)
        receipts = session.info.pop(_RECEIPTS_KEY, None)
        if written or receipts:
            sink = resolve_sink(self.sink)
            if written and isinstance(sink, Outbox):
                sink.committed(written)
            if receipts and isinstance(sink, AuditLog):
                sink.committed(receipts)

    def _after_begin(self, session: Session, _txn: SessionTransaction, connection: Connection) -> None:
        if self.write != "after_commit":
            known: list[Connection] = session.info.setdefault(_CONNECTIONS_KEY, [])
            if not any(c is connection for c in known):  # a savepoint begins on its parent's connection
                known.append(connection)
                if _DEFERRED_KEY in session.info:  # a connection taken during the commit's own flushes
                    self._listen_commit(session, connection)
        engine = connection.engine
        if id(engine) in self._guarded:
            return
        # Kept in _installed until remove(): the engine stays alive, so its id is not reused.
        for name, fn in (
            ("do_execute", self._do_execute),
            ("do_executemany", self._do_execute),
            ("do_execute_no_params", self._do_execute_no_params),
        ):
            event.listen(engine, name, fn)
            self._installed.append((engine, name, fn))
        self._guarded.add(id(engine))

    def _do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        return self._do_execute(cursor, statement, None, context)

    def _do_execute(self, _cursor: Any, _statement: str, _parameters: Any, context: Any) -> bool:
        """Refuse an ORM bulk INSERT/UPDATE/DELETE on an audited class before the cursor runs it.

        A dialect event, asked once per statement sent to the database: engine events
        (``before_execute``) make every connection dispatch at each of its steps, and a
        session's ``do_orm_execute`` builds an ``ORMExecuteState`` for every statement, both
        costlier. The flush's own statements are Core statements on the tables (no ORM
        entity) and pass. Returns False: the dialect executes the statement as usual.
        """
        if not (context.isinsert or context.isupdate or context.isdelete):
            return False
        compiled = context.compiled
        statement = compiled.statement if compiled is not None else None
        if statement is None or not getattr(statement, "is_dml", False):
            return False
        entity = statement.entity_description.get("entity")
        spec = getattr(entity, _SPEC_ATTR, None)
        if not isinstance(spec, ModelSpec) or context.execution_options.get(SKIP_OPTION):
            return False
        kind = "INSERT" if context.isinsert else "UPDATE" if context.isupdate else "DELETE"
        raise ConfigError(
            f"bulk {kind} on audited {entity.__name__} ({spec.resource_type}) would bypass the "
            "audit trail: load the objects and change or delete them through the session, or add "
            f".execution_options({SKIP_OPTION}=True) and record the event yourself"
        )


def _scope_outbox() -> bool:
    """Whether the sink the current scope (or the default) gives is an Outbox."""
    try:
        return isinstance(resolve_sink(None), Outbox)
    except ConfigError:
        return False


def _within(txn: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while txn is not None:
        if txn is ancestor:
            return True
        txn = txn.parent
    return False


__all__ = ["MASK", "MASK_CHANGED", "SKIP_OPTION", "ModelSpec", "SQLAlchemyAuditor", "audit_model", "json_value"]

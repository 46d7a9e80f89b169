"""A small workflow platform: users, flows as YAML with revisions, executions.

Auditing takes five lines in :func:`create_app` and none in the endpoints'
logic: the SQLAlchemy auditor records every change of a user, flow or
execution; the middleware and dependency say who did it; ``@audited``
records logins (and failed ones); a log line records reads of flow sources.
Pass ``sink=None`` to run the same app with auditing off (the benchmark does).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import yaml
from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from auditledger import Actor, AuditLog
from auditledger.errors import ConfigError
from auditledger.integrations import audit_extra, audit_scope, audited
from auditledger.integrations.asgi import AuditContextMiddleware, audit_user, set_current_actor
from auditledger.integrations.context import Sink
from auditledger.integrations.logging import AuditLogHandler
from auditledger.integrations.sqlalchemy import SQLAlchemyAuditor
from auditledger.store.sqlite import SQLiteStore

from .models import Base, Execution, Flow, FlowRevision, User

ROLES = ("ADMIN", "DEVELOPER", "VIEWER")
SYSTEM = Actor.system("workflow-platform")
_apps = itertools.count()


# ---------------------------------------------------------------- passwords


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000)
    return f"pbkdf2${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt, _digest = stored.split("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


# ---------------------------------------------------------------- bodies


class NewUser(BaseModel):
    email: str
    name: str
    role: str = "DEVELOPER"
    password: str


class UserChange(BaseModel):
    name: str | None = None
    role: str | None = None
    password: str | None = None


class Login(BaseModel):
    email: str
    password: str


def user_view(user: User, token: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": user.id, "email": user.email, "name": user.name, "role": user.role}
    if token:
        out["api_token"] = user.api_token
    return out


def parse_flow(source: str) -> tuple[str, str]:
    """(namespace, id) of a flow's YAML, or a 422 naming what is wrong."""
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise HTTPException(422, f"flow source is not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, "flow source must be a YAML mapping")
    for key in ("id", "namespace", "tasks"):
        if not doc.get(key):
            raise HTTPException(422, f"flow source has no {key!r}")
    return str(doc["namespace"]), str(doc["id"])


# ---------------------------------------------------------------- the app


def ledger_in(db_url: str) -> AuditLog:
    """An embedded ledger whose tables live in the platform's own SQLite database, for
    ``create_app(db_url, sink=ledger_in(db_url), audit_write="in_transaction")``: every
    commit stores the changes and their events together, one commit and one sync. The
    file keeps the journal mode the platform gave it."""
    if not db_url.startswith("sqlite:///") or db_url == "sqlite:///:memory:":
        raise ConfigError(f"the ledger can share a SQLite file only, not {db_url!r}")
    return AuditLog(SQLiteStore(db_url, journal="keep"))


def app_engine(db_url: str) -> Engine:
    """The platform's engine on ``db_url``, as :func:`create_app` makes it when given none
    (an ``Outbox`` needs it before the app exists)."""
    memory = db_url in ("sqlite://", "sqlite:///:memory:")  # one shared connection, or each has its own db
    return create_engine(db_url, connect_args={"check_same_thread": False}, poolclass=StaticPool if memory else None)


def create_app(
    db_url: str = "sqlite:///workflow.db",
    *,
    sink: Sink | None,
    admin_token: str | None = None,
    admin_email: str = "admin@example.com",
    engine: Engine | None = None,
    audit_write: Literal["before_commit", "after_commit", "in_transaction"] = "before_commit",
) -> FastAPI:
    """The API on ``db_url``; with ``sink=None`` nothing is audited.

    ``audit_write="in_transaction"``: ``sink`` is an ``AuditLog`` on this same database
    (:func:`ledger_in` opens one), and each commit carries its changes' events.
    """
    if engine is None:
        engine = app_engine(db_url)
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    audit_on = sink is not None
    app = FastAPI(title="workflow platform (auditledger example)")
    app.state.engine = engine
    app.state.sessions = sessions
    reads = logging.getLogger(f"examples.workflow_platform.app{next(_apps)}")
    reads.setLevel(logging.INFO)

    if sink is not None:
        # The whole of the auditing set-up.
        app.state.auditor = SQLAlchemyAuditor(sink, write=audit_write).install(sessions)
        app.add_middleware(AuditContextMiddleware, sink=sink)
        reads.addHandler(AuditLogHandler(sink, raise_errors=True))

    def maybe_audited(resource: str, action: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not audit_on:
            return lambda fn: fn
        return audited(resource, action, sink=sink, **kwargs)

    with sessions() as session, audit_scope(SYSTEM, sink=sink):
        if session.scalar(select(User).where(User.role == "ADMIN").limit(1)) is None:
            token = admin_token or secrets.token_urlsafe(24)
            admin = User(
                email=admin_email, name="Administrator", role="ADMIN",
                password_hash=hash_password(token), api_token=token,
            )
            session.add(admin)
            session.commit()
            app.state.admin_token = token

    # ------------------------------------------------------------ dependencies

    def db() -> Iterator[Session]:
        with sessions() as session:
            yield session

    def current_user(request: Request, session: Session = Depends(db)) -> User | None:
        header = request.headers.get("authorization", "")
        if not header:
            return None
        token = header.removeprefix("Bearer ").strip()
        user = session.scalar(select(User).where(User.api_token == token))
        if user is None:
            raise HTTPException(401, "unknown API token")
        return user

    def to_actor(user: User | None) -> Actor | None:
        return None if user is None else Actor.user(user.email, user.name)

    # Every route that authenticates asks for the user through this: audited, it also makes
    # the user the current actor (one solve per request; see audit_user).
    authenticated = audit_user(current_user, to_actor=to_actor) if audit_on else current_user

    def require(*roles: str) -> Callable[..., User]:
        def check(user: User | None = Depends(authenticated)) -> User:
            if user is None:
                raise HTTPException(401, "send Authorization: Bearer <api token>")
            if user.role not in roles:
                raise HTTPException(403, f"needs role {' or '.join(roles)}")
            return user

        return check

    writer = require("ADMIN", "DEVELOPER")
    admin_only = require("ADMIN")
    anyone = require(*ROLES)

    # ------------------------------------------------------------ users

    @app.post("/api/v1/users", status_code=201)
    def create_user(body: NewUser, _: User = Depends(admin_only), session: Session = Depends(db)) -> dict[str, Any]:
        if body.role not in ROLES:
            raise HTTPException(422, f"role must be one of {', '.join(ROLES)}")
        if session.scalar(select(User).where(User.email == body.email)) is not None:
            raise HTTPException(409, f"user {body.email} exists")
        user = User(
            email=body.email, name=body.name, role=body.role,
            password_hash=hash_password(body.password), api_token=secrets.token_urlsafe(24),
        )
        session.add(user)
        session.commit()
        return user_view(user, token=True)

    @app.patch("/api/v1/users/{user_id}")
    def change_user(
        user_id: int, body: UserChange, _: User = Depends(admin_only), session: Session = Depends(db)
    ) -> dict[str, Any]:
        user = session.get(User, user_id)
        if user is None:
            raise HTTPException(404, f"no user {user_id}")
        if body.role is not None:
            if body.role not in ROLES:
                raise HTTPException(422, f"role must be one of {', '.join(ROLES)}")
            user.role = body.role
        if body.name is not None:
            user.name = body.name
        if body.password is not None:
            user.password_hash = hash_password(body.password)
        session.commit()
        return user_view(user)

    @app.post("/api/v1/login")
    @maybe_audited("USER", "LOGIN", details={"id": "{body.email}"}, failure_action="LOGIN_FAILURE")
    def login(body: Login, session: Session = Depends(db)) -> dict[str, Any]:
        set_current_actor(Actor.user(body.email))  # whoever tries, successful or not
        user = session.scalar(select(User).where(User.email == body.email))
        if user is None or not check_password(body.password, user.password_hash):
            raise HTTPException(401, "wrong email or password")
        user.last_login = datetime.now(UTC)  # an ignored column: no USER UPDATE event
        session.commit()
        return {"api_token": user.api_token}

    # ------------------------------------------------------------ flows

    def get_flow(session: Session, namespace: str, flow_id: str) -> Flow:
        flow = session.scalar(select(Flow).where(Flow.namespace == namespace, Flow.flow_id == flow_id))
        if flow is None:
            raise HTTPException(404, f"no flow {namespace}.{flow_id}")
        return flow

    yaml_body = Body(..., media_type="application/x-yaml")

    @app.post("/api/v1/flows", status_code=201)
    def create_flow(
        source: str = yaml_body, _: User = Depends(writer), session: Session = Depends(db)
    ) -> dict[str, Any]:
        namespace, flow_id = parse_flow(source)
        if session.scalar(select(Flow).where(Flow.namespace == namespace, Flow.flow_id == flow_id)) is not None:
            raise HTTPException(409, f"flow {namespace}.{flow_id} exists; PUT it to change it")
        flow = Flow(namespace=namespace, flow_id=flow_id, revision=1, source=source)
        session.add(flow)
        session.flush()
        session.add(FlowRevision(flow=flow.id, revision=1, source=source))
        session.commit()
        return {"namespace": namespace, "id": flow_id, "revision": 1}

    @app.put("/api/v1/flows/{namespace}/{flow_id}")
    def update_flow(
        namespace: str, flow_id: str, source: str = yaml_body,
        _: User = Depends(writer), session: Session = Depends(db),
    ) -> dict[str, Any]:
        if parse_flow(source) != (namespace, flow_id):
            raise HTTPException(422, "the source's namespace and id must match the path")
        flow = get_flow(session, namespace, flow_id)
        if flow.source != source:
            flow.revision += 1
            flow.source = source
            flow.updated = datetime.now(UTC)
            session.add(FlowRevision(flow=flow.id, revision=flow.revision, source=source))
            session.commit()
        return {"namespace": namespace, "id": flow_id, "revision": flow.revision}

    @app.get("/api/v1/flows/{namespace}/{flow_id}")
    def read_flow(
        namespace: str, flow_id: str, _: User = Depends(anyone), session: Session = Depends(db)
    ) -> dict[str, Any]:
        flow = get_flow(session, namespace, flow_id)
        return {"namespace": namespace, "id": flow_id, "revision": flow.revision, "source": flow.source}

    @app.get("/api/v1/flows/{namespace}/{flow_id}/source")
    def download_source(
        namespace: str, flow_id: str, _: User = Depends(anyone), session: Session = Depends(db)
    ) -> Response:
        flow = get_flow(session, namespace, flow_id)
        reads.info(
            "flow source downloaded",
            extra=audit_extra("FLOW", "READ", namespace=namespace, flowId=flow_id, revision=flow.revision),
        )
        return Response(flow.source, media_type="application/x-yaml")

    @app.delete("/api/v1/flows/{namespace}/{flow_id}", status_code=204)
    def delete_flow(namespace: str, flow_id: str, _: User = Depends(writer), session: Session = Depends(db)) -> None:
        flow = get_flow(session, namespace, flow_id)
        for revision in session.scalars(select(FlowRevision).where(FlowRevision.flow == flow.id)):
            session.delete(revision)
        session.delete(flow)
        session.commit()

    # ------------------------------------------------------------ executions

    # The kill route first: /executions/{namespace}/{flow_id} would match it too.
    @app.post("/api/v1/executions/{execution_id}/kill")
    def kill(execution_id: str, _: User = Depends(writer), session: Session = Depends(db)) -> dict[str, Any]:
        run = session.get(Execution, execution_id)
        if run is None:
            raise HTTPException(404, f"no execution {execution_id}")
        if run.state != "KILLED":
            run.state = "KILLED"
            session.commit()
        return {"id": run.id, "state": run.state}

    @app.post("/api/v1/executions/{namespace}/{flow_id}", status_code=201)
    def execute(
        namespace: str, flow_id: str, inputs: dict[str, Any] | None = None,
        _: User = Depends(writer), session: Session = Depends(db),
    ) -> dict[str, Any]:
        flow = get_flow(session, namespace, flow_id)
        run = Execution(
            id=uuid.uuid4().hex[:22], namespace=namespace, flow_id=flow_id,
            flow_revision=flow.revision, state="CREATED", inputs=inputs or {},
        )
        session.add(run)
        session.commit()
        return {"id": run.id, "state": run.state, "revision": run.flow_revision}

    return app

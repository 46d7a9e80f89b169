"""The platform's tables: users, flows (YAML source with revisions) and executions.

Three classes are audited; ``FlowRevision`` is the flow's history table and
is deliberately not: the FLOW event of each change already carries the
before and after source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auditledger.integrations.sqlalchemy import audit_model


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


@audit_model(
    "USER",
    details={"id": "email", "name": "name"},
    secret=("password_hash", "api_token"),
    ignore=("last_login",),
)
class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    api_token: Mapped[str] = mapped_column(String(100), unique=True)
    last_login: Mapped[datetime | None] = mapped_column(default=None)


@audit_model(
    "FLOW",
    details={"namespace": "namespace", "flowId": "flow_id", "revision": "revision"},
    state="source",
    ignore=("updated",),
)
class Flow(Base):
    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("namespace", "flow_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(200))
    flow_id: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(default=_now)


class FlowRevision(Base):
    __tablename__ = "flow_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)


@audit_model(
    "EXECUTION",
    details={"namespace": "namespace", "flowId": "flow_id", "executionId": "id", "revision": "flow_revision"},
    ignore=("created",),
)
class Execution(Base):
    __tablename__ = "executions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(200))
    flow_id: Mapped[str] = mapped_column(String(200))
    flow_revision: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(default=_now)

"""A fresh PostgreSQL schema per test on the machine's server, dropped afterwards.

``AUDITLEDGER_TEST_PG`` overrides the server URL (default: the local ``test``
database). When the server is unreachable the test skips, or fails when
``AUDITLEDGER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from tests.conftest import service_missing

PG_URL = os.environ.get("AUDITLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL not reachable at {PG_URL}: {str(exc).strip()[:200]}")
        raise


def schema_url(schema: str) -> str:
    """The test server's URL with ``schema`` as the only search_path entry."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A new empty schema's store URL; the schema is dropped when the block ends."""
    schema = f"al_{uuid.uuid4().hex[:12]}"
    with admin_connect() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(schema)
    finally:
        with admin_connect() as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

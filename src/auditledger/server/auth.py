"""API tokens, roles and tenant scopes.

A token is 32 random bytes (``alt_`` + URL-safe base64); only its SHA-256 is
stored, which is enough for a high-entropy secret (no salt or slow hash
needed: there is nothing to guess). Each token has a role and a scope:

* ``ingest``  writes events, reads nothing;
* ``auditor`` reads, exports and verifies;
* ``admin``   does everything, including purge, jobs and tokens.

The scope is one tenant or ``*`` (every tenant; with ``admin``, an instance
administrator who may use the cross-tenant ``/api/v1/auditlogs/...`` routes).
Requests carry ``Authorization: Bearer <token>``; a missing, unknown, expired
or revoked token is 401, a valid token lacking the role or the tenant is 403.
Every request looks the token up again, so revocation and expiry take effect
at once. A source address that presents more than ``auth_failures_per_minute``
unknown tokens in a minute gets 429 with ``Retry-After`` until its minute is
over (OWASP ASVS V2.2.1: anti-automation on authentication); revoked, expired
and malformed credentials are refused but not counted, so that one stale
client cannot lock out everyone behind the same address.

Creating and revoking a token is itself recorded in the ledger, as a
``CREDENTIAL`` ``CREATE``/``DELETE`` event in the instance's own tenant
``access`` (apart from the tenants' events; an instance administrator reads
it) carrying the token's id, role and scope, never its secret. With
the ``audit_reads`` setting each read (every route that needs the auditor
role, and the cross-tenant routes) is recorded too, as ``AUDITLOG``/``READ``,
before the answer is computed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request

from auditledger.errors import AuthError, NotFoundError, ValidationError
from auditledger.model import Actor, check_tenant, event_input, format_date, from_micros, to_micros
from auditledger.store import Store

log = logging.getLogger("auditledger.server.auth")

ROLES = ("ingest", "auditor", "admin")
ALL_TENANTS = "*"
TOKEN_PREFIX = "alt_"  # noqa: S105 - a marker, not a secret
UNKNOWN_TOKEN = "unknown API token"  # noqa: S105 - an error message, not a secret
# The tenant whose ledger records access management (tokens created and revoked), apart from the
# tenants' own events: an instance administrator (admin on '*') reads it.
ACCESS_TENANT = "access"

# Which roles satisfy a required role: admin can do what the others can.
_SATISFIES = {"ingest": {"ingest", "admin"}, "auditor": {"auditor", "admin"}, "admin": {"admin"}}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, its role and its tenant scope (a tenant or ``*``)."""

    token_id: str
    role: str
    tenant: str

    def has(self, role: str) -> bool:
        return self.role in _SATISFIES[role]

    def sees(self, tenant: str) -> bool:
        return self.tenant in (ALL_TENANTS, tenant)


DEV_PRINCIPAL = Principal("insecure-dev", "admin", ALL_TENANTS)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without its secret."""

    id: str
    role: str
    tenant: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime | None = None) -> bool:
        moment = now or from_micros(_now())
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": format_date(self.created_at),
            "expires_at": None if self.expires_at is None else format_date(self.expires_at),
            "revoked_at": None if self.revoked_at is None else format_date(self.revoked_at),
            "active": self.active(),
        }


def _now() -> int:
    return time.time_ns() // 1000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError("role", f"{role[:40]!r} is not one of {', '.join(ROLES)}")
    return role


def check_scope(tenant: str) -> str:
    return tenant if tenant == ALL_TENANTS else check_tenant(tenant)


_COLUMNS = "id, role, tenant, name, created_at, expires_at, revoked_at"


def _info(row: tuple[Any, ...]) -> TokenInfo:
    id, role, tenant, name, created, expires, revoked = row
    return TokenInfo(
        id, role, tenant, name, from_micros(int(created)),
        None if expires is None else from_micros(int(expires)),
        None if revoked is None else from_micros(int(revoked)),
    )


CLI_ACTOR = Actor.system("auditledger-cli")


class Tokens:
    """The token table of a store (migration 0003), through the store's portable SQL.

    ``create`` and ``revoke`` record a ``CREDENTIAL`` event in the ledger on the
    same store, by ``actor`` (the command line's system actor unless given).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def _audit(self, action: str, info: TokenInfo, actor: Actor | None) -> None:
        from auditledger.ledger import AuditLog  # the ledger imports the store, not auth

        tenant = ACCESS_TENANT
        after = {k: v for k, v in info.to_dict().items() if k != "active"}
        draft = event_input(
            {
                "resource_type": "CREDENTIAL",
                "action": action,
                "actor": actor or CLI_ACTOR,
                "details": {"id": info.id, "role": info.role, "tenant": info.tenant, "kind": "api_token"},
                "after": after,
            }
        )
        AuditLog(self.store).append([(tenant, draft)])

    def create(
        self, role: str, tenant: str, *, name: str | None = None, expires_at: datetime | None = None,
        actor: Actor | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token: returns the secret (shown once, never stored) and its record."""
        check_role(role)
        check_scope(tenant)
        if name is not None and len(name) > 200:
            raise ValidationError("name", "at most 200 characters")
        now = _now()
        expires = None if expires_at is None else to_micros(expires_at)
        if expires is not None and expires <= now:
            raise ValidationError("expires", "lies in the past")
        secret = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token_id = "tok_" + secrets.token_hex(8)
        with self.store.write() as txn:
            txn.execute(
                f"INSERT INTO api_tokens (id, hash, {_COLUMNS.split(', ', 1)[1]}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                [token_id, hash_token(secret), role, tenant, name, now, expires],
            )
        info = self.get(token_id)
        self._audit("CREATE", info, actor)
        return secret, info

    def get(self, token_id: str) -> TokenInfo:
        rows = self.store.query(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", [token_id])
        if not rows:
            raise NotFoundError(f"no token {token_id!r}")
        return _info(rows[0])

    def list(self) -> list[TokenInfo]:
        return [_info(r) for r in self.store.query(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id")]

    def revoke(self, token_id: str, *, actor: Actor | None = None) -> TokenInfo:
        with self.store.write() as txn:
            changed = txn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [_now(), token_id]
            )
        info = self.get(token_id)  # NotFoundError when there is no such token
        if not changed and info.revoked_at is None:
            raise NotFoundError(f"no token {token_id!r}")
        if changed:
            self._audit("DELETE", info, actor)
        return info

    def count_active(self) -> int:
        rows = self.store.query(
            "SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
            [_now()],
        )
        return int(rows[0][0])

    def authenticate(self, token: str) -> Principal:
        """The principal of ``token``; AuthError(401) when unknown, expired or revoked."""
        digest = hash_token(token)
        rows = self.store.query(
            "SELECT id, hash, role, tenant, expires_at, revoked_at FROM api_tokens WHERE hash = ?", [digest]
        )
        if not rows or not hmac.compare_digest(str(rows[0][1]), digest):
            raise AuthError(UNKNOWN_TOKEN, 401)
        token_id, _, role, tenant, expires, revoked = rows[0]
        if revoked is not None:
            raise AuthError("the API token was revoked", 401)
        if expires is not None and int(expires) <= _now():
            raise AuthError("the API token has expired", 401)
        return Principal(str(token_id), str(role), str(tenant))


# ---------------------------------------------------------------- FastAPI dependencies


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'", 401)
    return value.strip()


class TooManyFailures(AuthError):
    """429: this source presented too many bad tokens; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class FailureLimiter:
    """Failed authentications per source address in a sliding window (memory bounded by ``max_sources``)."""

    def __init__(self, limit: int, window_s: float = 60.0, max_sources: int = 100_000) -> None:
        self.limit = limit
        self.window = window_s
        self.max_sources = max_sources
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> deque[float] | None:
        times = self._failures.get(source)
        while times and times[0] <= now - self.window:
            times.popleft()
        if times is not None and not times:
            del self._failures[source]
            return None
        return times

    def check(self, source: str) -> None:
        """TooManyFailures while ``source`` is over the limit."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(source, now)
            if times is not None and len(times) >= self.limit:
                wait = max(1, int(times[0] + self.window - now + 1))
                raise TooManyFailures(
                    f"too many failed authentications from this address ({len(times)} in the last "
                    f"{self.window:.0f} s); try again in {wait} s",
                    wait,
                )

    def failed(self, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            if source not in self._failures and len(self._failures) >= self.max_sources:
                # Under a flood of distinct sources drop the oldest entry rather than grow without bound.
                self._failures.pop(next(iter(self._failures)))
            times = self._recent(source, now) or self._failures.setdefault(source, deque())
            times.append(now)


def _limiter(request: Request) -> FailureLimiter:
    limiter: FailureLimiter | None = getattr(request.app.state, "auth_failures", None)
    if limiter is None:
        limit = int(getattr(request.app.state.settings, "auth_failures_per_minute", 30))
        limiter = request.app.state.auth_failures = FailureLimiter(limit)
    return limiter


def authenticate(request: Request, token: str | None) -> Principal:
    """The principal of ``token`` presented by ``request``'s source: the one door for every credential.

    The Bearer header and the web UI's sign-in form both come here, so guesses through either count
    against the same per-address limit, and a source over it gets 429 before its token is looked at.
    """
    from auditledger.server.deps import client_ip

    source = client_ip(request)
    limiter = _limiter(request)
    limiter.check(source)
    try:
        if token is None:
            raise AuthError("missing credentials: send 'Authorization: Bearer <token>'", 401)
        tokens: Tokens = request.app.state.tokens
        return tokens.authenticate(token)
    except AuthError as exc:
        # Only guesses count: a revoked, expired or malformed credential is a stale or misconfigured
        # client, and counting it would lock out everyone behind the same address.
        if str(exc) == UNKNOWN_TOKEN:
            limiter.failed(source)
            # Never the token itself: a log line must not turn into a credential.
            log.warning("authentication failed from %s: %s", source, exc)
        raise


def principal_of(request: Request) -> Principal:
    """The caller of ``request`` (cached on the request); AuthError(401) without valid credentials.

    Sources over the failure limit get 429 before their token is even looked at.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    found = DEV_PRINCIPAL if request.app.state.settings.insecure_dev else authenticate(request, bearer(request))
    request.state.principal = found
    return found


def audit_read(request: Request, principal: Principal, tenant: str | None) -> None:
    """With the ``audit_reads`` setting, record this read as AUDITLOG/READ and wait for its commit."""
    if not getattr(request.app.state.settings, "audit_reads", False):
        return
    from auditledger.ledger import DEFAULT_TENANT

    query = str(request.url.query)
    draft = event_input(
        {
            "resource_type": "AUDITLOG",
            "action": "READ",
            "actor": {"type": "SERVICE_ACCOUNT", "id": principal.token_id},
            "details": {
                "method": request.method,
                "path": request.url.path[:1024],
                **({"query": query[:1024]} if query else {}),
                "role": principal.role,
            },
        }
    )
    writer = request.app.state.writer
    writer.submit(tenant or DEFAULT_TENANT, [draft]).result(timeout=60)


def check_tenant_access(principal: Principal, tenant: str) -> None:
    """AuthError(403) unless ``principal``'s scope covers ``tenant`` (never says whether the tenant exists)."""
    if not principal.sees(tenant):
        raise AuthError(f"this token is not allowed on tenant {tenant[:64]!r}", 403)


def require(role: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller, who must hold ``role`` (admin holds every role).

    When the route has a ``{tenant}`` path parameter the caller's scope must
    cover it too; cross-tenant routes use ``require_instance_admin``.
    """
    check_role(role)

    def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.has(role):
            raise AuthError(f"this token's role {principal.role!r} may not do this (needs {role!r})", 403)
        tenant = request.path_params.get("tenant")
        if isinstance(tenant, str):
            check_tenant_access(principal, tenant)
        if role == "auditor":
            audit_read(request, principal, tenant if isinstance(tenant, str) else None)
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


def require_instance_admin(request: Request) -> Principal:
    """A FastAPI dependency for cross-tenant routes: an admin token scoped to ``*``."""
    principal = principal_of(request)
    if not (principal.has("admin") and principal.tenant == ALL_TENANTS):
        raise AuthError("cross-tenant routes need an admin token with tenant scope '*'", 403)
    audit_read(request, principal, None)
    return principal

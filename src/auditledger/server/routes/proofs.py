"""Proof routes: the latest signed checkpoint, inclusion and consistency proofs.

Hashes are base64 (as in the checkpoint note); a client checks the answers with
the pure functions of :mod:`auditledger.merkle` and the log's public key alone.
The router's lifespan also runs the periodic checkpointer: every
``checkpoint_interval`` seconds each tenant with new events gets a checkpoint,
which is handed to the witnesses (``witness_dir``, the shipper) as it is made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from auditledger import evidence, tree
from auditledger.errors import AuditLedgerError, ConfigError, NotFoundError
from auditledger.ledger import AuditLog
from auditledger.model import check_tenant, format_date, from_micros
from auditledger.server.auth import require
from auditledger.server.deps import get_ledger, get_settings
from auditledger.settings import Settings

log = logging.getLogger("auditledger.checkpoints")


def signer_of(settings: Settings) -> tree.Signer | None:
    """The configured signer, or None when no key is configured (checkpoints are then off)."""
    try:
        return tree.load_signer(settings.signing_key_file, settings.log_name)
    except ConfigError:
        if settings.signing_key_file:
            raise  # a key file that is set but unreadable is an error, not "no key"
        return None


def witness_of(settings: Settings) -> tree.Witness | None:
    return tree.witnesses(
        tree.directory_witness(settings.witness_dir) if settings.witness_dir else None,
        tree.shipping_witness(settings.witness_shipper),
    )


async def _checkpointer(ledger: AuditLog, signer: tree.Signer, witness: tree.Witness | None, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            made = await asyncio.to_thread(tree.checkpoint_due, ledger.store, signer, witness=witness)
        except AuditLedgerError as exc:
            log.error("periodic checkpoint failed: %s", exc.diagnostics())
            continue
        for cp in made:
            log.info("checkpoint %s size %d", cp.tenant, cp.size)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    signer = signer_of(settings) if settings.checkpoint_interval > 0 else None
    if signer is None:
        yield
        return
    task = asyncio.create_task(
        _checkpointer(app.state.ledger, signer, witness_of(settings), settings.checkpoint_interval)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(tags=["Proofs"], lifespan=lifespan)
Auditor = Depends(require("auditor"))
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown event, or no checkpoint yet"},
    422: {"description": "A size outside the tree"},
}


@router.get(
    "/api/v1/{tenant}/auditlogs/checkpoint",
    summary="The latest signed checkpoint (made now when a key is configured and new events exist)",
    responses=_ERRORS,
    dependencies=[Auditor],
)
def get_checkpoint(
    tenant: str,
    ledger: Annotated[AuditLog, Depends(get_ledger)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict[str, Any]:
    check_tenant(tenant)
    signer = signer_of(settings)
    has_events = any(h.tenant == tenant and h.size > 0 for h in ledger.store.heads())
    if signer is not None and has_events:  # never store checkpoints for tenant names nobody wrote to
        cp: tree.StoredCheckpoint | None = tree.make_checkpoint(
            ledger.store, tenant, signer, witness=witness_of(settings)
        )
    else:
        cp = tree.latest_checkpoint(ledger.store, tenant)
    if cp is None:
        why = "no signing key is configured" if signer is None else "it has no events"
        raise NotFoundError(f"tenant {tenant!r} has no checkpoint yet: {why}")
    return {
        "tenant": tenant,
        "size": cp.size,
        "root": base64.b64encode(cp.root).decode(),
        "checkpoint": cp.note,
        "created_at": format_date(from_micros(cp.created_at)),
    }


@router.get(
    "/api/v1/{tenant}/auditlogs/consistency",
    summary="Consistency proof between two tree sizes",
    responses=_ERRORS,
    dependencies=[Auditor],
)
def get_consistency(
    tenant: str,
    ledger: Annotated[AuditLog, Depends(get_ledger)],
    from_size: Annotated[int, Query(alias="from", ge=0, description="The older tree size.")],
    to_size: Annotated[
        int | None, Query(alias="to", ge=0, description="The newer tree size (default: latest checkpoint).")
    ] = None,
) -> dict[str, Any]:
    check_tenant(tenant)
    return evidence.consistency_answer(ledger.store, tenant, from_size, to_size)


@router.get(
    "/api/v1/{tenant}/auditlogs/{id}/proof",
    summary="Inclusion proof of one event",
    responses=_ERRORS,
    dependencies=[Auditor],
)
def get_proof(
    tenant: str,
    id: str,
    ledger: Annotated[AuditLog, Depends(get_ledger)],
    checkpoint_size: Annotated[
        int | None, Query(ge=1, description="Tree size to prove against (default: latest checkpoint).")
    ] = None,
) -> dict[str, Any]:
    check_tenant(tenant)
    return evidence.inclusion_answer(ledger.store, tenant, id, checkpoint_size)

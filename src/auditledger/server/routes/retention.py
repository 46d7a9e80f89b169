"""Retention routes (admin role only): purge, legal holds, jobs and their runs.

The router's lifespan runs the job scheduler inside ``auditledger serve``; any
number of server processes may do so, the database lease lets one tick at a
time (see :mod:`auditledger.jobs.scheduler`). The ``scheduler`` setting
(``AUDITLEDGER_SCHEDULER=0``) turns it off in a process; ``purge_min_age_days``
is the minimum retention age of every purge these routes and the jobs run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response

from auditledger.errors import ConfigError, ValidationError
from auditledger.jobs import Jobs, Scheduler
from auditledger.ledger import AuditLog
from auditledger.model import Actor
from auditledger.retention import Retention, purge_filter
from auditledger.server.auth import Principal, require
from auditledger.server.deps import get_ledger, json_response
from auditledger.settings import Settings


def _min_age(app: FastAPI) -> timedelta:
    settings: Settings = app.state.settings
    return timedelta(days=settings.purge_min_age_days)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if not app.state.settings.scheduler:
        yield
        return
    scheduler = Scheduler(Jobs(app.state.ledger, min_age=_min_age(app)))
    scheduler.start()
    try:
        yield
    finally:
        await asyncio.to_thread(scheduler.stop)


router = APIRouter(tags=["Retention"], lifespan=lifespan)
Admin = Annotated[Principal, Depends(require("admin"))]
Ledger = Annotated[AuditLog, Depends(get_ledger)]


def _actor(principal: Principal) -> Actor:
    return Actor.service_account(principal.token_id)


@router.post("/api/v1/{tenant}/retention/purge", summary="Purge events (Kestra's PurgeAuditLogs properties)")
def purge(
    tenant: str, principal: Admin, ledger: Ledger, request: Request, body: Annotated[dict[str, Any], Body()],
    dryRun: bool = False, force: bool = False,
) -> Response:
    allowed = {"endDate", "startDate", "namespace", "resources", "types", "actions"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(unknown[0], f"unknown property; expected {', '.join(sorted(allowed))}")
    if "endDate" not in body:
        raise ValidationError("endDate", "is required")
    flt = purge_filter(
        body["endDate"], start_date=body.get("startDate"), namespace=body.get("namespace"),
        resources=body.get("resources"), types=body.get("types"), actions=body.get("actions"), tenant=tenant,
    )
    retention = Retention(ledger, min_age=_min_age(request.app))
    result = retention.purge(flt, actor=_actor(principal), dry_run=dryRun, force=force)
    return json_response(result.to_dict())


@router.get("/api/v1/{tenant}/retention/holds", summary="Legal holds of the tenant")
def holds(tenant: str, principal: Admin, ledger: Ledger, all: bool = False) -> Response:
    return json_response([h.to_dict() for h in Retention(ledger).holds(tenant=tenant, include_released=all)])


@router.post("/api/v1/{tenant}/retention/holds", summary="Create a legal hold", status_code=201)
def create_hold(tenant: str, principal: Admin, ledger: Ledger, body: Annotated[dict[str, Any], Body()]) -> Response:
    hold = Retention(ledger).create_hold(
        str(body.get("query", "")), str(body.get("reason", "")), actor=_actor(principal), tenant=tenant
    )
    return json_response(hold.to_dict(), 201)


@router.delete("/api/v1/{tenant}/retention/holds/{hold_id}", summary="Release a legal hold")
def release_hold(tenant: str, hold_id: str, principal: Admin, ledger: Ledger) -> Response:
    return json_response(Retention(ledger).release_hold(hold_id, actor=_actor(principal), tenant=tenant).to_dict())


@router.get("/api/v1/{tenant}/jobs", summary="Jobs (system namespace included: admins only)")
def list_jobs(tenant: str, principal: Admin, ledger: Ledger) -> Response:
    out = [
        {"namespace": j.namespace, "id": j.id, "revision": r, "description": j.description,
         "tasks": [{"id": t.id, "type": t.type} for t in j.tasks],
         "triggers": [{"id": s.id, "cron": s.cron, "timezone": s.timezone, "disabled": s.disabled} for s in j.triggers]}
        for _, j, r in Jobs(ledger).list_jobs(tenant=tenant, admin=True)
    ]
    return json_response(out)


@router.put("/api/v1/{tenant}/jobs", summary="Apply a job (YAML body)")
async def apply_job(tenant: str, principal: Admin, ledger: Ledger, request: Request) -> Response:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("body", "the job must be UTF-8 YAML") from None
    try:
        job, state = await asyncio.to_thread(
            Jobs(ledger).apply, text, "request body", tenant=tenant, actor=_actor(principal)
        )
    except ConfigError as exc:  # a bad job file is the client's mistake here, not the server's setup
        raise ValidationError("job", str(exc)) from None
    return json_response({"namespace": job.namespace, "id": job.id, "state": state})


@router.post("/api/v1/{tenant}/jobs/{ref}/runs", summary="Run a job now")
def run_job(tenant: str, ref: str, principal: Admin, ledger: Ledger, request: Request) -> Response:
    jobs = Jobs(ledger, min_age=_min_age(request.app))
    return json_response(jobs.run_now(jobs.get(ref, tenant=tenant, admin=True), tenant=tenant).to_dict())


@router.get("/api/v1/{tenant}/jobs/{ref}/runs", summary="Run history of a job")
def job_runs(tenant: str, ref: str, principal: Admin, ledger: Ledger, limit: int = 50) -> Response:
    jobs = Jobs(ledger)
    job = jobs.get(ref, tenant=tenant, admin=True)
    return json_response([r.to_dict() for r in jobs.history(job, tenant=tenant, limit=max(1, min(limit, 500)))])

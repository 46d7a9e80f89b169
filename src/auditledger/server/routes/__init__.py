"""Feature routers, included automatically.

Every module of this package that exposes ``router: fastapi.APIRouter`` is
included by :func:`auditledger.server.create_app`, in module-name order. A
feature adds its routes by adding a module here, protecting each route with
``Depends(auditledger.server.require("auditor"))`` (or ``"ingest"``,
``"admin"``) and, for tenant paths not named ``{tenant}``,
``auditledger.server.check_tenant_access``.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    found: list[APIRouter] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            found.append(router)
    return found

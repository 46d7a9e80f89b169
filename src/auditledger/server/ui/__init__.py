"""The web UI: the audit log table, diffs, event pages, exports and token admin under ``/ui``.

Server-rendered Jinja2 pages with one small script and one style sheet, both
served by the product (no CDN, no build step). ``auditledger.server.routes.ui``
exposes :data:`router` so that the server includes it like any other routes
module. See ``docs/ui.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from auditledger.server.ui import admin, auth_pages, event, render, table


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A wrong link template stops the server at start, not on the first page view.
    render.ResourceLinks.from_settings(app.state.settings.ui_resource_urls)
    yield


router = APIRouter(prefix="/ui", include_in_schema=False, lifespan=_lifespan)
for _module in (auth_pages, table, event, admin):
    router.include_router(_module.router)

__all__ = ["router"]

"""What the example-app tests of each sink share: the API calls of one flow's life, and what its UPDATE must hold."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI

ADMIN = "admin-secret-token-123"
FLOW_V1 = "id: hello\nnamespace: company.team\ntasks:\n  - id: say\n    type: io.kestra.plugin.core.log.Log\n"
CLIENT_IP = "192.0.2.10"
REQUEST_ID = "r-42"


def call(app: FastAPI, steps: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run ``steps`` against ``app`` as the admin, from ``CLIENT_IP`` with the request id ``REQUEST_ID``."""

    async def run() -> None:
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 4321))
        headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/x-yaml", "x-request-id": REQUEST_ID}
        async with httpx.AsyncClient(transport=transport, base_url="http://platform", headers=headers) as http:
            await steps(http)

    asyncio.run(run())


async def create_and_change(http: httpx.AsyncClient) -> None:
    """POST the flow, then PUT a second revision of it."""
    assert (await http.post("/api/v1/flows", content=FLOW_V1)).status_code == 201
    changed = await http.put("/api/v1/flows/company.team/hello", content=FLOW_V1 + "# v2\n")
    assert changed.status_code == 200


def assert_the_update(update: dict[str, Any]) -> None:
    """The FLOW UPDATE of :func:`create_and_change`: its actor, request, revision and both states."""
    assert (update["resource_type"], update["action"]) == ("FLOW", "UPDATE")
    assert update["actor"]["id"] == "admin@example.com" and update["actor"]["ip"] == CLIENT_IP
    assert update["details"]["requestId"] == REQUEST_ID and update["details"]["revision"] == "2"
    assert update["before"] == FLOW_V1 and update["after"] == FLOW_V1 + "# v2\n"

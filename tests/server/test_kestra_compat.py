"""Kestra-shaped requests against a real server: every filter operation, map and list values,
groups, sort, paging, export, find, history and diff, answers checked against the reference shapes."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from auditledger.model import KESTRA_ACTIONS
from tests.server.conftest import Live

TENANT = "acme"
FLOW_V1 = {"id": "hello", "namespace": "company.team", "tasks": [{"id": "t1", "type": "Log"}]}
FLOW_V2 = {"id": "hello", "namespace": "company.team", "tasks": [{"id": "t1", "type": "Log"}], "description": "x"}


def _ev(resource: str, action: str, actor: dict[str, Any], **details: str) -> dict[str, Any]:
    return {"resource_type": resource, "action": action, "actor": actor, "details": details}


ANNA = {"type": "USER", "id": "anna@acme.io", "name": "Anna Schmidt", "ip": "10.0.0.7"}
CI = {"type": "SERVICE_ACCOUNT", "id": "sa-ci", "name": "CI deployer"}
SYSTEM = {"type": "SYSTEM", "id": "scheduler"}


@pytest.fixture(scope="module")
def seeded(live: Live) -> dict[str, Any]:
    events = [
        {**_ev("FLOW", "CREATE", ANNA, id="hello", namespace="company.team", flowId="hello", revision="1"),
         "after": FLOW_V1},
        {**_ev("FLOW", "UPDATE", ANNA, id="hello", namespace="company.team", flowId="hello", revision="2"),
         "before": FLOW_V1, "after": FLOW_V2},
        _ev("EXECUTION", "CREATE", SYSTEM, id="ex1", namespace="company.team", flowId="hello", executionId="ex1"),
        _ev("EXECUTION", "CREATE", CI, id="ex2", namespace="company.marketing", flowId="mail", executionId="ex2"),
        _ev("SECRET", "READ", CI, id="db-password", namespace="company"),
        _ev("USER", "LOGIN", ANNA, id="anna@acme.io"),
        {**_ev("FLOW", "UPDATE", ANNA, id="report", namespace="company.finance", flowId="report"),
         "before": "id: report\nrevision: 1\n", "after": "id: report\nrevision: 2\n"},
    ]
    with live.client("ingest@acme") as c:
        r = c.post(f"/api/v1/{TENANT}/auditlogs", json={"events": events})
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
    with live.client("ingest@globex") as c:
        r = c.post("/api/v1/globex/auditlogs", json=_ev("FLOW", "DELETE", ANNA, id="hello", namespace="company.team"))
        assert r.status_code == 201
    return {"ids": ids}


def search(live: Live, params: Any, tenant: str = TENANT, who: str = "auditor@acme") -> dict[str, Any]:
    with live.client(who) as c:
        r = c.get(f"/api/v1/{tenant}/auditlogs/search", params=params)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    check_page(answer)
    return answer


def check_page(answer: dict[str, Any]) -> None:
    assert isinstance(answer["results"], list) and isinstance(answer["total"], int)
    for item in answer["results"]:
        check_item(item)


def check_item(item: dict[str, Any]) -> None:
    """ITEM as reference/kestra-api.md describes it: required fields and enum values."""
    log = item["auditLog"]
    for key in ("id", "type", "detail", "date", "userId"):
        assert log[key] is not None, key
    assert log["type"] in KESTRA_ACTIONS
    assert isinstance(log["detail"]["type"], str)
    assert log["detail"]["resourceType"] == log["detail"]["resource"]
    assert log["date"].endswith("Z")
    for patch in (log["appliedPatch"], log["revertPatch"]):
        assert all(op["op"] in ("add", "remove", "replace") and isinstance(op["path"], str) for op in patch)
    user = item["user"]
    if user is not None:
        assert user["type"] in ("STANDARD", "SERVICE_ACCOUNT")
        assert isinstance(user["username"], str) and isinstance(user["email"], str)


def resources(answer: dict[str, Any]) -> list[str]:
    return [i["auditLog"]["detail"]["resourceType"] for i in answer["results"]]


def ids_of(answer: dict[str, Any]) -> set[str]:
    return {i["auditLog"]["detail"].get("id") for i in answer["results"]}


@pytest.mark.usefixtures("seeded")
class TestSearch:
    def test_unfiltered_page_is_tenant_scoped(self, live: Live) -> None:
        """Without filters a tenant sees its own seven entries, newest first, total exact."""
        answer = search(live, {})
        assert answer["total"] == 7 and answer["more"] is False
        assert len(answer["results"]) == 7
        dates = [i["auditLog"]["date"] for i in answer["results"]]
        assert dates == sorted(dates, reverse=True)
        assert {i["auditLog"]["tenantId"] for i in answer["results"]} == {TENANT}

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"filters[namespace][EQUALS]": "company.team"}, {"hello", "ex1"}),
            ({"filters[namespace][NOT_EQUALS]": "company.team"}, {"ex2", "db-password", "anna@acme.io", "report"}),
            ({"filters[namespace][PREFIX]": "company.team"}, {"hello", "ex1"}),
            ({"filters[namespace][STARTS_WITH]": "company.f"}, {"report"}),
            ({"filters[namespace][ENDS_WITH]": "marketing"}, {"ex2"}),
            ({"filters[namespace][CONTAINS]": "financ"}, {"report"}),
            ({"filters[namespace][NOT_CONTAINS]": "company."}, {"db-password", "anna@acme.io"}),
            ({"filters[namespace][IN]": "company,company.marketing"}, {"db-password", "ex2"}),
            ({"filters[namespace][NOT_IN]": "company.team,company"}, {"ex2", "anna@acme.io", "report"}),
            ({"filters[namespace][REGEX]": "^company\\.fin"}, {"report"}),
            ({"filters[flowId][EQUALS]": "hello"}, {"hello", "ex1"}),
            ({"filters[executionId][EQUALS]": "ex2"}, {"ex2"}),
            ({"filters[id][EQUALS]": "db-password"}, {"db-password"}),
            ({"filters[userId][EQUALS]": "sa-ci"}, {"ex2", "db-password"}),
            ({"filters[resources][IN]": "SECRET,USER"}, {"db-password", "anna@acme.io"}),
            ({"filters[resources][NOT_IN]": "FLOW,EXECUTION"}, {"db-password", "anna@acme.io"}),
            ({"filters[type][EQUALS]": "LOGIN"}, {"anna@acme.io"}),
            ({"filters[details][EQUALS][flowId]": "mail"}, {"ex2"}),
            ({"filters[details][IS_NULL][namespace]": "true"}, {"anna@acme.io"}),
            ({"filters[details][IS_NOT_NULL][executionId]": "true"}, {"ex1", "ex2"}),
            ({"filters[q][EQUALS]": "resource:SECRET"}, {"db-password"}),
            ({"q": "action:LOGIN"}, {"anna@acme.io"}),
            ({"q": "db-pass"}, {"db-password"}),
        ],
    )
    def test_filter_operations(self, live: Live, params: dict[str, str], expected: set[str]) -> None:
        """Each Kestra filter operation, list value and map value selects exactly the matching entries."""
        assert ids_of(search(live, params)) == expected

    def test_two_map_values_are_anded(self, live: Live) -> None:
        """Several details keys in the map form must all match."""
        params = {"filters[details][EQUALS][namespace]": "company.team", "filters[details][EQUALS][flowId]": "hello"}
        assert ids_of(search(live, params)) == {"hello", "ex1"}
        params["filters[details][EQUALS][executionId]"] = "ex1"
        assert ids_of(search(live, params)) == {"ex1"}

    def test_or_group_and_nested_group(self, live: Live) -> None:
        """filters[or][i] is an OR of its members, and filters[and][i][or][j] nests one level."""
        params = {"filters[or][0][namespace][EQUALS]": "company.marketing", "filters[or][1][type][EQUALS]": "LOGIN"}
        assert ids_of(search(live, params)) == {"ex2", "anna@acme.io"}
        nested = {
            "filters[resources][IN]": "EXECUTION,USER",
            "filters[and][0][or][0][userId][EQUALS]": "sa-ci",
            "filters[and][0][or][1][userId][EQUALS]": "scheduler",
        }
        assert ids_of(search(live, nested)) == {"ex1", "ex2"}

    def test_dates_and_time_range(self, live: Live) -> None:
        """startDate/endDate bound the date and timeRange looks back from now."""
        everything = search(live, {"size": 50})["results"]
        dates = sorted(i["auditLog"]["date"] for i in everything)
        answer = search(live, {"filters[startDate][GREATER_THAN_OR_EQUAL_TO]": dates[3],
                               "filters[endDate][LESS_THAN_OR_EQUAL_TO]": dates[4]})
        assert sorted(i["auditLog"]["date"] for i in answer["results"]) == dates[3:5]
        assert search(live, {"filters[timeRange][EQUALS]": "PT1H"})["total"] == 7

    def test_kestra_1x_flat_parameters(self, live: Live) -> None:
        """The 1.x flat form: namespace prefix, repeated resources, details as key:value, type."""
        assert ids_of(search(live, {"namespace": "company.team"})) == {"hello", "ex1"}
        assert ids_of(search(live, [("resources", "SECRET"), ("resources", "USER")])) == {"db-password", "anna@acme.io"}
        assert ids_of(search(live, {"details": "flowId:mail"})) == {"ex2"}
        assert ids_of(search(live, {"type": "LOGIN"})) == {"anna@acme.io"}

    def test_sort_and_paging(self, live: Live) -> None:
        """sort=date:asc reverses the order; page and size slice it; the cursor continues it."""
        asc = search(live, {"sort": "date:asc", "size": 50})["results"]
        desc = search(live, {"sort": "date:desc", "size": 50})["results"]
        assert [i["auditLog"]["id"] for i in asc] == [i["auditLog"]["id"] for i in reversed(desc)]
        page2 = search(live, {"page": 2, "size": 3})
        assert [i["auditLog"]["id"] for i in page2["results"]] == [i["auditLog"]["id"] for i in desc[3:6]]
        assert page2["total"] == 7
        first = search(live, {"size": 4})
        rest = search(live, {"size": 4, "cursor": first["cursor"]})
        assert [i["auditLog"]["id"] for i in first["results"] + rest["results"]] == [i["auditLog"]["id"] for i in desc]
        assert rest["cursor"] is None

    def test_facets(self, live: Live) -> None:
        """facets=true adds counts by resource type, action, actor type and a timeline."""
        facets = search(live, {"facets": "true", "interval": "hour"})["facets"]
        assert facets["resource_type"] == {"FLOW": 3, "EXECUTION": 2, "SECRET": 1, "USER": 1}
        assert facets["actor_type"] == {"USER": 4, "SERVICE_ACCOUNT": 2, "SYSTEM": 1}
        assert sum(b["count"] for b in facets["timeline"]) == 7

    def test_patches_and_user(self, live: Live) -> None:
        """appliedPatch/revertPatch are RFC 6902 between before and after; SYSTEM has a null user."""
        answer = search(live, {"filters[details][EQUALS][revision]": "2", "filters[type][EQUALS]": "UPDATE"})
        (item,) = answer["results"]
        log = item["auditLog"]
        assert log["appliedPatch"] == [{"op": "add", "path": "/description", "value": "x"}]
        assert log["revertPatch"] == [{"op": "remove", "path": "/description"}]
        assert log["detail"]["revision"] == 2 and log["ipAddress"] == "10.0.0.7"
        assert item["user"]["type"] == "STANDARD" and item["user"]["email"] == "anna@acme.io"
        (system,) = search(live, {"filters[userId][EQUALS]": "scheduler"})["results"]
        assert system["user"] is None
        (sa,) = search(live, {"filters[id][EQUALS]": "ex2"})["results"]
        assert sa["user"]["type"] == "SERVICE_ACCOUNT" and sa["user"]["email"] == ""

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"filters[nope][EQUALS]": "x"}, "filters[nope][EQUALS]"),
            ({"filters[namespace][WHAT]": "x"}, "filters[namespace][WHAT]"),
            ({"filters[startDate][GREATER_THAN]": "yesterday-ish"}, "filters[startDate][GREATER_THAN]"),
            ({"q": 'unterminated "quote'}, "q"),
            ({"sort": "userId:asc"}, "sort"),
            ({"page": "0"}, "page"),
            ({"cursor": "garbage!"}, "cursor"),
        ],
    )
    def test_bad_filters_name_the_field(self, live: Live, params: dict[str, str], field: str) -> None:
        """A malformed filter is a 4xx whose answer names the offending parameter."""
        with live.client("auditor@acme") as c:
            r = c.get(f"/api/v1/{TENANT}/auditlogs/search", params=params)
        assert r.status_code in (400, 422)
        assert r.json()["field"] == field


@pytest.mark.usefixtures("seeded")
class TestOtherRoutes:
    def test_export_csv_streams_every_match(self, live: Live) -> None:
        """export answers text/csv with a header and one row per matching entry."""
        with live.client("auditor@acme") as c:
            r = c.get(f"/api/v1/{TENANT}/auditlogs/export", params={"filters[resources][IN]": "FLOW"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 3 and {row["resourceType"] for row in rows} == {"FLOW"}
        assert all(row["tenantId"] == TENANT for row in rows)

    def test_export_ndjson_is_our_full_shape(self, live: Live) -> None:
        """export?format=ndjson answers one full event per line."""
        with live.client("auditor@acme") as c:
            r = c.get(f"/api/v1/{TENANT}/auditlogs/export", params={"format": "ndjson"})
        lines = [orjson.loads(line) for line in r.text.splitlines()]
        assert len(lines) == 7 and all("leaf_hash" in e and e["tenant"] == TENANT for e in lines)

    def test_find(self, live: Live) -> None:
        """find answers the latest ITEM matching resource, type and details; 404 when none."""
        with live.client("auditor@acme") as c:
            r = c.post(f"/api/v1/{TENANT}/auditlogs/find",
                       json={"resource": "FLOW", "detail": {"id": "hello", "revision": 1}})
            assert r.status_code == 200
            check_item(r.json())
            assert r.json()["auditLog"]["type"] == "CREATE"
            r = c.post(f"/api/v1/{TENANT}/auditlogs/find", json={"resource": "FLOW", "detail": {"id": "nope"}})
            assert r.status_code == 404
            r = c.post(f"/api/v1/{TENANT}/auditlogs/find", json={"resource": "flow!"})
            assert r.status_code == 422 and r.json()["field"] == "resource"

    def test_history(self, live: Live, seeded: dict[str, Any]) -> None:
        """history/{detailId} lists every entry of that resource id, newest first, as {id, date, username}."""
        with live.client("auditor@acme") as c:
            r = c.get(f"/api/v1/{TENANT}/auditlogs/history/hello")
        assert r.status_code == 200
        entries = r.json()
        assert [e["id"] for e in entries] == [seeded["ids"][1], seeded["ids"][0]]
        assert all(set(e) == {"id", "date", "username"} and e["username"] == "anna@acme.io" for e in entries)

    def test_diff(self, live: Live, seeded: dict[str, Any]) -> None:
        """{id}/diff answers before and after as texts; previousId compares with an earlier entry."""
        create, update = seeded["ids"][0], seeded["ids"][1]
        with live.client("auditor@acme") as c:
            one = c.get(f"/api/v1/{TENANT}/auditlogs/{update}/diff").json()
            assert isinstance(one["before"], str) and '"description": "x"' in one["after"]
            assert '"description"' not in one["before"]
            two = c.get(f"/api/v1/{TENANT}/auditlogs/{update}/diff", params={"previousId": create}).json()
            assert '"description"' not in two["before"] and '"description": "x"' in two["after"]
            created = c.get(f"/api/v1/{TENANT}/auditlogs/{create}/diff").json()
            assert created["before"] == ""
            yaml = c.get(f"/api/v1/{TENANT}/auditlogs/{seeded['ids'][6]}/diff").json()
            assert yaml == {"before": "id: report\nrevision: 1\n", "after": "id: report\nrevision: 2\n"}

    def test_cross_tenant_routes_for_instance_admins(self, live: Live, seeded: dict[str, Any]) -> None:
        """/api/v1/auditlogs/search, export and diff see every tenant for an admin scoped '*'."""
        with live.client("admin@*") as c:
            answer = c.get("/api/v1/auditlogs/search", params={"filters[id][EQUALS]": "hello", "size": 50}).json()
            check_page(answer)
            assert {i["auditLog"]["tenantId"] for i in answer["results"]} == {"acme", "globex"}
            r = c.get("/api/v1/auditlogs/export", params={"filters[id][EQUALS]": "hello"})
            assert len(list(csv.DictReader(io.StringIO(r.text)))) == 3
            assert c.get(f"/api/v1/auditlogs/{seeded['ids'][1]}/diff").status_code == 200

    def test_get_one_event(self, live: Live, seeded: dict[str, Any]) -> None:
        """GET .../auditlogs/{id} answers our full shape, with the ingesting token and IP recorded."""
        with live.client("auditor@acme") as c:
            event = c.get(f"/api/v1/{TENANT}/auditlogs/{seeded['ids'][0]}").json()
        assert event["id"] == seeded["ids"][0] and event["seq"] == 0
        assert event["source"]["ip"] == "127.0.0.1" and event["source"]["token"].startswith("tok_")

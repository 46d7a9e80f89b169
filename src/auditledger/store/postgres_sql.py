"""Query -> PostgreSQL SQL, and portable ``?`` SQL -> psycopg's ``%s``.

The translation mirrors :func:`auditledger.store.sqlite.where_clause` term by
term, so both stores return the same rows for the same :class:`Query`; only
the spelling differs (``strpos`` for ``instr``, ``right`` for ``substr(x, -n)``,
``TRUE`` for ``1``). Every value is bound, never interpolated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from auditledger.errors import StoreError
from auditledger.model import to_micros
from auditledger.query import Field, Match, Query, Term

FIELD_COLUMNS = {
    Field.RESOURCE: "e.resource_type",
    Field.ACTION: "e.action",
    Field.ACTOR: "e.actor_id",
    Field.ACTOR_TYPE: "e.actor_type",
    Field.OUTCOME: "e.outcome",
    Field.ID: "e.id",
}
# Text columns use the "C" collation, so a prefix is the byte range [p, p + U+10FFFF).
_MAX_CHAR = "\U0010ffff"

# The distinct details keys of a tenant, by skipping along the primary key.
DETAIL_KEYS = """
WITH RECURSIVE k(key) AS (
    SELECT min(key) FROM details WHERE tenant = %(t)s
    UNION ALL
    SELECT (SELECT min(d.key) FROM details d WHERE d.tenant = %(t)s AND d.key > k.key) FROM k WHERE k.key IS NOT NULL
) SELECT key FROM k WHERE key IS NOT NULL"""


def has_text(query: Query) -> bool:
    return any(t.field is Field.TEXT for t in query.terms) or any(has_text(q) for q in query.any_of)


Ctes = list[tuple[str, list[Any]]]
# Whether a details condition (SQL over ``details d``, its params) matches many of the tenant's rows.
Dense = Callable[[str, list[Any]], bool]


def dense_count(cond: str) -> str:
    """The query behind a :data:`Dense` answer: matches of ``cond`` in one tenant, counted up to a limit."""
    return f"SELECT count(*) FROM (SELECT 1 FROM details d WHERE d.tenant = %s AND {cond} LIMIT %s) s"


def details_count(tenant: str, query: Query, cap: int) -> tuple[str, list[Any]] | None:
    """For a query that is one details term: a count of it over ``details`` alone, or None.

    An event has one value per key, so it is one details entry: no events row need be read
    (at 1M events, ``namespace:company`` counted to 10,000 through events took ~400 ms, now
    4 ms). The term's values are made disjoint first (``a`` covers ``a.b``), so that their
    index ranges can be counted one after the other; a namespace is its value and its children.
    """
    if query.after is not None or query.before is not None or query.any_of or len(query.terms) != 1:
        return None
    term = query.terms[0]
    if term.field is not Field.DETAIL or term.negate:
        return None
    values = sorted(set(term.values))
    if term.match in (Match.CONTAINS, Match.SUFFIX):
        if len(values) > 1:
            return None  # whether two such values match the same entries is not known here
        parts = [_match("d.value", term)]
    elif term.match is Match.EXACT:
        parts = [("d.value = %s", [v]) for v in values]
    else:
        # Sorted, a value that another covers comes after it: keep only the uncovered ones.
        gap = "." if term.match is Match.NAMESPACE else ""
        kept: list[str] = []
        for v in values:
            if not any(v == k or v.startswith(k + gap) for k in kept):
                kept.append(v)
        parts = []
        for v in kept:
            if term.match is Match.NAMESPACE:
                parts.append(("d.value = %s", [v]))
            parts.append(("d.value >= %s AND d.value < %s", [v + gap, v + gap + _MAX_CHAR]))
    each = "SELECT 1 FROM details d WHERE d.tenant = %s AND d.key = %s AND "
    return (
        f"SELECT count(*) FROM ({' UNION ALL '.join(each + c for c, _ in parts)} LIMIT %s) s",
        [*(p for _, ps in parts for p in (tenant, term.key, *ps)), cap + 1],
    )


class _Context:
    """What every term of one translation needs besides itself."""

    def __init__(
        self,
        tenant: str | None,
        keys: Sequence[str],
        ctes: Ctes | None,
        dense: Dense | None,
        *,
        probe: bool = True,
        top: bool = True,
    ) -> None:
        self.tenant = tenant
        self.keys = keys
        self.ctes = ctes
        self.dense = dense if tenant is not None else None
        self.probe = probe  # test frequent details terms per row (a first page), or collect them (a count)
        self.top = top  # terms here are ANDed with the whole query, not inside an OR group

    def in_group(self) -> _Context:
        return _Context(self.tenant, self.keys, self.ctes, self.dense, probe=self.probe, top=False)


def where_clause(
    tenant: str | None,
    query: Query,
    keys: Sequence[str] = (),
    ctes: Ctes | None = None,
    dense: Dense | None = None,
    *,
    probe: bool = True,
) -> tuple[str, list[Any]]:
    """The WHERE text (``%s`` placeholders) and parameters of ``query`` over ``events e``.

    With ``ctes``, free words' details lookups are appended there as (SELECT, params) to be
    run once as ``_w0, _w1 ...`` (see :func:`filtered`); otherwise they are inline subqueries.
    With ``dense`` (one tenant), a details term it calls frequent is tested per row instead
    (unless not ``probe``), and a free word it calls rare is looked up by index.
    """
    parts: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        parts.append("e.tenant = %s")
        params.append(tenant)
    _conjunction(_Context(tenant, keys, ctes, dense, probe=probe), query, parts, params)
    return (" AND ".join(parts) or "TRUE"), params


def filtered(
    tenant: str | None, query: Query, keys: Sequence[str] = (), dense: Dense | None = None, *, probe: bool = True
) -> tuple[str, str, list[Any]]:
    """``(WITH prefix, WHERE text, params)``: free words' lookups materialised once.

    A free word is an OR of a details lookup and actor columns, which PostgreSQL cannot turn
    into a join: inline, its hashed subquery would be rebuilt for every monthly partition.
    """
    ctes: Ctes = []
    where, params = where_clause(tenant, query, keys, ctes, dense, probe=probe)
    if not ctes:
        return "", where, params
    prefix = "WITH " + ", ".join(f"_w{i} AS MATERIALIZED ({sql})" for i, (sql, _) in enumerate(ctes)) + " "
    return prefix, where, [p for _, cte_params in ctes for p in cte_params] + params


def _conjunction(ctx: _Context, query: Query, parts: list[str], params: list[Any]) -> None:
    if query.after is not None:
        parts.append("e.date >= %s")
        params.append(to_micros(query.after))
    if query.before is not None:
        parts.append("e.date < %s")
        params.append(to_micros(query.before))
    for term in query.terms:
        sql, term_params = _term(ctx, term, joinable=ctx.top and not term.negate)
        # NOT of a NULL comparison (actor_name) is NULL, which would drop the row.
        parts.append(f"NOT coalesce(({sql}), FALSE)" if term.negate else sql)
        params += term_params
    if query.any_of:
        alternatives = []
        for sub in query.any_of:
            sub_parts: list[str] = []
            _conjunction(ctx.in_group(), sub, sub_parts, params)
            alternatives.append("(" + (" AND ".join(sub_parts) or "TRUE") + ")")
        parts.append("(" + " OR ".join(alternatives) + ")")


def _match(column: str, term: Term) -> tuple[str, list[Any]]:
    values = list(term.values)
    if term.match is Match.EXACT:
        if len(values) == 1:
            return f"{column} = %s", values
        return f"{column} = ANY(%s)", [values]
    alternatives: list[str] = []
    params: list[Any] = []
    for value in values:
        if term.match is Match.PREFIX:
            alternatives.append(f"({column} >= %s AND {column} < %s)")
            params += [value, value + _MAX_CHAR]
        elif term.match is Match.NAMESPACE:
            # The outer range holds both alternatives and, unlike an OR, bounds an index scan.
            alternatives.append(
                f"({column} >= %s AND {column} < %s AND ({column} = %s OR ({column} >= %s AND {column} < %s)))"
            )
            params += [value, value + _MAX_CHAR, value, value + ".", value + "." + _MAX_CHAR]
        elif term.match is Match.CONTAINS:
            alternatives.append(f"strpos({column}, %s) > 0")
            params.append(value)
        else:  # SUFFIX; right() counts characters, as SQLite's substr does
            alternatives.append(f"right({column}, %s) = %s")
            params += [len(value), value]
    return "(" + " OR ".join(alternatives) + ")", params


def _details_in(
    ctx: _Context,
    cond: str,
    params: list[Any],
    match: Match,
    *,
    joinable: bool,
    word: bool = False,
    counted_by: tuple[str, list[Any]] | None = None,
    probed_by: tuple[str, list[Any]] | None = None,
) -> tuple[str, list[Any]]:
    """Rows with a details entry matching ``cond``: checked per row when frequent, else collected.

    Collecting every match of a frequent value costs more than the whole first page, which a
    newest-first scan fills after a few probes. The planner's own estimate is not to be relied
    on: it takes a namespace (a range) or a free word (ORed with actor columns) for rare and
    hashes every match, once per monthly partition (seconds at 1M events). So the matches are
    counted first, up to ``dense_at`` (not for an exact value ANDed with the query, which the
    planner does estimate). Rare ones are collected: a ``joinable`` term (ANDed with the whole
    query) as a semi-join; a free word once, in a materialised CTE. ``counted_by`` is the
    condition to count instead of ``cond``: a superset of it that is one index range.
    ``probed_by`` is the same condition as ``cond``, to test per row in another spelling.
    """
    if ctx.tenant is None:
        return f"(e.tenant, e.seq) IN (SELECT d.tenant, d.seq FROM details d WHERE {cond})", params
    collect = f"SELECT d.seq FROM details d WHERE d.tenant = %s AND {cond}"
    if joinable and match is Match.EXACT:
        # An exact value ANDed with the query: a semi-join whose value statistics PostgreSQL
        # does estimate well (it probes per row when frequent), so no count is needed.
        return f"e.seq IN ({collect})", [ctx.tenant, *params]
    # Only an index range is cheap to count; *x* and *x are left to the planner.
    counted = ctx.dense is not None and match not in (Match.CONTAINS, Match.SUFFIX)
    frequent = counted and ctx.dense is not None and ctx.dense(*(counted_by or (cond, params)))
    if frequent and ctx.probe:
        # OFFSET 0 keeps the probe per row: without it PostgreSQL may turn the EXISTS into a
        # hash of every match (a scan of the whole details table) built once per partition.
        test, test_params = probed_by or (cond, params)
        probe = f"SELECT 1 FROM details d WHERE d.tenant = e.tenant AND d.seq = e.seq AND {test} OFFSET 0"
        return f"EXISTS ({probe})", test_params
    if word and not joinable and ctx.ctes is not None:
        ctx.ctes.append((collect, [ctx.tenant, *params]))
        name = f"_w{len(ctx.ctes) - 1}"
        if counted and not frequent:
            # Known to be few: as an array the seqs are an index condition, which PostgreSQL can
            # OR with the actor columns' indexes instead of filtering every row of the tenant.
            return f"e.seq = ANY(ARRAY(SELECT seq FROM {name}))", []
        return f"e.seq IN (SELECT seq FROM {name})", []  # maybe many: hashed once
    return f"e.seq IN ({collect})", [ctx.tenant, *params]


def _term(ctx: _Context, term: Term, *, joinable: bool) -> tuple[str, list[Any]]:
    if term.field is Field.DETAIL:
        cond, params = _match("d.value", term)
        counted_by = probed_by = None
        if term.match is Match.NAMESPACE:
            # Counted as the prefix range around it (``a`` also counts ``ab``): that is an
            # index-only scan, while the exact OR of ``a`` and ``a.*`` became a BitmapOr that
            # read a heap page per entry (namespace:system at 1M events: 21 ms -> 4 ms). The
            # count only chooses the plan, so a few extra entries never change the rows.
            wide, wide_params = _match("d.value", Term(Field.DETAIL, term.values, key=term.key, match=Match.PREFIX))
            counted_by = (f"d.key = %s AND {wide}", [term.key, *wide_params])
            # Per row, the children test is left() = 'a.', which no index serves: so PostgreSQL
            # reads the row's few details by (tenant, seq), one lookup. Spelt as ranges, the
            # exact value and its children were two index probes (or bitmap scans) per row
            # (namespace:system, ~3,500 rows for a page: 28-39 ms -> 7-18 ms in EXPLAIN ANALYZE).
            tests: list[str] = []
            test_params: list[Any] = [term.key]
            for value in term.values:
                tests.append("d.value = %s OR left(d.value, %s) = %s")
                test_params += [value, len(value) + 1, value + "."]
            probed_by = (f"d.key = %s AND ({' OR '.join(tests)})", test_params)
        return _details_in(
            ctx,
            f"d.key = %s AND {cond}",
            [term.key, *params],
            term.match,
            joinable=joinable,
            counted_by=counted_by,
            probed_by=probed_by,
        )
    if term.field is Field.TEXT:
        # As on SQLite: a free word starts a details value, or matches the actor's id or name.
        words = Term(Field.TEXT, term.values, match=Match.PREFIX if term.match is Match.EXACT else term.match)
        cond, params = _match("d.value", words)
        if ctx.keys:
            cond = f"d.key = ANY(%s) AND {cond}"
            params = [list(ctx.keys), *params]
        in_details, details_params = _details_in(ctx, cond, params, words.match, joinable=False, word=True)
        actor_cond, actor_params = _match("e.actor_id", term)
        name_cond, name_params = _match("e.actor_name", term)
        return (
            f"({in_details} OR {actor_cond} OR {name_cond})",
            [*details_params, *actor_params, *name_params],
        )
    return _match(FIELD_COLUMNS[term.field], term)


@functools.lru_cache(maxsize=512)
def portable(sql: str) -> str:
    """``?`` placeholders -> ``%s``, literal ``%`` -> ``%%``; quotes and comments are left alone.

    Only the plain ``?`` is portable: SQLite's ``?NNN`` and ``:name`` forms are refused.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # a doubled quote stays inside
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1].replace("%", "%%"))
            i = j + 1
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(sql[i:j].replace("%", "%%"))
            i = j
            continue
        if c == "?":
            if i + 1 < n and sql[i + 1].isdigit():
                raise StoreError(f"numbered placeholders (?{sql[i + 1]}...) are not portable; use plain ?")
            out.append("%s")
        elif c == "%":
            out.append("%%")
        else:
            out.append(c)
        i += 1
    return "".join(out)

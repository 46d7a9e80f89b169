-- Every (actor id, actor name) each tenant has recorded. A free word is matched against actor ids
-- and names too; with this small table a word that matches few entries (or none) is answered
-- through indexes instead of a pass over every event. The writer adds each batch's
-- distinct actors (a row trigger cost 20 us per event).
-- Derived data: a copy rebuilds it as it appends. An actor without a name has the name ''.
CREATE TABLE actors (
    tenant TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    PRIMARY KEY (tenant, actor_id, actor_name)
) WITHOUT ROWID;

INSERT OR IGNORE INTO actors (tenant, actor_id, actor_name) SELECT DISTINCT tenant, actor_id, coalesce(actor_name, '') FROM events;


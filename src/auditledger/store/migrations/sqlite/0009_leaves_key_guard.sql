-- A leaf's tenant, seq and hash never change, purge or not. That refusal gets a trigger of its own,
-- which SQLite runs only for an UPDATE that sets one of those columns; leaves_no_update keeps the
-- purge gate alone. A purge batch lifts the gate triggers for its transaction (a row trigger makes
-- every UPDATE and DELETE two-pass), and this one stays in force: purge sets `purged` only.
DROP TRIGGER leaves_no_update;
CREATE TRIGGER leaves_no_update BEFORE UPDATE ON leaves
WHEN (SELECT open FROM purge_gate) = 0
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER leaves_key_no_update BEFORE UPDATE OF tenant, seq, hash ON leaves
WHEN NEW.hash IS NOT OLD.hash OR NEW.seq IS NOT OLD.seq OR NEW.tenant IS NOT OLD.tenant
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;

-- Shipper offsets: the next seq each exporter of each shipper (offsetKey) will send.
CREATE TABLE ship_offsets (
    tenant TEXT NOT NULL,
    offset_key TEXT NOT NULL,
    exporter TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    shipped INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, offset_key, exporter)
) WITHOUT ROWID;

-- Shipper offsets: the next seq each exporter of each shipper (offsetKey) will send.
CREATE TABLE ship_offsets (
    tenant TEXT NOT NULL,
    offset_key TEXT NOT NULL,
    exporter TEXT NOT NULL,
    next_seq BIGINT NOT NULL,
    shipped BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, offset_key, exporter)
);

-- API tokens of the HTTP server. Only the SHA-256 of a token is kept: the
-- token itself is shown once, when it is created. tenant is one tenant id or '*'.
-- Dates are microseconds since the epoch, UTC; revoked_at NULL means active.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('ingest', 'auditor', 'admin')),
    tenant TEXT NOT NULL,
    name TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

-- Poblysh Connectors schema, SQLite flavour.
-- Ids are 16-byte UUID blobs; instants are INTEGER microseconds since the Unix epoch (UTC),
-- so ordering and keyset comparisons are exact; JSON is stored as TEXT.

CREATE TABLE connections (
    id                    BLOB PRIMARY KEY NOT NULL,
    tenant_id             BLOB NOT NULL,
    provider              TEXT NOT NULL,
    external_account_id   TEXT NOT NULL,
    external_account_name TEXT,
    status                TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth', 'revoked', 'error')),
    scopes                TEXT NOT NULL DEFAULT '[]',
    access_token_sealed   BLOB,
    refresh_token_sealed  BLOB,
    token_expires_at      INTEGER,
    last_synced_at        INTEGER,
    last_error            TEXT,
    next_sync_at          INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    UNIQUE (tenant_id, provider, external_account_id)
);
CREATE INDEX connections_by_tenant ON connections (tenant_id, created_at, id);
CREATE INDEX connections_by_tenant_provider ON connections (tenant_id, provider, created_at, id);
CREATE INDEX connections_by_tenant_status ON connections (tenant_id, status, created_at, id);
CREATE INDEX connections_due_for_sync ON connections (status, next_sync_at);
CREATE INDEX connections_due_for_refresh ON connections (status, token_expires_at);

CREATE TABLE oauth_states (
    state_hash           BLOB PRIMARY KEY NOT NULL,
    tenant_id            BLOB NOT NULL,
    provider             TEXT NOT NULL,
    pkce_verifier_sealed BLOB,
    scopes               TEXT NOT NULL DEFAULT '[]',
    redirect_uri         TEXT NOT NULL,
    return_to            TEXT,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    consumed_at          INTEGER
);
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);

CREATE TABLE webhook_events (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant_id        BLOB NOT NULL,
    provider         TEXT NOT NULL,
    connection_id    BLOB REFERENCES connections (id) ON DELETE SET NULL,
    dedupe_key       TEXT NOT NULL,
    event_type       TEXT,
    headers          TEXT NOT NULL DEFAULT '{}',
    body             BLOB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'ignored', 'unmatched', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER,
    last_error       TEXT,
    received_at      INTEGER NOT NULL,
    processed_at     INTEGER,
    UNIQUE (tenant_id, provider, dedupe_key)
);
CREATE INDEX webhook_events_pending ON webhook_events (status, next_attempt_at);

CREATE TABLE signals (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL,
    connection_id BLOB NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    occurred_at   INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    actor         TEXT,
    title         TEXT,
    url           TEXT,
    external_id   TEXT,
    dedupe_key    TEXT NOT NULL,
    payload       TEXT NOT NULL DEFAULT '{}',
    UNIQUE (connection_id, dedupe_key)
);
CREATE INDEX signals_by_tenant ON signals (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX signals_by_tenant_provider ON signals (tenant_id, provider, occurred_at DESC, id DESC);
CREATE INDEX signals_by_tenant_connection ON signals (tenant_id, connection_id, occurred_at DESC, id DESC);
CREATE INDEX signals_by_tenant_kind ON signals (tenant_id, kind, occurred_at DESC, id DESC);

CREATE TABLE sync_jobs (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant_id        BLOB NOT NULL,
    connection_id    BLOB NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    job_type         TEXT NOT NULL CHECK (job_type IN ('full', 'incremental', 'webhook')),
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    scheduled_at     INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX sync_jobs_by_tenant ON sync_jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_status ON sync_jobs (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_provider ON sync_jobs (tenant_id, provider, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_connection ON sync_jobs (tenant_id, connection_id, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_type ON sync_jobs (tenant_id, job_type, created_at DESC, id DESC);
CREATE INDEX sync_jobs_claimable ON sync_jobs (status, scheduled_at);
-- At most one queued or running job per connection.
CREATE UNIQUE INDEX sync_jobs_one_active_per_connection ON sync_jobs (connection_id)
    WHERE status IN ('queued', 'running');

CREATE TABLE sync_cursors (
    connection_id BLOB PRIMARY KEY NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    cursor        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Per-connection leases serializing token refresh across processes sharing the file
-- (PostgreSQL uses advisory locks instead). An expired lease may be taken over.
CREATE TABLE connection_locks (
    connection_id    BLOB PRIMARY KEY NOT NULL,
    owner            BLOB NOT NULL,
    lease_expires_at INTEGER NOT NULL
);

-- Push delivery to Core (Standard Webhooks): endpoints, the durable outbox of events, and one
-- delivery row per event and matching endpoint. Times are microseconds since the Unix epoch.
CREATE TABLE push_endpoints (
    id                          BLOB PRIMARY KEY NOT NULL,
    -- The nil UUID: an operator-wide endpoint receiving every tenant's events.
    tenant_id                   BLOB NOT NULL,
    url                         TEXT NOT NULL,
    description                 TEXT,
    event_types                 TEXT,
    providers                   TEXT,
    kinds                       TEXT,
    include_payload             INTEGER NOT NULL DEFAULT 0,
    secret_sealed               BLOB NOT NULL,
    previous_secret_sealed      BLOB,
    previous_secret_expires_at  INTEGER,
    status                      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason             TEXT,
    failing_since               INTEGER,
    last_success_at             INTEGER,
    last_failure_at             INTEGER,
    last_failure_status         INTEGER,
    last_failure_error          TEXT,
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
);
CREATE INDEX push_endpoints_by_tenant ON push_endpoints (tenant_id, created_at, id);

-- The outbox. `pos` orders rows as inserted; `seq` is assigned later by the sequencer, in
-- commit order, and dispatch reads only sequenced rows (see src/push/mod.rs).
CREATE TABLE push_events (
    pos           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    seq           INTEGER UNIQUE,
    fanned_out    INTEGER NOT NULL DEFAULT 0,
    tenant_id     BLOB NOT NULL,
    connection_id BLOB NOT NULL,
    provider      TEXT NOT NULL,
    kind          TEXT,
    event_type    TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX push_events_unsequenced ON push_events (pos) WHERE seq IS NULL;
CREATE INDEX push_events_to_fan_out ON push_events (seq) WHERE NOT fanned_out AND seq IS NOT NULL;
CREATE INDEX push_events_by_tenant ON push_events (tenant_id, created_at);
CREATE INDEX push_events_by_time ON push_events (created_at, seq);

CREATE TABLE push_deliveries (
    id                 BLOB PRIMARY KEY NOT NULL,
    endpoint_id        BLOB NOT NULL REFERENCES push_endpoints (id) ON DELETE CASCADE,
    event_id           BLOB NOT NULL REFERENCES push_events (id) ON DELETE CASCADE,
    tenant_id          BLOB NOT NULL,
    connection_id      BLOB NOT NULL,
    seq                INTEGER NOT NULL,
    event_type         TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER NOT NULL,
    lease_owner        BLOB,
    lease_expires_at   INTEGER,
    last_status_code   INTEGER,
    last_error         TEXT,
    last_latency_ms    INTEGER,
    last_response_body TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    completed_at       INTEGER
);
CREATE INDEX push_deliveries_heads ON push_deliveries (endpoint_id, connection_id, seq, id)
    WHERE status = 'pending';
CREATE INDEX push_deliveries_due ON push_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX push_deliveries_by_endpoint ON push_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX push_deliveries_by_tenant ON push_deliveries (tenant_id);
CREATE INDEX push_deliveries_by_event ON push_deliveries (event_id);

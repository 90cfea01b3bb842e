-- Provider-side subscriptions (watch channels, dynamic webhooks, mailbox watches), one row per
-- connection and watched resource, and the job lane that opens and renews them: a connection
-- has at most one queued or running job per lane, so a subscription job never waits behind,
-- nor merges with, a sync. SQLite cannot change a CHECK constraint, so sync_jobs is rebuilt.
CREATE TABLE subscriptions (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL,
    connection_id BLOB NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    resource      TEXT NOT NULL,
    external_id   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'active', 'failed', 'closed')),
    expires_at    INTEGER,
    renew_at      INTEGER,
    state         TEXT NOT NULL DEFAULT '{}',
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (connection_id, resource)
);
CREATE INDEX subscriptions_by_tenant_connection ON subscriptions (tenant_id, connection_id, created_at);
CREATE INDEX subscriptions_due ON subscriptions (renew_at) WHERE status IN ('pending', 'active', 'failed');

CREATE TABLE sync_jobs_next (
    id               BLOB PRIMARY KEY NOT NULL,
    tenant_id        BLOB NOT NULL,
    connection_id    BLOB NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    job_type         TEXT NOT NULL
                     CHECK (job_type IN ('full', 'incremental', 'webhook', 'subscription')),
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
    updated_at       INTEGER NOT NULL,
    follow_up        TEXT
                     CHECK (follow_up IN ('full', 'incremental', 'webhook', 'subscription')),
    lane             TEXT NOT NULL DEFAULT 'sync' CHECK (lane IN ('sync', 'subscription'))
);
INSERT INTO sync_jobs_next (id, tenant_id, connection_id, provider, job_type, status, attempts,
    max_attempts, scheduled_at, started_at, finished_at, lease_owner, lease_expires_at, error,
    created_at, updated_at, follow_up, lane)
SELECT id, tenant_id, connection_id, provider, job_type, status, attempts, max_attempts,
    scheduled_at, started_at, finished_at, lease_owner, lease_expires_at, error, created_at,
    updated_at, follow_up, 'sync'
FROM sync_jobs;
DROP TABLE sync_jobs;
ALTER TABLE sync_jobs_next RENAME TO sync_jobs;
CREATE INDEX sync_jobs_by_tenant ON sync_jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_status ON sync_jobs (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_provider ON sync_jobs (tenant_id, provider, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_connection ON sync_jobs (tenant_id, connection_id, created_at DESC, id DESC);
CREATE INDEX sync_jobs_by_tenant_type ON sync_jobs (tenant_id, job_type, created_at DESC, id DESC);
CREATE INDEX sync_jobs_claimable ON sync_jobs (status, scheduled_at);
-- At most one queued or running job per connection and lane.
CREATE UNIQUE INDEX sync_jobs_one_active_per_connection ON sync_jobs (connection_id, lane)
    WHERE status IN ('queued', 'running');

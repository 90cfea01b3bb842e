-- Provider-side subscriptions (watch channels, dynamic webhooks, mailbox watches), one row per
-- connection and watched resource, and the job lane that opens and renews them: a connection
-- has at most one queued or running job per lane, so a subscription job never waits behind,
-- nor merges with, a sync.
CREATE TABLE subscriptions (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    connection_id UUID NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    resource      TEXT NOT NULL,
    external_id   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'active', 'failed', 'closed')),
    expires_at    TIMESTAMPTZ,
    renew_at      TIMESTAMPTZ,
    state         JSONB NOT NULL DEFAULT '{}',
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (connection_id, resource)
);
CREATE INDEX subscriptions_by_tenant_connection ON subscriptions (tenant_id, connection_id, created_at);
CREATE INDEX subscriptions_due ON subscriptions (renew_at) WHERE status IN ('pending', 'active', 'failed');

ALTER TABLE sync_jobs DROP CONSTRAINT sync_jobs_job_type_check;
ALTER TABLE sync_jobs ADD CONSTRAINT sync_jobs_job_type_check
    CHECK (job_type IN ('full', 'incremental', 'webhook', 'subscription'));
ALTER TABLE sync_jobs DROP CONSTRAINT sync_jobs_follow_up_check;
ALTER TABLE sync_jobs ADD CONSTRAINT sync_jobs_follow_up_check
    CHECK (follow_up IN ('full', 'incremental', 'webhook', 'subscription'));
ALTER TABLE sync_jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'sync'
    CHECK (lane IN ('sync', 'subscription'));
DROP INDEX sync_jobs_one_active_per_connection;
-- At most one queued or running job per connection and lane.
CREATE UNIQUE INDEX sync_jobs_one_active_per_connection ON sync_jobs (connection_id, lane)
    WHERE status IN ('queued', 'running');

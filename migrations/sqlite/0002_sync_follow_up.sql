-- The job type to queue when a running job succeeds: a sync was requested while it ran, after
-- it may have read its last page. NULL when none was.
ALTER TABLE sync_jobs ADD COLUMN follow_up TEXT
    CHECK (follow_up IN ('full', 'incremental', 'webhook'));

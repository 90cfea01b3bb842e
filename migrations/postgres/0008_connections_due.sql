-- The scheduler asks for the active connections whose next sync is unset or past, longest
-- waiting first (connections_due_for_sync in src/store/postgres/queue.rs). Written as one
-- range on COALESCE(next_sync_at, '-infinity') (an unset next sync sorts first), this index
-- answers it in its own order: the scan stops after the batch, or at the first connection not
-- yet due, however many connections there are and however many of them are due.
CREATE INDEX connections_due
    ON connections (status, (COALESCE(next_sync_at, '-infinity'::timestamptz)), id);

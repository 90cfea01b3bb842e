-- The scheduler asks for the active connections whose next sync is unset or past, longest
-- waiting first (connections_due_for_sync in src/store/sqlite/queue.rs). Written as one range
-- on coalesce(next_sync_at, 0) (an unset next sync sorts first; instants are microseconds
-- since 1970), this index answers it in its own order: the scan stops after the batch, or at
-- the first connection not yet due, however many connections there are and however many of
-- them are due.
CREATE INDEX connections_due ON connections (status, coalesce(next_sync_at, 0), id);

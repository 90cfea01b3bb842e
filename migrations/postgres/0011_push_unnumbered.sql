-- The events the sequencer has yet to number, by `pos`. An event is inserted with `seq = -pos`
-- (not numbered: readers take only `seq > 0`) and its `pos` queued here in the same
-- transaction; the sequencer empties this table and numbers what it took. It replaces, for the
-- events of this release, the partial index `push_events_unsequenced`: that index keeps an
-- entry for every numbered event until `push_events` is vacuumed, so a pass that looked for
-- the events still to number read all of them, which grows with the outbox. This table holds
-- only the events of the last minute or so (autovacuum empties it) and has no index to keep.
-- Events of the previous release (inserted with `seq` NULL, not queued) are still found
-- through `push_events_unsequenced`, which no event of this release enters.
CREATE TABLE push_events_unnumbered (
    pos BIGINT NOT NULL
);

-- The outbox's floor: one row numbered 0, so the highest `seq` is never below 0 even when every
-- other event waits unnumbered (at `-pos`). An instance of the release before numbers the events
-- it inserted after `MAX(seq)`, so with this row they get numbers above 0 and never meet the
-- negative ones. No reader takes it: this release reads only `seq > 0`, the release before reads
-- past watermarks and cursors of 0 or more, and replays from an instant, which the row's
-- `created_at` (the smallest there is) precedes. It is no tenant's and no connection's. The
-- release before may delete it as expired; this release's sequencer puts it back.
INSERT INTO push_events (id, seq, fanned_out, tenant_id, connection_id, provider, kind,
                         event_type, data, created_at)
VALUES ('00000000-0000-0000-0000-000000000000', 0, TRUE,
        '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000',
        '', NULL, 'outbox.floor', '{}', -9223372036854775808)
ON CONFLICT DO NOTHING;

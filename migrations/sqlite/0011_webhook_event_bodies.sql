-- Each stored delivery's headers and body, apart from its row in `webhook_events`.
--
-- The inbox updates a delivery's row twice after storing it: its claim sets the lease, its
-- outcome the status. SQLite rewrites a whole record whenever its size changes, and these
-- updates change it, so with the body inside (7 KB is a usual delivery) each update wrote the
-- body's overflow pages into the WAL again: about 8 KB a delivery per update. Kept here, the
-- body is written once; the row the inbox updates is a few hundred bytes.
--
-- The trigger moves them as each delivery is inserted, in the inserting statement, so a group
-- of deliveries stays one `INSERT ... ON CONFLICT DO NOTHING` and a delivery skipped as a
-- duplicate writes nothing here. Rows stored before this migration keep theirs inline: readers
-- take this table's headers and body when it has them, else the row's.
CREATE TABLE webhook_event_bodies (
    id      BLOB PRIMARY KEY NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    headers TEXT NOT NULL,
    body    BLOB NOT NULL
);

CREATE TRIGGER webhook_events_body_apart AFTER INSERT ON webhook_events
BEGIN
    INSERT INTO webhook_event_bodies (id, headers, body) VALUES (NEW.id, NEW.headers, NEW.body);
    UPDATE webhook_events SET headers = '{}', body = x'' WHERE rowid = NEW.rowid;
END;

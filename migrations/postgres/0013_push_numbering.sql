-- The highest `seq` ever given to a push event, kept apart from the events. Numbering after
-- the highest `seq` still stored gave a number again once the newest events were deleted (by
-- retention after a quiet spell longer than it keeps events, a deleted connection, an erased
-- tenant): at or below the fan-out watermark, such an event was never pushed, and a live
-- stream past it never read it. A transaction numbering events (under the outbox lock, see
-- src/push/mod.rs) numbers after the greater of this and the highest `seq` stored (an instance
-- of an earlier release numbers without this row) and moves it to its last number.
CREATE TABLE push_numbering (
    id       SMALLINT PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);

INSERT INTO push_numbering (id, last_seq) VALUES (1, GREATEST(
    COALESCE((SELECT MAX(seq) FROM push_events WHERE seq > 0), 0),
    COALESCE((SELECT through_seq FROM push_fan_out), 0)));

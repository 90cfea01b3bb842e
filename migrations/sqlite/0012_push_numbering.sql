-- The highest `seq` ever given to a push event, kept apart from the events. Numbering after
-- the highest `seq` still stored gave a number again once the newest events were deleted (by
-- retention after a quiet spell longer than it keeps events, a deleted connection, an erased
-- tenant): at or below the fan-out watermark, such an event was never pushed, and a live
-- stream past it never read it. A transaction numbering events numbers after the greater of
-- this and the highest `seq` stored, and moves it to its last number (src/push/mod.rs).
CREATE TABLE push_numbering (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_seq INTEGER NOT NULL
);

INSERT INTO push_numbering (id, last_seq) VALUES (1, MAX(
    COALESCE((SELECT MAX(seq) FROM push_events WHERE seq > 0), 0),
    COALESCE((SELECT through_seq FROM push_fan_out), 0)));

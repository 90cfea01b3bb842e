-- Fan-out by watermark (src/push/mod.rs): instead of marking every event `fanned_out` (a
-- rewrite of the whole row, payload included), one row remembers how far fan-out has gone.
-- Every event with `seq <= through_seq` has been fanned out. From this release on SQLite numbers
-- events as they are inserted, so first every event still unnumbered is numbered, in insertion
-- order after the highest `seq`, as the sequencer would have done.
UPDATE push_events SET seq = numbered.n
    FROM (SELECT pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events)
          + ROW_NUMBER() OVER (ORDER BY pos) AS n
          FROM push_events WHERE seq IS NULL) AS numbered
    WHERE push_events.pos = numbered.pos;

CREATE TABLE push_fan_out (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    through_seq INTEGER NOT NULL
);

-- The fanned-out events are a prefix in `seq` order: the watermark stops before the first one
-- that is not, or is the highest `seq` when every event is fanned out.
INSERT INTO push_fan_out (id, through_seq) VALUES (1, COALESCE(
    (SELECT MIN(seq) - 1 FROM push_events WHERE NOT fanned_out AND seq IS NOT NULL),
    (SELECT MAX(seq) FROM push_events),
    0));

-- `fanned_out` stays, and so does its partial index `push_events_to_fan_out` (an older release
-- reads them); events inserted from now on are marked, so they never enter that index.

-- Fan-out by watermark (src/push/mod.rs): instead of marking every event `fanned_out` (an
-- update, a dead row, per event), one row remembers how far fan-out has gone. Every event with
-- `seq <= through_seq` has been fanned out. Events not yet numbered are numbered later by the
-- sequencer, above every `seq` here, so they are past the watermark.
CREATE TABLE push_fan_out (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    through_seq BIGINT NOT NULL
);

-- The fanned-out events are a prefix in `seq` order: the watermark stops before the first one
-- that is not, or is the highest `seq` when every event is fanned out.
INSERT INTO push_fan_out (id, through_seq) VALUES (1, COALESCE(
    (SELECT MIN(seq) - 1 FROM push_events WHERE NOT fanned_out AND seq IS NOT NULL),
    (SELECT MAX(seq) FROM push_events),
    0));

-- `fanned_out` stays, and so does its partial index `push_events_to_fan_out`: an instance of
-- the previous release fans out through them. This release inserts events with `fanned_out`
-- set, so they never enter that index and cost it nothing.

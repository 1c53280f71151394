-- eventbus outbox as a pull feed, SQLite.
--
-- Idempotent, like 0001. eventbus::outbox::migrate runs both files.
--
-- SQLite serializes writers, so `seq` (the rowid) order is commit order and
-- the feed serves rows by `seq`. A rowid is max(rowid) + 1, so the relay's
-- retention cleanup never deletes the newest row (a deleted maximum would be
-- handed out again, behind cursors already served).

-- The highest seq ever deleted from the outbox (by the relay's retention
-- cleanup or by anyone else): a feed cursor below it may have lost rows after
-- it, and is answered with "expired" instead of a silent gap.
CREATE TABLE IF NOT EXISTS eventbus_outbox_horizon (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL
);

CREATE TRIGGER IF NOT EXISTS eventbus_outbox_horizon
AFTER DELETE ON eventbus_outbox
BEGIN
    INSERT INTO eventbus_outbox_horizon (one, seq) VALUES (1, OLD.seq)
    ON CONFLICT (one) DO UPDATE SET seq = max(seq, excluded.seq);
END;

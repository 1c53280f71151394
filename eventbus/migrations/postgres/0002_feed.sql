-- eventbus outbox as a pull feed, PostgreSQL (>= 13, for xid8).
--
-- Idempotent, like 0001. eventbus::outbox::migrate runs both files.

-- The transaction that wrote the row. `seq` is taken at insert, not at
-- commit: a transaction holding seq 5 may commit after seq 6 is visible. The
-- feed serves rows whose transaction is older than every running one
-- (txid < pg_snapshot_xmin(pg_current_snapshot())), in (txid, seq) order, so
-- a row can never appear behind a cursor already handed out.
--
-- The check keeps a restart from taking ALTER TABLE's exclusive lock once the
-- column exists.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'eventbus_outbox'::regclass
          AND attname = 'txid' AND NOT attisdropped
    ) THEN
        ALTER TABLE eventbus_outbox
            ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
    END IF;
END
$$;

-- The feed's order.
CREATE INDEX IF NOT EXISTS eventbus_outbox_feed ON eventbus_outbox (txid, seq);

-- The highest (txid, seq) ever deleted from the outbox (by the relay's
-- retention cleanup or by anyone else): a feed cursor below it may have lost
-- rows after it, and is answered with "expired" instead of a silent gap.
CREATE TABLE IF NOT EXISTS eventbus_outbox_horizon (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    txid xid8   NOT NULL,
    seq  BIGINT NOT NULL
);

CREATE OR REPLACE FUNCTION eventbus_outbox_horizon() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO eventbus_outbox_horizon AS h (one, txid, seq)
    SELECT true, g.txid, g.seq FROM eventbus_outbox_gone g
    ORDER BY g.txid DESC, g.seq DESC
    LIMIT 1
    ON CONFLICT (one) DO UPDATE SET txid = excluded.txid, seq = excluded.seq
    WHERE (h.txid, h.seq) < (excluded.txid, excluded.seq);
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgname = 'eventbus_outbox_horizon'
          AND tgrelid = 'eventbus_outbox'::regclass
    ) THEN
        CREATE TRIGGER eventbus_outbox_horizon
            AFTER DELETE ON eventbus_outbox
            REFERENCING OLD TABLE AS eventbus_outbox_gone
            FOR EACH STATEMENT EXECUTE FUNCTION eventbus_outbox_horizon();
    END IF;
END
$$;

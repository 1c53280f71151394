-- eventbus transactional outbox, SQLite (>= 3.35).
--
-- Idempotent: safe to run at every start (eventbus::outbox::migrate), or to
-- copy into your own migrations. Times are Unix milliseconds (UTC).

CREATE TABLE IF NOT EXISTS eventbus_outbox (
    -- Insertion order: the relay publishes the rows of one key in this order.
    seq          INTEGER PRIMARY KEY,
    -- The CloudEvents id of the event (a UUIDv7, hyphenated).
    id           TEXT    NOT NULL UNIQUE,
    -- The CloudEvents type, the transport's routing key.
    event_type   TEXT    NOT NULL,
    -- The whole structured-mode CloudEvent, exactly as it goes on the wire.
    payload      TEXT    NOT NULL,
    -- Ordering key (the event's subject by default); NULL: no ordering constraint.
    key          TEXT,
    created_at   INTEGER NOT NULL,
    -- Not published before this time: publish_at, or the backoff after a failed attempt.
    available_at INTEGER NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'published', 'failed')),
    -- Publish attempts made so far (the successful one included).
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    published_at INTEGER
);

-- The relay's claim: due pending rows, oldest first.
CREATE INDEX IF NOT EXISTS eventbus_outbox_due
    ON eventbus_outbox (available_at, seq) WHERE status = 'pending';

-- The relay's per-key ordering check: the earlier pending rows of a key.
CREATE INDEX IF NOT EXISTS eventbus_outbox_key
    ON eventbus_outbox (key, seq) WHERE status = 'pending' AND key IS NOT NULL;

-- Retention cleanup of published rows.
CREATE INDEX IF NOT EXISTS eventbus_outbox_published
    ON eventbus_outbox (published_at) WHERE status = 'published';

-- eventbus webhook subscriptions and their delivery attempts, SQLite.
--
-- Idempotent. eventbus::webhooks::SqlStore::migrate runs it (the outbox's
-- migrate does not: a service without webhooks gets no webhook tables).

-- One row per subscription: the `Subscription` as JSON text (it holds the
-- signing secrets and the sink's credential). `updated_at` is Unix ms.
CREATE TABLE IF NOT EXISTS eventbus_webhook_subscriptions (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Delivery attempts, the newest ATTEMPTS_KEPT (1000) per subscription: each
-- insert deletes what falls past the cap. `at` is Unix ms.
CREATE TABLE IF NOT EXISTS eventbus_webhook_attempts (
    seq             INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    body            TEXT NOT NULL,
    at              INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS eventbus_webhook_attempts_of
    ON eventbus_webhook_attempts (subscription_id, seq);

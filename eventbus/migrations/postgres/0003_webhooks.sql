-- eventbus webhook subscriptions and their delivery attempts, PostgreSQL.
--
-- Idempotent. eventbus::webhooks::SqlStore::migrate runs it (the outbox's
-- migrate does not: a service without webhooks gets no webhook tables).

-- One row per subscription: the `Subscription` as JSON (it holds the
-- signing secrets and the sink's credential: grant this table accordingly).
CREATE TABLE IF NOT EXISTS eventbus_webhook_subscriptions (
    id         TEXT PRIMARY KEY,
    body       JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Delivery attempts, the newest ATTEMPTS_KEPT (1000) per subscription: each
-- insert deletes what falls past the cap.
CREATE TABLE IF NOT EXISTS eventbus_webhook_attempts (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    body            JSON NOT NULL,
    at              TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS eventbus_webhook_attempts_of
    ON eventbus_webhook_attempts (subscription_id, seq);

//! Subscriptions in the outbox database.

use futures::future::BoxFuture;

use super::{ATTEMPTS_KEPT, Attempt, Subscription, SubscriptionStore};
use crate::error::{Error, Result};
use crate::outbox::Database;

/// The PostgreSQL tables of [`SqlStore`]: `migrations/postgres/0003_webhooks.sql`.
pub const POSTGRES_SCHEMA: &str = include_str!("../../migrations/postgres/0003_webhooks.sql");

/// The SQLite tables of [`SqlStore`]: `migrations/sqlite/0003_webhooks.sql`.
pub const SQLITE_SCHEMA: &str = include_str!("../../migrations/sqlite/0003_webhooks.sql");

/// Taken by [`SqlStore::migrate`] on PostgreSQL, so that instances starting
/// at once do not race.
#[cfg(feature = "postgres")]
const MIGRATION_LOCK: i64 = 0x6562_7573_7768_6b73;

/// Subscriptions in the outbox database (PostgreSQL or SQLite): the table
/// `eventbus_webhook_subscriptions` (one row per subscription, its JSON in
/// `body`) and `eventbus_webhook_attempts` (the newest [`ATTEMPTS_KEPT`] per
/// subscription). Run [`SqlStore::migrate`] at start (idempotent).
///
/// Cheap to clone (clones share the pool).
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: Database,
}

impl SqlStore {
    /// A store in `db` (a pool, or the outbox's [`Database`]).
    pub fn new(db: impl Into<Database>) -> Self {
        Self { db: db.into() }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Creates the two tables and their index if they do not exist.
    /// Idempotent and safe to run concurrently from several processes.
    pub async fn migrate(&self) -> Result<()> {
        match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db_error("cannot migrate"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("cannot migrate"))?;
                sqlx::raw_sql(POSTGRES_SCHEMA)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("cannot migrate"))?;
                tx.commit().await.map_err(db_error("cannot migrate"))
            }
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_error("cannot migrate"))?;
                sqlx::raw_sql(SQLITE_SCHEMA)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("cannot migrate"))?;
                tx.commit().await.map_err(db_error("cannot migrate"))
            }
        }
    }
}

/// Wraps a database error with what was being done; a missing table is a
/// set-up mistake with the fix in the message.
fn db_error(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| {
        let missing_table = e.as_database_error().is_some_and(|d| {
            d.code().as_deref() == Some("42P01") || d.message().contains("no such table")
        });
        if missing_table {
            return Error::Config(format!(
                "webhooks: {what}: the table `eventbus_webhook_subscriptions` does not exist; run \
                 `SqlStore::migrate()` at start (or apply eventbus/migrations/*/0003_webhooks.sql) ({e})"
            ));
        }
        Error::Outbox {
            message: format!("webhooks: {what}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::Outbox {
        message: format!("webhooks: a stored {what} is not valid JSON; remove the row or fix it"),
        source: Some(Box::new(e)),
    })
}

fn encode(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Outbox {
        message: "webhooks: cannot encode a subscription or attempt".into(),
        source: Some(Box::new(e)),
    })
}

#[cfg(feature = "sqlite")]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(feature = "postgres")]
mod pg {
    pub const LIST: &str = "SELECT body::text FROM eventbus_webhook_subscriptions ORDER BY id";
    pub const GET: &str = "SELECT body::text FROM eventbus_webhook_subscriptions WHERE id = $1";
    pub const PUT: &str = "INSERT INTO eventbus_webhook_subscriptions (id, body, updated_at) \
         VALUES ($1, $2::json, now()) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at";
    pub const DELETE_ATTEMPTS: &str =
        "DELETE FROM eventbus_webhook_attempts WHERE subscription_id = $1";
    pub const DELETE: &str = "DELETE FROM eventbus_webhook_subscriptions WHERE id = $1";
    pub const RECORD: &str = "INSERT INTO eventbus_webhook_attempts (subscription_id, body, at) \
         VALUES ($1, $2::json, $3)";
    pub const CAP: &str = "DELETE FROM eventbus_webhook_attempts WHERE subscription_id = $1 AND seq <= \
         (SELECT seq FROM eventbus_webhook_attempts WHERE subscription_id = $1 \
          ORDER BY seq DESC OFFSET $2 LIMIT 1)";
    pub const ATTEMPTS: &str = "SELECT body::text FROM eventbus_webhook_attempts \
         WHERE subscription_id = $1 ORDER BY seq DESC LIMIT $2";
}

#[cfg(feature = "sqlite")]
mod lite {
    pub const LIST: &str = "SELECT body FROM eventbus_webhook_subscriptions ORDER BY id";
    pub const GET: &str = "SELECT body FROM eventbus_webhook_subscriptions WHERE id = ?1";
    pub const PUT: &str = "INSERT INTO eventbus_webhook_subscriptions (id, body, updated_at) \
         VALUES (?1, ?2, ?3) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at";
    pub const DELETE_ATTEMPTS: &str =
        "DELETE FROM eventbus_webhook_attempts WHERE subscription_id = ?1";
    pub const DELETE: &str = "DELETE FROM eventbus_webhook_subscriptions WHERE id = ?1";
    pub const RECORD: &str = "INSERT INTO eventbus_webhook_attempts (subscription_id, body, at) \
         VALUES (?1, ?2, ?3)";
    pub const CAP: &str = "DELETE FROM eventbus_webhook_attempts WHERE subscription_id = ?1 AND seq <= \
         (SELECT seq FROM eventbus_webhook_attempts WHERE subscription_id = ?1 \
          ORDER BY seq DESC LIMIT 1 OFFSET ?2)";
    pub const ATTEMPTS: &str = "SELECT body FROM eventbus_webhook_attempts \
         WHERE subscription_id = ?1 ORDER BY seq DESC LIMIT ?2";
}

impl SubscriptionStore for SqlStore {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>>> {
        Box::pin(async move {
            let rows: Vec<String> = match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => sqlx::query_scalar(pg::LIST).fetch_all(pool).await,
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => sqlx::query_scalar(lite::LIST).fetch_all(pool).await,
            }
            .map_err(db_error("cannot list the subscriptions"))?;
            rows.iter().map(|b| decode("subscription", b)).collect()
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Subscription>>> {
        Box::pin(async move {
            let row: Option<String> = match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    sqlx::query_scalar(pg::GET)
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlx::query_scalar(lite::GET)
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                }
            }
            .map_err(db_error("cannot read a subscription"))?;
            row.map(|b| decode("subscription", &b)).transpose()
        })
    }

    fn put<'a>(&'a self, subscription: &'a Subscription) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body = encode(subscription)?;
            match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => sqlx::query(pg::PUT)
                    .bind(&subscription.id)
                    .bind(&body)
                    .execute(pool)
                    .await
                    .map(drop),
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => sqlx::query(lite::PUT)
                    .bind(&subscription.id)
                    .bind(&body)
                    .bind(now_ms())
                    .execute(pool)
                    .await
                    .map(drop),
            }
            .map_err(db_error("cannot store a subscription"))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let what = "cannot delete a subscription";
            let removed = match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    let mut tx = pool.begin().await.map_err(db_error(what))?;
                    sqlx::query(pg::DELETE_ATTEMPTS)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error(what))?;
                    let done = sqlx::query(pg::DELETE)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error(what))?;
                    tx.commit().await.map_err(db_error(what))?;
                    done.rows_affected()
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    let mut tx = pool
                        .begin_with("BEGIN IMMEDIATE")
                        .await
                        .map_err(db_error(what))?;
                    sqlx::query(lite::DELETE_ATTEMPTS)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error(what))?;
                    let done = sqlx::query(lite::DELETE)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error(what))?;
                    tx.commit().await.map_err(db_error(what))?;
                    done.rows_affected()
                }
            };
            Ok(removed > 0)
        })
    }

    fn record<'a>(&'a self, id: &'a str, attempt: &'a Attempt) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let what = "cannot record an attempt";
            let body = encode(attempt)?;
            let kept = ATTEMPTS_KEPT as i64;
            match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    let at = chrono::DateTime::from_timestamp_millis(attempt.at_ms as i64)
                        .unwrap_or_default();
                    sqlx::query(pg::RECORD)
                        .bind(id)
                        .bind(&body)
                        .bind(at)
                        .execute(pool)
                        .await
                        .map_err(db_error(what))?;
                    sqlx::query(pg::CAP)
                        .bind(id)
                        .bind(kept)
                        .execute(pool)
                        .await
                        .map_err(db_error(what))?;
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlx::query(lite::RECORD)
                        .bind(id)
                        .bind(&body)
                        .bind(attempt.at_ms as i64)
                        .execute(pool)
                        .await
                        .map_err(db_error(what))?;
                    sqlx::query(lite::CAP)
                        .bind(id)
                        .bind(kept)
                        .execute(pool)
                        .await
                        .map_err(db_error(what))?;
                }
            }
            Ok(())
        })
    }

    fn attempts<'a>(&'a self, id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(async move {
            let limit = limit.min(ATTEMPTS_KEPT) as i64;
            let rows: Vec<String> = match &self.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    sqlx::query_scalar(pg::ATTEMPTS)
                        .bind(id)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlx::query_scalar(lite::ATTEMPTS)
                        .bind(id)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
            }
            .map_err(db_error("cannot read the attempts"))?;
            rows.iter().map(|b| decode("attempt", b)).collect()
        })
    }
}

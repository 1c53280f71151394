//! The outbox on PostgreSQL: SQL and the LISTEN task.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::feed::{FeedRows, Position};
use super::{CHANNEL, ClaimRow, Claimed, Failure, NewRow, db_error};
use crate::error::{Error, Result};

pub(super) async fn connect(url: &str) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| Error::Outbox {
            message: format!(
                "cannot connect to PostgreSQL at {}: {e}",
                crate::transport::redact(url)
            ),
            source: Some(Box::new(e)),
        })
}

/// A transaction-level advisory lock key ("ebus" "outb") serializing
/// concurrent migrations.
pub(super) const MIGRATION_LOCK: i64 = 0x6562_7573_6f75_7462;

pub(super) async fn migrate(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_error("cannot migrate"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db_error("cannot migrate"))?;
    sqlx::raw_sql(super::POSTGRES_SCHEMA)
        .execute(&mut *tx)
        .await
        .map_err(db_error("cannot migrate"))?;
    tx.commit().await.map_err(db_error("cannot migrate"))
}

const INSERT: &str = "INSERT INTO eventbus_outbox (id, event_type, payload, key, available_at) \
     VALUES ($1, $2, $3::json, $4, coalesce($5, now()))";

pub(super) async fn insert(conn: &mut PgConnection, row: NewRow<'_>) -> Result<()> {
    let at: Option<chrono::DateTime<chrono::Utc>> = row.available_at.map(Into::into);
    sqlx::query(INSERT)
        .bind(row.id)
        .bind(row.event_type)
        .bind(row.payload)
        .bind(row.key)
        .bind(at)
        .execute(conn)
        .await
        .map_err(db_error("cannot write the event into the outbox"))?;
    Ok(())
}

/// Locks up to `$1` due pending rows, oldest first, skipping rows other
/// relays hold. A keyed row is taken only if it is the head of its key: no
/// earlier row of the key is pending and due (perhaps locked by another
/// relay) or waiting out a retry backoff.
const CLAIM: &str = "
SELECT o.seq, o.id::text, o.event_type, o.payload::text, o.key, o.attempts
FROM eventbus_outbox o
WHERE o.status = 'pending'
  AND o.available_at <= now()
  AND (o.key IS NULL OR NOT EXISTS (
        SELECT 1 FROM eventbus_outbox r
        WHERE r.key = o.key AND r.seq < o.seq AND r.status = 'pending'
          AND (r.available_at <= now() OR r.attempts > 0)))
ORDER BY o.available_at, o.seq
LIMIT $1
FOR UPDATE OF o SKIP LOCKED";

pub(super) async fn claim(conn: &mut PgConnection, limit: usize) -> Result<Vec<Claimed>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(conn)
        .await
        .map_err(db_error("cannot claim outbox rows"))?;
    Ok(rows.into_iter().map(Claimed::from).collect())
}

const MARK_PUBLISHED: &str = "UPDATE eventbus_outbox \
     SET status = 'published', published_at = clock_timestamp(), attempts = attempts + 1 \
     WHERE seq = ANY($1)";

pub(super) async fn mark_published(conn: &mut PgConnection, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query(MARK_PUBLISHED)
        .bind(seqs)
        .execute(conn)
        .await
        .map_err(db_error("cannot mark outbox rows published"))?;
    Ok(())
}

const MARK_FAILED: &str = "
UPDATE eventbus_outbox AS o
SET attempts = o.attempts + 1,
    last_error = f.error,
    available_at = clock_timestamp() + f.delay_ms * interval '1 millisecond',
    status = CASE WHEN f.dead THEN 'failed' ELSE 'pending' END
FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::text[]) AS f(seq, delay_ms, dead, error)
WHERE o.seq = f.seq";

pub(super) async fn mark_failed(conn: &mut PgConnection, failures: &[Failure]) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = failures.iter().map(|f| f.seq).collect();
    let delays: Vec<i64> = failures.iter().map(|f| f.delay_ms).collect();
    let dead: Vec<bool> = failures.iter().map(|f| f.dead).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    sqlx::query(MARK_FAILED)
        .bind(seqs)
        .bind(delays)
        .bind(dead)
        .bind(errors)
        .execute(conn)
        .await
        .map_err(db_error("cannot record failed outbox attempts"))?;
    Ok(())
}

/// Milliseconds from now until the earliest pending row that is not held
/// back by a row in backoff (negative: overdue); `None` when nothing is pending.
const NEXT_DUE: &str = "
SELECT (EXTRACT(EPOCH FROM (min(o.available_at) - now())) * 1000)::bigint
FROM eventbus_outbox o
WHERE o.status = 'pending'
  AND (o.key IS NULL OR NOT EXISTS (
        SELECT 1 FROM eventbus_outbox r
        WHERE r.key = o.key AND r.seq < o.seq AND r.status = 'pending'
          AND r.attempts > 0 AND r.available_at > now()))";

pub(super) async fn next_due(pool: &PgPool) -> Result<Option<i64>> {
    let (ms,): (Option<i64>,) = sqlx::query_as(NEXT_DUE)
        .fetch_one(pool)
        .await
        .map_err(db_error("cannot read the outbox schedule"))?;
    Ok(ms)
}

const RECOVER: &str = "UPDATE eventbus_outbox SET available_at = now() \
     WHERE status = 'pending' AND attempts > 0 AND available_at > now()";

pub(super) async fn recover(pool: &PgPool) -> Result<u64> {
    let done = sqlx::query(RECOVER)
        .execute(pool)
        .await
        .map_err(db_error("cannot end the outbox backoff"))?;
    Ok(done.rows_affected())
}

const CLEANUP: &str = "
DELETE FROM eventbus_outbox WHERE seq IN (
    SELECT seq FROM eventbus_outbox
    WHERE status = 'published' AND published_at < now() - $1 * interval '1 millisecond'
    ORDER BY published_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)";

pub(super) async fn cleanup(pool: &PgPool, retention_ms: i64, limit: i64) -> Result<u64> {
    let done = sqlx::query(CLEANUP)
        .bind(retention_ms)
        .bind(limit)
        .execute(pool)
        .await
        .map_err(db_error("cannot delete old published outbox rows"))?;
    Ok(done.rows_affected())
}

pub(super) async fn counts(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT status, count(*) FROM eventbus_outbox GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(db_error("cannot count outbox rows"))
}

pub(super) async fn retry_failed(pool: &PgPool) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE eventbus_outbox SET status = 'pending', attempts = 0, available_at = now() \
         WHERE status = 'failed'",
    )
    .execute(pool)
    .await
    .map_err(db_error("cannot retry failed outbox rows"))?;
    Ok(done.rows_affected())
}

/// Listens on the outbox channel until `token` fires, waking `wake` on every
/// notification (and after a reconnection, when notifications may have been
/// missed). If listening fails the relay still polls.
pub(super) fn spawn_listener(
    pool: PgPool,
    wake: Arc<Notify>,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_listener_with(pool, move || wake.notify_one(), token)
}

/// [`spawn_listener`] calling `wake` instead of waking one waiter.
pub(super) fn spawn_listener_with(
    pool: PgPool,
    wake: impl Fn() + Send + Sync + 'static,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            let listening = listen(&pool, &wake);
            tokio::select! {
                _ = token.cancelled() => return,
                result = listening => {
                    let Err(e) = result;
                    tracing::warn!("outbox LISTEN failed, polling until it works again: {e}");
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })
}

async fn listen(
    pool: &PgPool,
    wake: &(impl Fn() + Send + Sync),
) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Rows may have arrived before we listened.
    wake();
    loop {
        match listener.try_recv().await? {
            // Coalesce a burst of notifications into one wake-up.
            Some(_) => while listener.next_buffered().is_some() {},
            None => tracing::debug!("outbox listener reconnected"),
        }
        wake();
    }
}

/// The feed's page: the rows after `$1.$2` in (txid, seq) order whose
/// transaction is older than every running one (so none can commit behind
/// them later), with the deletion horizon, in one statement (one snapshot).
macro_rules! feed_sql {
    ($filter:literal) => {
        concat!(
            "SELECT h.txid::text, h.seq, r.txid::text, r.seq, r.event_type, r.payload
FROM (SELECT) AS one
LEFT JOIN eventbus_outbox_horizon h ON true
LEFT JOIN (
    SELECT o.txid, o.seq, o.event_type, o.payload::text AS payload
    FROM eventbus_outbox o
    WHERE o.txid < pg_snapshot_xmin(pg_current_snapshot())
      AND (o.txid, o.seq) > ($1::text::xid8, $2)",
            $filter,
            "
    ORDER BY o.txid, o.seq
    LIMIT $3) r ON true
ORDER BY r.txid, r.seq"
        )
    };
}
const FEED_ALL: &str = feed_sql!("");
const FEED_TYPES: &str = feed_sql!(" AND o.event_type = ANY($4)");

type FeedRow = (
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

pub(super) async fn feed_read(
    pool: &PgPool,
    after: Option<Position>,
    types: Option<&[String]>,
    limit: usize,
) -> Result<FeedRows> {
    let after = after.unwrap_or(Position {
        txid: 0,
        seq: i64::MIN,
    });
    let sql = if types.is_some() {
        FEED_TYPES
    } else {
        FEED_ALL
    };
    let mut query = sqlx::query_as::<_, FeedRow>(sql)
        .bind(after.txid.to_string())
        .bind(after.seq)
        .bind(limit.min(i64::MAX as usize) as i64);
    if let Some(types) = types {
        query = query.bind(types);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(db_error("cannot read the outbox feed"))?;
    let txid = |text: &str| {
        text.parse::<u64>().map_err(|e| Error::Outbox {
            message: format!("the outbox row has a txid `{text}` that is not a number: {e}"),
            source: None,
        })
    };
    let mut page = FeedRows::default();
    for (h_txid, h_seq, r_txid, r_seq, event_type, payload) in rows {
        if let (Some(t), Some(seq)) = (h_txid, h_seq) {
            page.horizon = Some(Position {
                txid: txid(&t)?,
                seq,
            });
        }
        if let (Some(t), Some(seq), Some(event_type), Some(payload)) =
            (r_txid, r_seq, event_type, payload)
        {
            page.rows.push((
                Position {
                    txid: txid(&t)?,
                    seq,
                },
                event_type,
                payload,
            ));
        }
    }
    Ok(page)
}

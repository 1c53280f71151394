//! The outbox on SQLite: SQL. Times are Unix milliseconds.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{SqliteConnection, SqlitePool};

use super::feed::{FeedRows, Position};
use super::{ClaimRow, Claimed, Failure, NewRow, db_error, unix_ms};
use crate::error::{Error, Result};

pub(super) async fn connect(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid SQLite URL `{url}`: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|e| Error::Outbox {
            message: format!("cannot open the SQLite database `{url}`: {e}"),
            source: Some(Box::new(e)),
        })
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_error("cannot migrate"))?;
    sqlx::raw_sql(super::SQLITE_SCHEMA)
        .execute(&mut *tx)
        .await
        .map_err(db_error("cannot migrate"))?;
    tx.commit().await.map_err(db_error("cannot migrate"))
}

const INSERT: &str = "INSERT INTO eventbus_outbox (id, event_type, payload, key, created_at, available_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub(super) async fn insert(conn: &mut SqliteConnection, row: NewRow<'_>) -> Result<()> {
    let now = unix_ms(SystemTime::now());
    let mut id = uuid::Uuid::encode_buffer();
    let id = row.id.hyphenated().encode_lower(&mut id);
    sqlx::query(INSERT)
        .bind(&*id)
        .bind(row.event_type)
        .bind(row.payload)
        .bind(row.key)
        .bind(now)
        .bind(row.available_at.map(unix_ms).unwrap_or(now))
        .execute(conn)
        .await
        .map_err(db_error("cannot write the event into the outbox"))?;
    Ok(())
}

/// Whether a claim could find anything, without taking the write lock.
const ANY_DUE: &str = "SELECT EXISTS (SELECT 1 FROM eventbus_outbox \
     WHERE status = 'pending' AND available_at <= ?1)";

pub(super) async fn any_due(pool: &SqlitePool) -> Result<bool> {
    let (due,): (bool,) = sqlx::query_as(ANY_DUE)
        .bind(unix_ms(SystemTime::now()))
        .fetch_one(pool)
        .await
        .map_err(db_error("cannot read the outbox"))?;
    Ok(due)
}

/// The claim of the PostgreSQL relay (heads of keys only), under SQLite's
/// write lock instead of row locks.
const CLAIM: &str = "
SELECT o.seq, o.id, o.event_type, o.payload, o.key, o.attempts
FROM eventbus_outbox o
WHERE o.status = 'pending'
  AND o.available_at <= ?1
  AND (o.key IS NULL OR NOT EXISTS (
        SELECT 1 FROM eventbus_outbox r
        WHERE r.key = o.key AND r.seq < o.seq AND r.status = 'pending'
          AND (r.available_at <= ?1 OR r.attempts > 0)))
ORDER BY o.available_at, o.seq
LIMIT ?2";

pub(super) async fn claim(conn: &mut SqliteConnection, limit: usize) -> Result<Vec<Claimed>> {
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
        .bind(unix_ms(SystemTime::now()))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(conn)
        .await
        .map_err(db_error("cannot claim outbox rows"))?;
    Ok(rows.into_iter().map(Claimed::from).collect())
}

const MARK_PUBLISHED: &str = "UPDATE eventbus_outbox \
     SET status = 'published', published_at = ?1, attempts = attempts + 1 \
     WHERE seq IN (SELECT value FROM json_each(?2))";

pub(super) async fn mark_published(conn: &mut SqliteConnection, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut list = String::with_capacity(seqs.len() * 8 + 2);
    list.push('[');
    for (i, seq) in seqs.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&seq.to_string());
    }
    list.push(']');
    sqlx::query(MARK_PUBLISHED)
        .bind(unix_ms(SystemTime::now()))
        .bind(list)
        .execute(conn)
        .await
        .map_err(db_error("cannot mark outbox rows published"))?;
    Ok(())
}

const MARK_FAILED: &str = "UPDATE eventbus_outbox \
     SET attempts = attempts + 1, last_error = ?2, available_at = ?3, status = ?4 \
     WHERE seq = ?1";

pub(super) async fn mark_failed(conn: &mut SqliteConnection, failures: &[Failure]) -> Result<()> {
    let now = unix_ms(SystemTime::now());
    for f in failures {
        sqlx::query(MARK_FAILED)
            .bind(f.seq)
            .bind(&f.error)
            .bind(now.saturating_add(f.delay_ms))
            .bind(if f.dead { "failed" } else { "pending" })
            .execute(&mut *conn)
            .await
            .map_err(db_error("cannot record failed outbox attempts"))?;
    }
    Ok(())
}

const NEXT_DUE: &str = "
SELECT min(o.available_at)
FROM eventbus_outbox o
WHERE o.status = 'pending'
  AND (o.key IS NULL OR NOT EXISTS (
        SELECT 1 FROM eventbus_outbox r
        WHERE r.key = o.key AND r.seq < o.seq AND r.status = 'pending'
          AND r.attempts > 0 AND r.available_at > ?1))";

pub(super) async fn next_due(pool: &SqlitePool) -> Result<Option<i64>> {
    let now = unix_ms(SystemTime::now());
    let (at,): (Option<i64>,) = sqlx::query_as(NEXT_DUE)
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(db_error("cannot read the outbox schedule"))?;
    Ok(at.map(|at| at.saturating_sub(now)))
}

pub(super) async fn recover(pool: &SqlitePool) -> Result<u64> {
    let now = unix_ms(SystemTime::now());
    let done = sqlx::query(
        "UPDATE eventbus_outbox SET available_at = ?1 \
         WHERE status = 'pending' AND attempts > 0 AND available_at > ?1",
    )
    .bind(now)
    .execute(pool)
    .await
    .map_err(db_error("cannot end the outbox backoff"))?;
    Ok(done.rows_affected())
}

/// Deletes published rows older than the retention, except the newest row of
/// the table: SQLite gives a new row max(rowid) + 1, so deleting the maximum
/// would hand its seq out again, behind feed cursors already served.
pub(super) async fn cleanup(pool: &SqlitePool, retention_ms: i64, limit: i64) -> Result<u64> {
    let cutoff = unix_ms(SystemTime::now()).saturating_sub(retention_ms);
    let done = sqlx::query(
        "DELETE FROM eventbus_outbox WHERE seq IN (\
             SELECT seq FROM eventbus_outbox \
             WHERE status = 'published' AND published_at < ?1 \
               AND seq < (SELECT max(seq) FROM eventbus_outbox) \
             ORDER BY published_at LIMIT ?2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await
    .map_err(db_error("cannot delete old published outbox rows"))?;
    Ok(done.rows_affected())
}

pub(super) async fn counts(pool: &SqlitePool) -> Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT status, count(*) FROM eventbus_outbox GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(db_error("cannot count outbox rows"))
}

pub(super) async fn retry_failed(pool: &SqlitePool) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE eventbus_outbox SET status = 'pending', attempts = 0, available_at = ?1 \
         WHERE status = 'failed'",
    )
    .bind(unix_ms(SystemTime::now()))
    .execute(pool)
    .await
    .map_err(db_error("cannot retry failed outbox rows"))?;
    Ok(done.rows_affected())
}

/// The feed's page: the rows after `?1` in seq order (SQLite serializes
/// writers, so this is commit order), with the deletion horizon, in one
/// statement (one snapshot).
macro_rules! feed_sql {
    ($filter:literal) => {
        concat!(
            "SELECT h.seq, r.seq, r.event_type, r.payload
FROM (SELECT 1) AS one
LEFT JOIN eventbus_outbox_horizon h ON h.one = 1
LEFT JOIN (
    SELECT o.seq, o.event_type, o.payload
    FROM eventbus_outbox o
    WHERE o.seq > ?1",
            $filter,
            "
    ORDER BY o.seq
    LIMIT ?2) r ON 1
ORDER BY r.seq"
        )
    };
}
const FEED_ALL: &str = feed_sql!("");
const FEED_TYPES: &str = feed_sql!(" AND o.event_type IN (SELECT value FROM json_each(?3))");

type FeedRow = (Option<i64>, Option<i64>, Option<String>, Option<String>);

pub(super) async fn feed_read(
    pool: &SqlitePool,
    after: Option<Position>,
    types: Option<&[String]>,
    limit: usize,
) -> Result<FeedRows> {
    let sql = if types.is_some() {
        FEED_TYPES
    } else {
        FEED_ALL
    };
    let mut query = sqlx::query_as::<_, FeedRow>(sql)
        .bind(after.map_or(i64::MIN, |p| p.seq))
        .bind(limit.min(i64::MAX as usize) as i64);
    if let Some(types) = types {
        let list = serde_json::to_string(types).map_err(|e| Error::Outbox {
            message: format!("cannot write the feed's types as JSON: {e}"),
            source: None,
        })?;
        query = query.bind(list);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(db_error("cannot read the outbox feed"))?;
    let mut page = FeedRows::default();
    for (h_seq, r_seq, event_type, payload) in rows {
        if let Some(seq) = h_seq {
            page.horizon = Some(Position { txid: 0, seq });
        }
        if let (Some(seq), Some(event_type), Some(payload)) = (r_seq, event_type, payload) {
            page.rows
                .push((Position { txid: 0, seq }, event_type, payload));
        }
    }
    Ok(page)
}

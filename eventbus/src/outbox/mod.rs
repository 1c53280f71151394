//! Transactional outbox on PostgreSQL and SQLite (features `postgres`, `sqlite`).
//!
//! An event that must go out if and only if a database transaction commits
//! is written into the outbox table inside that transaction; a [`Relay`]
//! moves committed rows to the transport afterwards.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn demo(bus: eventbus::Bus, pool: sqlx::SqlitePool) -> anyhow::Result<()> {
//! # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event)]
//! # #[event("send_short_message")] struct SendShortMessage { id: u64 }
//! eventbus::outbox::migrate(&pool).await?; // idempotent, at start
//!
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO short_message (id, text) VALUES (1, 'hi')")
//!     .execute(&mut *tx)
//!     .await?;
//! bus.outbox().publish(&mut tx, SendShortMessage { id: 1 }).await?;
//! tx.commit().await?; // a rollback instead would send nothing, ever
//! # Ok(()) }
//! ```
//!
//! The relay runs inside [`Bus::run`] with
//! [`BusBuilder::outbox_relay`], on its own with [`Relay::run`], or as
//! `eventbus relay --database-url ... --transport-url ...` (the `eventbus-cli` crate).
//!
//! # The table
//!
//! One table, `eventbus_outbox`, created by [`migrate`] from the SQL shipped in
//! `eventbus/migrations/{postgres,sqlite}/` (idempotent: run it at every start,
//! or copy the file into your own migrations). [`POSTGRES_SCHEMA`] and
//! [`SQLITE_SCHEMA`] hold the same text.
//!
//! | column | meaning |
//! |---|---|
//! | `seq` | insertion order (identity / rowid) |
//! | `id` | the CloudEvents id (UUIDv7), unique |
//! | `event_type` | the CloudEvents type |
//! | `payload` | the structured CloudEvent, exactly as it goes on the wire |
//! | `key` | ordering key: the event's subject unless [`Outbox::key`] says otherwise |
//! | `created_at`, `available_at` | written; not sent before (`publish_at`, backoff) |
//! | `status` | `pending`, `published` or `failed` |
//! | `attempts`, `last_error` | publish attempts so far, the last failure |
//! | `published_at` | when the transport accepted it |
//!
//! Partial indexes keep the relay's queries on the backlog only: due pending
//! rows by `(available_at, seq)`, pending keyed rows by `(key, seq)`, and
//! published rows by `published_at` for the retention cleanup. On PostgreSQL
//! a statement trigger sends `NOTIFY eventbus_outbox` on insert (delivered at
//! commit), so relays wake at once whoever wrote the row. Because PostgreSQL
//! serializes the commits of notifying transactions, only one open
//! transaction at a time notifies (a non-blocking advisory lock decides); the
//! others count on the relay being awake already, or on its poll
//! (`SET eventbus.outbox_notify = 'off'` turns the notification off).
//!
//! # The relay
//!
//! One round, in one database transaction:
//!
//! 1. **Claim** up to `batch_size` due pending rows, oldest first (each the
//!    head of its key, see below), with `FOR UPDATE SKIP LOCKED` on
//!    PostgreSQL (so concurrent relays take disjoint rows) and under SQLite's
//!    write lock (`BEGIN IMMEDIATE`).
//!    The claim is only the row lock: there is no 'processing' state, so a
//!    relay that dies before committing leaves its rows `pending` (the
//!    database aborts its transaction) and another round sends them.
//! 2. **Publish** the claimed rows in one transport batch
//!    ([`Bus::publish_encoded`]), bounded by `publish_timeout`.
//! 3. **Mark** them `published` (or, on failure, see below) and commit.
//!
//! Failures: if the batch fails, its rows are published one by one to find
//! the culprit; rows that fail get `attempts + 1`, `last_error`, and
//! `available_at = now + backoff` (exponential, with jitter); after
//! `max_attempts` a row becomes `failed` and stays for inspection
//! ([`retry_failed`] sends them again). If the first rows fail alone as well
//! (or the batch timed out) the transport is taken to be down: every row of
//! the batch is charged one attempt, the transaction is committed, and the
//! relay sleeps (its own backoff, 0.5 s doubling to 30 s) with no transaction
//! open and no row locked. When the transport accepts messages again, rows
//! waiting out a backoff are made due at once.
//!
//! Idle relays wait for a `NOTIFY` (PostgreSQL), the next `available_at`, or
//! `poll_interval`, whichever comes first. Published rows older than
//! `retention` are deleted in small batches.
//!
//! # Guarantees
//!
//! - **Nothing is sent for a transaction that rolls back**, and every row of
//!   a committed one is sent: at least once. A relay that crashes after the
//!   transport accepted a batch but before its commit sends that batch again
//!   (the CloudEvents `id` is the same, so consumers can de-duplicate).
//!   Concurrent relays never send a row twice: a row is published by the
//!   relay holding its lock, and marked before the lock is released.
//! - **Per-key order.** Rows with the same `key` are published in `seq`
//!   (insertion) order. The claim only takes the *head* of a key: a keyed row
//!   is claimed when no earlier row of its key is pending and due (perhaps
//!   held by another relay) or waiting out a retry backoff. So at most one
//!   row of a key is in flight across all relays, and the next one is claimed
//!   after the previous one was committed as published. Consequences: a row
//!   that ends `failed` no longer holds back the rows after it; a row
//!   scheduled for later (`publish_at`) does not hold back the rows after it
//!   (scheduling is an explicit reordering); a single key advances one row
//!   per round (hundreds per second), while batches fill up with the heads of
//!   many keys. Rows without a key are not ordered. For two transactions
//!   that insert rows of the same key *concurrently* (not serialized by a
//!   lock on the business row, as an `UPDATE` of it takes), the order is the
//!   one in which their rows became visible. SQLite serializes all writers.
//! - **Scheduled rows** are not sent before `available_at` (by the database's
//!   clock on PostgreSQL).
//!
//! [`Bus::run`]: crate::Bus::run
//! [`Bus::publish_encoded`]: crate::Bus::publish_encoded
//! [`BusBuilder::outbox_relay`]: crate::BusBuilder::outbox_relay

use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::bus::{Bus, BusBuilder};
use crate::error::{Error, Result};
use crate::event::Event;

#[cfg(feature = "postgres")]
mod postgres;
mod relay;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use relay::{Relay, RelayOptions, RoundReport};

/// The outbox table's name.
pub const TABLE: &str = "eventbus_outbox";

/// The PostgreSQL channel relays `LISTEN` on.
pub const CHANNEL: &str = "eventbus_outbox";

/// The PostgreSQL schema (`eventbus/migrations/postgres/0001_outbox.sql`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub const POSTGRES_SCHEMA: &str = include_str!("../../migrations/postgres/0001_outbox.sql");

/// The SQLite schema (`eventbus/migrations/sqlite/0001_outbox.sql`).
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub const SQLITE_SCHEMA: &str = include_str!("../../migrations/sqlite/0001_outbox.sql");

/// The database holding the outbox: a connection pool.
///
/// Built from a pool (`Database::from(&pool)`, or `&pool` wherever an
/// `impl Into<Database>` is taken) or from a URL with [`Database::connect`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Database {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(sqlx::PgPool),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(sqlx::SqlitePool),
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for Database {
    fn from(pool: sqlx::PgPool) -> Self {
        Database::Postgres(pool)
    }
}

#[cfg(feature = "postgres")]
impl From<&sqlx::PgPool> for Database {
    fn from(pool: &sqlx::PgPool) -> Self {
        Database::Postgres(pool.clone())
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for Database {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Database::Sqlite(pool)
    }
}

#[cfg(feature = "sqlite")]
impl From<&sqlx::SqlitePool> for Database {
    fn from(pool: &sqlx::SqlitePool) -> Self {
        Database::Sqlite(pool.clone())
    }
}

impl From<&Database> for Database {
    fn from(db: &Database) -> Self {
        db.clone()
    }
}

impl Database {
    /// Connects to `postgres://...`/`postgresql://...` (feature `postgres`)
    /// or `sqlite:path`/`sqlite::memory:` (feature `sqlite`; the file is
    /// created if missing, in WAL mode).
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => {
                #[cfg(feature = "postgres")]
                {
                    postgres::connect(url).await.map(Database::Postgres)
                }
                #[cfg(not(feature = "postgres"))]
                {
                    Err(Error::Config(
                        "PostgreSQL outbox URLs need the `postgres` feature of eventbus".into(),
                    ))
                }
            }
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                {
                    sqlite::connect(url).await.map(Database::Sqlite)
                }
                #[cfg(not(feature = "sqlite"))]
                {
                    Err(Error::Config(
                        "SQLite outbox URLs need the `sqlite` feature of eventbus".into(),
                    ))
                }
            }
            _ => Err(Error::Config(format!(
                "`{}` is not a database URL; write `postgres://user@host/db` or `sqlite:path/to/file.db`",
                crate::transport::redact(url)
            ))),
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => "postgres",
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => "sqlite",
        }
    }
}

/// Creates the outbox table, its indexes (and on PostgreSQL its `NOTIFY`
/// trigger) if they do not exist. Idempotent and safe to run concurrently
/// from several processes.
pub async fn migrate(db: impl Into<Database>) -> Result<()> {
    match db.into() {
        #[cfg(feature = "postgres")]
        Database::Postgres(pool) => postgres::migrate(&pool).await,
        #[cfg(feature = "sqlite")]
        Database::Sqlite(pool) => sqlite::migrate(&pool).await,
    }
}

/// The state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting to be published (or to be retried).
    Pending,
    /// Accepted by the transport.
    Published,
    /// Gave up after `max_attempts`; see `last_error`.
    Failed,
}

impl Status {
    /// The value in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Published => "published",
            Status::Failed => "failed",
        }
    }
}

/// How many rows of the outbox are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// `pending` rows (due, scheduled or in backoff).
    pub pending: u64,
    /// `published` rows not yet removed by the retention cleanup.
    pub published: u64,
    /// `failed` rows.
    pub failed: u64,
}

/// Counts the rows of each status (a full scan: for tools and tests, not hot paths).
pub async fn counts(db: impl Into<Database>) -> Result<Counts> {
    let rows: Vec<(String, i64)> = match db.into() {
        #[cfg(feature = "postgres")]
        Database::Postgres(pool) => postgres::counts(&pool).await?,
        #[cfg(feature = "sqlite")]
        Database::Sqlite(pool) => sqlite::counts(&pool).await?,
    };
    let mut counts = Counts::default();
    for (status, n) in rows {
        let n = n.max(0) as u64;
        match status.as_str() {
            "pending" => counts.pending = n,
            "published" => counts.published = n,
            "failed" => counts.failed = n,
            _ => {}
        }
    }
    Ok(counts)
}

/// Makes every `failed` row `pending` again, due now, with its attempts reset
/// (after fixing what made them fail). Returns how many.
pub async fn retry_failed(db: impl Into<Database>) -> Result<u64> {
    match db.into() {
        #[cfg(feature = "postgres")]
        Database::Postgres(pool) => postgres::retry_failed(&pool).await,
        #[cfg(feature = "sqlite")]
        Database::Sqlite(pool) => sqlite::retry_failed(&pool).await,
    }
}

/// Publishes events through the outbox table, inside the caller's transaction.
///
/// From [`Bus::outbox`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    bus: Bus,
    key: KeyChoice,
}

#[derive(Debug, Clone)]
enum KeyChoice {
    Subject,
    Fixed(String),
    Unordered,
}

impl Bus {
    /// The transactional outbox of this bus: `bus.outbox().publish(&mut tx, event)`.
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    pub fn outbox(&self) -> Outbox {
        Outbox {
            bus: self.clone(),
            key: KeyChoice::Subject,
        }
    }
}

impl BusBuilder {
    /// Runs an outbox [`Relay`] with these options inside [`Bus::run`].
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn demo(pool: sqlx::PgPool) -> eventbus::Result<()> {
    /// use eventbus::outbox::RelayOptions;
    /// let bus = eventbus::Bus::builder()
    ///     .outbox_relay(RelayOptions::new(&pool).max_attempts(10))
    ///     .connect_env()
    ///     .await?;
    /// bus.run().await
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    pub fn outbox_relay(self, options: RelayOptions) -> Self {
        self.background("outbox relay", move |bus, token| {
            let relay = Relay::new(bus, options.clone());
            Box::pin(async move { relay.run(token).await })
        })
    }
}

impl Outbox {
    /// Uses `key` as the ordering key of the events published through the
    /// returned outbox (instead of each event's subject).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = KeyChoice::Fixed(key.into());
        self
    }

    /// Publishes without an ordering key: these rows may go out in any order.
    pub fn unordered(mut self) -> Self {
        self.key = KeyChoice::Unordered;
        self
    }

    /// Writes `event` into the outbox inside `tx`; the relay publishes it
    /// once `tx` commits, and never if it rolls back. Returns the event id.
    ///
    /// `tx` is a `sqlx::Transaction` (or a bare connection, which then
    /// commits the row on its own) of PostgreSQL or SQLite.
    pub async fn publish<E, C>(&self, tx: &mut C, event: E) -> Result<uuid::Uuid>
    where
        E: Event,
        C: OutboxConnection + ?Sized,
    {
        self.insert(tx, &event, None).await
    }

    /// Like [`publish`](Self::publish), not sent before `at`.
    pub async fn publish_at<E, C>(&self, tx: &mut C, event: E, at: SystemTime) -> Result<uuid::Uuid>
    where
        E: Event,
        C: OutboxConnection + ?Sized,
    {
        self.insert(tx, &event, Some(at)).await
    }

    /// Like [`publish`](Self::publish), not sent before `delay` has passed.
    pub async fn publish_after<E, C>(
        &self,
        tx: &mut C,
        event: E,
        delay: std::time::Duration,
    ) -> Result<uuid::Uuid>
    where
        E: Event,
        C: OutboxConnection + ?Sized,
    {
        self.insert(tx, &event, Some(SystemTime::now() + delay))
            .await
    }

    async fn insert<E, C>(
        &self,
        tx: &mut C,
        event: &E,
        at: Option<SystemTime>,
    ) -> Result<uuid::Uuid>
    where
        E: Event,
        C: OutboxConnection + ?Sized,
    {
        let (id, message) = self.bus.encode(event)?;
        let payload = std::str::from_utf8(&message.payload).map_err(|e| Error::Outbox {
            message: format!("the encoded `{}` event is not UTF-8: {e}", E::TYPE),
            source: None,
        })?;
        let key = match &self.key {
            KeyChoice::Subject => event.subject().map(|s| s.to_string()),
            KeyChoice::Fixed(k) => Some(k.clone()),
            KeyChoice::Unordered => None,
        };
        let row = NewRow {
            id,
            event_type: E::TYPE,
            payload,
            key: key.as_deref(),
            available_at: at,
        };
        tx.insert_outbox_row(row).await?;
        tracing::debug!(event_type = E::TYPE, %id, "outbox insert");
        Ok(id)
    }
}

/// A row to insert.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct NewRow<'a> {
    id: uuid::Uuid,
    event_type: &'a str,
    payload: &'a str,
    key: Option<&'a str>,
    available_at: Option<SystemTime>,
}

mod sealed {
    pub trait Sealed {}
}

/// A connection or transaction the outbox can write to: `sqlx::Transaction`
/// or connection of PostgreSQL (feature `postgres`) or SQLite (feature `sqlite`).
///
/// Sealed; implemented by this crate only.
pub trait OutboxConnection: sealed::Sealed + Send {
    #[doc(hidden)]
    fn insert_outbox_row<'a>(&'a mut self, row: NewRow<'a>) -> BoxFuture<'a, Result<()>>;
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::PgConnection {}
#[cfg(feature = "postgres")]
impl OutboxConnection for sqlx::PgConnection {
    fn insert_outbox_row<'a>(&'a mut self, row: NewRow<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(postgres::insert(self, row))
    }
}
#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::Transaction<'_, sqlx::Postgres> {}
#[cfg(feature = "postgres")]
impl OutboxConnection for sqlx::Transaction<'_, sqlx::Postgres> {
    fn insert_outbox_row<'a>(&'a mut self, row: NewRow<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(postgres::insert(self, row))
    }
}

#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::SqliteConnection {}
#[cfg(feature = "sqlite")]
impl OutboxConnection for sqlx::SqliteConnection {
    fn insert_outbox_row<'a>(&'a mut self, row: NewRow<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(sqlite::insert(self, row))
    }
}
#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::Transaction<'_, sqlx::Sqlite> {}
#[cfg(feature = "sqlite")]
impl OutboxConnection for sqlx::Transaction<'_, sqlx::Sqlite> {
    fn insert_outbox_row<'a>(&'a mut self, row: NewRow<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(sqlite::insert(self, row))
    }
}

/// A claimed row, as the relay sees it.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub key: Option<String>,
    pub attempts: i32,
}

/// A claimed row as both databases return it:
/// `(seq, id, event_type, payload, key, attempts)`.
pub(crate) type ClaimRow = (i64, String, String, String, Option<String>, i32);

impl From<ClaimRow> for Claimed {
    fn from((seq, id, event_type, payload, key, attempts): ClaimRow) -> Self {
        Claimed {
            seq,
            id,
            event_type,
            payload,
            key,
            attempts,
        }
    }
}

/// A failed publish attempt of one row.
#[derive(Debug)]
pub(crate) struct Failure {
    pub seq: i64,
    /// Milliseconds until the next attempt.
    pub delay_ms: i64,
    /// `attempts` reached `max_attempts`: the row becomes `failed`.
    pub dead: bool,
    pub error: String,
}

/// Wraps a database error with what was being done. A missing table is a
/// set-up mistake ([`Error::Config`]) with the fix in the message.
pub(crate) fn db_error(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| {
        let missing_table = e.as_database_error().is_some_and(|d| {
            d.code().as_deref() == Some("42P01") || d.message().contains("no such table")
        });
        if missing_table {
            return Error::Config(format!(
                "outbox: {what}: the table `{TABLE}` does not exist; run `eventbus::outbox::migrate(&pool)` at start \
                 (or `eventbus migrate --database-url ...`, or apply eventbus/migrations/) ({e})"
            ));
        }
        Error::Outbox {
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

/// Milliseconds since the Unix epoch.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

#![doc = include_str!("README.md")]

use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::bus::{Bus, BusBuilder};
use crate::error::{Error, Result};
use crate::event::Event;

pub mod capture;
mod feed;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use feed::{OutboxFeed, feed};
pub use relay::{Relay, RelayOptions, RoundReport};

/// The outbox table's name.
pub const TABLE: &str = "eventbus_outbox";

/// The PostgreSQL channel relays `LISTEN` on.
pub const CHANNEL: &str = "eventbus_outbox";

/// The PostgreSQL schema: the files of `eventbus/migrations/postgres/`
/// (`0001_outbox.sql`, `0002_feed.sql`), in order.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub const POSTGRES_SCHEMA: &str = concat!(
    include_str!("../../migrations/postgres/0001_outbox.sql"),
    "\n",
    include_str!("../../migrations/postgres/0002_feed.sql"),
);

/// The SQLite schema: the files of `eventbus/migrations/sqlite/`
/// (`0001_outbox.sql`, `0002_feed.sql`), in order.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub const SQLITE_SCHEMA: &str = concat!(
    include_str!("../../migrations/sqlite/0001_outbox.sql"),
    "\n",
    include_str!("../../migrations/sqlite/0002_feed.sql"),
);

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

/// How long the most overdue `pending` row the relay could claim has been
/// due (zero when none is): one indexed query.
pub async fn oldest_due(db: impl Into<Database>) -> Result<std::time::Duration> {
    let ms = match db.into() {
        #[cfg(feature = "postgres")]
        Database::Postgres(pool) => postgres::next_due(&pool).await?,
        #[cfg(feature = "sqlite")]
        Database::Sqlite(pool) => sqlite::next_due(&pool).await?,
    };
    Ok(std::time::Duration::from_millis(
        ms.map_or(0, |ms| ms.saturating_neg().max(0) as u64),
    ))
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

    /// Sends the Celery task `task` (a type declared `#[event("name",
    /// celery)]`) once `tx` commits, and never if it rolls back:
    /// `transaction.on_commit(lambda: app.send_task(...))` done right, since
    /// the row is sent even if the process dies between the commit and the
    /// send (the relay sends it). The same as [`publish`](Self::publish),
    /// with a check that the type is a Celery task. Returns the task id.
    pub async fn send_task<E, C>(&self, tx: &mut C, task: E) -> Result<uuid::Uuid>
    where
        E: Event,
        C: OutboxConnection + ?Sized,
    {
        if E::info().task.is_none() {
            return Err(Error::Config(format!(
                "`{}` is not a Celery task: declare it with #[event(\"{}\", celery)], or use publish",
                E::TYPE,
                E::TYPE
            )));
        }
        self.insert(tx, &task, None).await
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

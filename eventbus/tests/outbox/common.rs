//! Shared by the outbox tests: events, test transports, databases, the child
//! relay process, and the scenarios run on both PostgreSQL and SQLite.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use eventbus::RetryPolicy;
use eventbus::codec::Attributes;
use eventbus::outbox::{self, Database, Relay, RelayOptions};
use eventbus::transport::{DeadLetter, GroupSpec, Outgoing, Subscriber, Transport};
use eventbus::{Bus, Error, Event, Result};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// An event without ordering key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("outbox_test.note")]
pub struct Note {
    pub n: u64,
}

/// An event whose subject (`key`) is its ordering key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("outbox_test.keyed")]
pub struct Keyed {
    #[event(subject)]
    pub key: String,
    pub n: u64,
}

/// What a test transport saw: one entry per accepted message, in order.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub n: u64,
    pub at: SystemTime,
}

pub fn read(payload: &[u8]) -> Delivered {
    let attrs = Attributes::parse(payload).expect("a CloudEvent");
    #[derive(Deserialize)]
    struct N {
        n: u64,
    }
    let n: N = attrs.data_as().expect("data with n");
    Delivered {
        id: attrs.id.into_owned(),
        event_type: attrs.ty.into_owned(),
        subject: attrs.subject.map(|s| s.into_owned()),
        n: n.n,
        at: SystemTime::now(),
    }
}

/// A transport that records what it accepts and fails on demand.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Default)]
struct RecorderInner {
    log: Mutex<Vec<Delivered>>,
    down: AtomicBool,
    /// Batches holding an event with one of these `n` fail.
    poison: Mutex<HashSet<u64>>,
    /// Probability that a batch fails (0 = never).
    flaky: Mutex<f64>,
    calls: Mutex<u64>,
}

impl Recorder {
    pub fn log(&self) -> Vec<Delivered> {
        self.inner.log.lock().clone()
    }
    pub fn len(&self) -> usize {
        self.inner.log.lock().len()
    }
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }
    pub fn poison(&self, n: u64) {
        self.inner.poison.lock().insert(n);
    }
    pub fn set_flaky(&self, p: f64) {
        *self.inner.flaky.lock() = p;
    }
    pub fn calls(&self) -> u64 {
        *self.inner.calls.lock()
    }
}

impl Transport for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            *self.inner.calls.lock() += 1;
            if self.inner.down.load(Ordering::SeqCst) {
                return Err(Error::transport(
                    "recorder",
                    "connection refused",
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                ));
            }
            let flaky = *self.inner.flaky.lock();
            if flaky > 0.0 && fastrand::f64() < flaky {
                return Err(Error::transport(
                    "recorder",
                    "flaky",
                    std::io::Error::other("random failure"),
                ));
            }
            let seen: Vec<Delivered> = batch.iter().map(|m| read(&m.payload)).collect();
            {
                let poison = self.inner.poison.lock();
                if let Some(bad) = seen.iter().find(|d| poison.contains(&d.n)) {
                    return Err(Error::transport(
                        "recorder",
                        format!("message too large (n = {})", bad.n),
                        std::io::Error::other("rejected"),
                    ));
                }
            }
            self.inner.log.lock().extend(seen);
            Ok(())
        })
    }

    fn publish_at(&self, message: Outgoing, _at: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.publish(std::slice::from_ref(&message)).await })
    }

    fn declare<'a>(&'a self, _group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn subscribe<'a>(
        &'a self,
        _group: &'a GroupSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async { Err(Error::Config("the recorder has no subscribers".into())) })
    }

    fn claim_tick<'a>(&'a self, _schedule: &'a str, _tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(true) })
    }

    fn dead_letters(&self, _limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn replay<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
}

/// Logs to the test output with `RUST_LOG` (e.g. `RUST_LOG=eventbus=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A bus publishing into `transport`, with no handlers.
pub async fn bus_on(transport: impl Transport) -> Bus {
    init_tracing();
    Bus::builder()
        .service("outbox-test")
        .without_registered()
        .transport(transport)
        .build()
        .await
        .expect("bus")
}

/// Fast backoffs for tests.
pub fn fast(options: RelayOptions) -> RelayOptions {
    options
        .backoff(RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
        })
        .outage_backoff(RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
        })
        .poll_interval(Duration::from_millis(50))
}

/// A relay running in this process until dropped.
pub struct Running {
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Running {
    pub fn start(bus: Bus, options: RelayOptions) -> Self {
        let token = CancellationToken::new();
        let relay = Relay::new(bus, options);
        let t = token.clone();
        let task = tokio::spawn(async move { relay.run(t).await });
        Self {
            token,
            task: Some(task),
        }
    }

    pub async fn stop(self) {
        if let Err(e) = self.finish().await {
            panic!("{e}");
        }
    }

    /// Stops the relay; how it ended.
    pub async fn finish(mut self) -> std::result::Result<(), String> {
        self.token.cancel();
        let task = self.task.take().expect("running");
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the relay failed: {e}")),
            Err(e) => Err(format!("the relay task failed: {e}")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Waits until `f` is true, up to `timeout`; false if it never was.
pub use testkit::eventually;

/// What a test publishes in one transaction.
#[derive(Debug, Clone)]
pub enum Item {
    Note(u64),
    Keyed(String, u64),
    NoteAt(u64, SystemTime),
}

/// A test database: the outbox table plus a business table `short_message`.
pub enum Db {
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgPool, String),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool, String, tempfile::TempDir),
}

impl Db {
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Db {
        let server = testkit::PostgresServer::shared().expect("PostgreSQL for the tests");
        let url = server.create_database().expect("a database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .expect("connect");
        outbox::migrate(&pool).await.expect("migrate");
        sqlx::query("CREATE TABLE short_message (id BIGINT PRIMARY KEY, text TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("business table");
        Db::Pg(pool, url)
    }

    #[cfg(feature = "sqlite")]
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("app.db").display());
        let Database::Sqlite(pool) = Database::connect(&url).await.expect("open") else {
            unreachable!()
        };
        outbox::migrate(&pool).await.expect("migrate");
        sqlx::query("CREATE TABLE short_message (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("business table");
        Db::Sqlite(pool, url, dir)
    }

    pub fn database(&self) -> Database {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool, _) => pool.into(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool, ..) => pool.into(),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(_, url) => url,
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_, url, _) => url,
        }
    }

    /// One transaction: a `short_message` row and an outbox event per item;
    /// committed or rolled back. Returns the event ids.
    pub async fn publish(&self, bus: &Bus, items: &[Item], commit: bool) -> Vec<uuid::Uuid> {
        let outbox = bus.outbox();
        let mut ids = Vec::new();
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool, _) => {
                let mut tx = pool.begin().await.expect("begin");
                for item in items {
                    sqlx::query("INSERT INTO short_message (id, text) VALUES ($1, 'hello')")
                        .bind(item_n(item) as i64)
                        .execute(&mut *tx)
                        .await
                        .expect("business insert");
                    ids.push(publish_item(&outbox, &mut tx, item).await);
                }
                if commit {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback().await.expect("rollback");
                }
            }
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool, ..) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                for item in items {
                    sqlx::query("INSERT INTO short_message (id, text) VALUES (?1, 'hello')")
                        .bind(item_n(item) as i64)
                        .execute(&mut *tx)
                        .await
                        .expect("business insert");
                    ids.push(publish_item(&outbox, &mut tx, item).await);
                }
                if commit {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback().await.expect("rollback");
                }
            }
        }
        ids
    }

    /// `(status, attempts, last_error)` of the row of event `id`.
    pub async fn row(&self, id: uuid::Uuid) -> (String, i64, Option<String>) {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool, _) => {
                let (s, a, e): (String, i32, Option<String>) = sqlx::query_as(
                    "SELECT status, attempts, last_error FROM eventbus_outbox WHERE id = $1",
                )
                .bind(id)
                .fetch_one(pool)
                .await
                .expect("row");
                (s, a.into(), e)
            }
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool, ..) => sqlx::query_as(
                "SELECT status, attempts, last_error FROM eventbus_outbox WHERE id = ?1",
            )
            .bind(id.hyphenated().to_string())
            .fetch_one(pool)
            .await
            .expect("row"),
        }
    }

    /// `(min, max)` of `attempts` over pending rows.
    pub async fn pending_attempts(&self) -> (i64, i64) {
        let sql = "SELECT CAST(coalesce(min(attempts), 0) AS BIGINT), CAST(coalesce(max(attempts), 0) AS BIGINT) \
                   FROM eventbus_outbox WHERE status = 'pending'";
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool, _) => sqlx::query_as(sql).fetch_one(pool).await.expect("attempts"),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool, ..) => sqlx::query_as(sql).fetch_one(pool).await.expect("attempts"),
        }
    }

    /// The pending rows, for failure messages.
    pub async fn dump_pending(&self) -> String {
        let sql = "SELECT seq, key, attempts, CAST(status AS TEXT) FROM eventbus_outbox \
                   WHERE status = 'pending' ORDER BY seq LIMIT 20";
        let rows: Vec<(i64, Option<String>, i32, String)> = match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool, _) => sqlx::query_as(sql).fetch_all(pool).await.expect("dump"),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool, ..) => sqlx::query_as(sql).fetch_all(pool).await.expect("dump"),
        };
        format!("{rows:?}")
    }

    pub async fn counts(&self) -> outbox::Counts {
        outbox::counts(self.database()).await.expect("counts")
    }
}

fn item_n(item: &Item) -> u64 {
    match item {
        Item::Note(n) | Item::Keyed(_, n) | Item::NoteAt(n, _) => *n,
    }
}

async fn publish_item<C>(outbox: &outbox::Outbox, tx: &mut C, item: &Item) -> uuid::Uuid
where
    C: outbox::OutboxConnection + ?Sized,
{
    match item {
        Item::Note(n) => outbox.publish(tx, Note { n: *n }).await,
        Item::Keyed(key, n) => {
            outbox
                .publish(
                    tx,
                    Keyed {
                        key: key.clone(),
                        n: *n,
                    },
                )
                .await
        }
        Item::NoteAt(n, at) => outbox.publish_at(tx, Note { n: *n }, *at).await,
    }
    .expect("outbox publish")
}

// ---------------------------------------------------------------- scenarios

/// Rollback: nothing, ever. Commit: exactly once.
pub async fn rollback_sends_nothing_commit_sends_once(db: Db) {
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(bus.clone(), fast(RelayOptions::new(db.database())));

    let rolled_back = db
        .publish(&bus, &[Item::Note(1), Item::Note(2)], false)
        .await;
    let committed = db.publish(&bus, &[Item::Note(3)], true).await;

    assert!(
        eventually(Duration::from_secs(10), || async { recorder.len() >= 1 }).await,
        "the committed event was not published"
    );
    // Give the relay time to (wrongly) send more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;

    let log = recorder.log();
    assert_eq!(log.len(), 1, "exactly one event: {log:?}");
    assert_eq!(log[0].id, committed[0].to_string());
    assert_eq!(log[0].n, 3);
    for id in rolled_back {
        assert!(log.iter().all(|d| d.id != id.to_string()));
    }
    let counts = db.counts().await;
    assert_eq!((counts.pending, counts.published, counts.failed), (0, 1, 0));
    assert_eq!(db.row(committed[0]).await.0, "published");
}

/// A row the transport always rejects ends `failed` after `max_attempts`,
/// with `last_error`; the others (including those batched with it) flow.
pub async fn failing_event_ends_failed_while_others_flow(db: Db) {
    let recorder = Recorder::default();
    recorder.poison(13);
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(3)),
    );

    let items: Vec<Item> = (0..40).map(Item::Note).collect();
    let ids = db.publish(&bus, &items, true).await;
    let poisoned = ids[13];

    assert!(
        eventually(Duration::from_secs(20), || async {
            db.row(poisoned).await.0 == "failed"
        })
        .await,
        "the poisoned row never failed: {:?}",
        db.row(poisoned).await
    );
    assert!(
        eventually(Duration::from_secs(10), || async { recorder.len() >= 39 }).await,
        "the other rows did not flow"
    );
    // More events keep flowing after it failed.
    db.publish(&bus, &[Item::Note(100)], true).await;
    assert!(eventually(Duration::from_secs(10), || async { recorder.len() >= 40 }).await);
    relay.stop().await;

    let (status, attempts, last_error) = db.row(poisoned).await;
    assert_eq!(status, "failed");
    assert_eq!(attempts, 3);
    let last_error = last_error.expect("last_error");
    assert!(
        last_error.contains("message too large (n = 13)"),
        "{last_error}"
    );

    let log = recorder.log();
    let mut seen: Vec<u64> = log.iter().map(|d| d.n).collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (0..40).filter(|n| *n != 13).chain([100]).collect();
    assert_eq!(seen, expected, "every other event exactly once");
    let counts = db.counts().await;
    assert_eq!(
        (counts.pending, counts.published, counts.failed),
        (0, 40, 1)
    );

    // Once fixed, failed rows can be sent again.
    assert_eq!(outbox::retry_failed(db.database()).await.unwrap(), 1);
    assert_eq!(db.row(poisoned).await.0, "pending");
}

/// Rows scheduled with `publish_at` are not sent before their time.
pub async fn scheduled_rows_wait_for_available_at(db: Db) {
    let recorder = Recorder::default();
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(bus.clone(), fast(RelayOptions::new(db.database())));

    let at = SystemTime::now() + Duration::from_millis(1500);
    let later = SystemTime::now() + Duration::from_secs(3600);
    db.publish(
        &bus,
        &[Item::NoteAt(1, at), Item::Note(2), Item::NoteAt(3, later)],
        true,
    )
    .await;

    assert!(eventually(Duration::from_secs(5), || async { recorder.len() >= 1 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        recorder.log().iter().map(|d| d.n).collect::<Vec<_>>(),
        vec![2],
        "only the unscheduled row goes out at once"
    );
    assert!(eventually(Duration::from_secs(10), || async { recorder.len() >= 2 }).await);
    relay.stop().await;

    let log = recorder.log();
    assert_eq!(log.iter().map(|d| d.n).collect::<Vec<_>>(), vec![2, 1]);
    assert!(
        log[1].at >= at,
        "sent {:?} before its time",
        at.duration_since(log[1].at).unwrap_or_default()
    );
    let counts = db.counts().await;
    assert_eq!(
        (counts.pending, counts.published),
        (1, 2),
        "the row due in an hour waits"
    );
}

/// Rows of one key go out in insertion order, with several relays and a
/// transport that fails at random; rows without a key all go out.
pub async fn rows_of_a_key_go_out_in_order(db: Db, relays: usize) {
    let recorder = Recorder::default();
    recorder.set_flaky(0.2);
    let bus = bus_on(recorder.clone()).await;
    let running: Vec<Running> = (0..relays)
        .map(|_| {
            Running::start(
                bus.clone(),
                fast(
                    RelayOptions::new(db.database())
                        .batch_size(7)
                        .max_attempts(1_000),
                ),
            )
        })
        .collect();

    const KEYS: u64 = 6;
    const PER_KEY: u64 = 60;
    let db = Arc::new(db);
    let mut writers = Vec::new();
    for k in 0..KEYS {
        let (db, bus) = (db.clone(), bus.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_KEY {
                let n = k * 1_000 + i;
                // Sometimes two rows of the key in one transaction.
                let mut items = vec![Item::Keyed(format!("key-{k}"), n)];
                items.push(Item::Note(100_000 + n));
                db.publish(&bus, &items, true).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = (KEYS * PER_KEY * 2) as usize;
    let done = eventually(Duration::from_secs(60), || async {
        recorder.len() >= total
    })
    .await;
    let mut ends = Vec::new();
    for r in running {
        ends.push(r.finish().await);
    }
    assert!(
        done,
        "only {} of {total} delivered; relays: {ends:?}; pending: {}",
        recorder.len(),
        db.dump_pending().await
    );
    assert!(ends.iter().all(|e| e.is_ok()), "{ends:?}");

    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut unkeyed = Vec::new();
    for d in recorder.log() {
        match d.subject {
            Some(key) => by_key.entry(key).or_default().push(d.n),
            None => unkeyed.push(d.n),
        }
    }
    assert_eq!(by_key.len() as u64, KEYS);
    for (key, ns) in &by_key {
        let k: u64 = key.trim_start_matches("key-").parse().unwrap();
        let expected: Vec<u64> = (0..PER_KEY).map(|i| k * 1_000 + i).collect();
        assert_eq!(ns, &expected, "rows of {key} out of order or duplicated");
    }
    unkeyed.sort_unstable();
    unkeyed.dedup();
    assert_eq!(unkeyed.len() as u64, KEYS * PER_KEY);
    assert!(recorder.calls() > 0);
}

/// A row that failed does not block its key for ever: once it is `failed`,
/// the rows after it go out (in order); until then they wait.
pub async fn a_failing_row_holds_back_its_key_until_it_fails(db: Db) {
    let recorder = Recorder::default();
    recorder.poison(2);
    let bus = bus_on(recorder.clone()).await;
    let relay = Running::start(
        bus.clone(),
        fast(RelayOptions::new(db.database()).max_attempts(4)).backoff(RetryPolicy {
            initial: Duration::from_millis(150),
            max: Duration::from_millis(150),
        }),
    );
    let items: Vec<Item> = (1..=4).map(|n| Item::Keyed("k".into(), n)).collect();
    let ids = db.publish(&bus, &items, true).await;
    db.publish(&bus, &[Item::Keyed("other".into(), 10)], true)
        .await;

    // 1 and the other key go out at once; 3 and 4 wait behind 2.
    assert!(eventually(Duration::from_secs(5), || async { recorder.len() >= 2 }).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early: Vec<u64> = recorder.log().iter().map(|d| d.n).collect();
    assert!(!early.contains(&3) && !early.contains(&4), "{early:?}");

    assert!(
        eventually(Duration::from_secs(20), || async { recorder.len() >= 4 }).await,
        "the rows after the failed one never went out"
    );
    relay.stop().await;
    assert_eq!(db.row(ids[1]).await.0, "failed");
    let keyed: Vec<u64> = recorder
        .log()
        .iter()
        .filter(|d| d.subject.as_deref() == Some("k"))
        .map(|d| d.n)
        .collect();
    assert_eq!(keyed, vec![1, 3, 4]);
}

/// With the transport down, rows stay pending with growing attempts; all
/// go out once after it is back.
pub async fn transport_down_then_back(db: &Db, recorder: &Recorder, bus: &Bus) -> Vec<uuid::Uuid> {
    recorder.set_down(true);
    let items: Vec<Item> = (0..200).map(Item::Note).collect();
    let mut ids = Vec::new();
    for chunk in items.chunks(50) {
        ids.extend(db.publish(bus, chunk, true).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.pending_attempts().await.1 >= 3
        })
        .await,
        "attempts do not grow: {:?}",
        db.pending_attempts().await
    );
    let counts = db.counts().await;
    assert_eq!(
        (counts.pending, counts.published, counts.failed),
        (200, 0, 0)
    );
    assert_eq!(recorder.len(), 0);
    ids
}

pub async fn all_delivered_once(db: &Db, recorder: &Recorder, ids: &[uuid::Uuid]) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            recorder.len() >= ids.len()
        })
        .await,
        "only {} of {} delivered after the transport came back",
        recorder.len(),
        ids.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered: HashMap<String, usize> =
        recorder.log().into_iter().fold(HashMap::new(), |mut m, d| {
            *m.entry(d.id).or_default() += 1;
            m
        });
    assert_eq!(delivered.len(), ids.len());
    for id in ids {
        assert_eq!(delivered.get(&id.to_string()), Some(&1), "{id}");
    }
    let counts = db.counts().await;
    assert_eq!(counts.pending, 0);
}

// ------------------------------------------------------ the child relay process

/// Environment of a child relay process.
pub const CHILD_DB: &str = "OUTBOX_TEST_CHILD_DB";
pub const CHILD_SINK: &str = "OUTBOX_TEST_CHILD_SINK";
pub const CHILD_MODE: &str = "OUTBOX_TEST_CHILD_MODE";
pub const CHILD_BATCH: &str = "OUTBOX_TEST_CHILD_BATCH";

/// A transport for child processes: appends the ids it accepts to a file
/// (one line each, written before `publish` returns), optionally slowly, or
/// hangs for ever (after writing, in `write-then-hang`) once it saw a batch.
struct FileSink {
    file: Mutex<std::fs::File>,
    mode: String,
}

impl Transport for FileSink {
    fn name(&self) -> &'static str {
        "file-sink"
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.mode == "hang" {
                println!("CLAIMED {}", batch.len());
                std::io::stdout().flush().ok();
                futures::future::pending::<()>().await;
            }
            let mut text = String::new();
            for m in batch {
                text.push_str(&read(&m.payload).id);
                text.push('\n');
            }
            self.file
                .lock()
                .write_all(text.as_bytes())
                .map_err(Error::Io)?;
            if self.mode == "write-then-hang" {
                println!("CLAIMED {}", batch.len());
                std::io::stdout().flush().ok();
                futures::future::pending::<()>().await;
            }
            if self.mode == "slow" {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    }

    fn publish_at(&self, message: Outgoing, _at: SystemTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.publish(std::slice::from_ref(&message)).await })
    }

    fn declare<'a>(&'a self, _group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn subscribe<'a>(
        &'a self,
        _group: &'a GroupSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async { Err(Error::Config("no subscribers".into())) })
    }

    fn claim_tick<'a>(&'a self, _schedule: &'a str, _tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(true) })
    }

    fn dead_letters(&self, _limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn replay<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
}

/// The body of the child process: a relay until killed. Returns at once
/// when this process is not a child.
pub async fn child_main() {
    let Ok(url) = std::env::var(CHILD_DB) else {
        return;
    };
    let sink = std::env::var(CHILD_SINK).expect("sink path");
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let batch: usize = std::env::var(CHILD_BATCH)
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(100);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&sink)
        .expect("sink file");
    let bus = bus_on(FileSink {
        file: Mutex::new(file),
        mode,
    })
    .await;
    let db = Database::connect(&url).await.expect("database");
    let relay = Relay::new(bus, fast(RelayOptions::new(db).batch_size(batch)));
    println!("READY");
    std::io::stdout().flush().ok();
    relay.run(CancellationToken::new()).await.expect("relay");
}

/// A relay in another OS process (this test binary, running only `test`).
pub struct Child {
    pub process: std::process::Child,
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Child {
    pub fn spawn(test: &str, db_url: &str, sink: &Path, mode: &str, batch: usize) -> Child {
        let mut process = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, db_url)
            .env(CHILD_SINK, sink)
            .env(CHILD_MODE, mode)
            .env(CHILD_BATCH, batch.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn the child relay");
        let stdout = std::io::BufReader::new(process.stdout.take().unwrap());
        let mut child = Child { process, stdout };
        child.wait_for_line("READY");
        child
    }

    /// Blocks until the child prints a line holding `prefix`; returns the
    /// line from `prefix` on (libtest may have written `test name ... ` before it).
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("child stdout");
            assert!(n > 0, "the child exited before printing {prefix}");
            if let Some(at) = line.find(prefix) {
                return line[at..].trim().to_owned();
            }
        }
    }

    /// SIGKILL: no destructor, no rollback, no goodbye.
    pub fn kill(mut self) {
        self.process.kill().expect("SIGKILL");
        self.process.wait().expect("reap");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Lines of the sink files.
pub fn sink_ids(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Two relay processes over 10,000 rows written while they run: all
/// delivered, none twice. With `both`, both relays must have sent some
/// (PostgreSQL; SQLite's write lock is not fair, one relay may take all).
pub async fn two_relay_processes(db: Db, test: &str, both: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sinks = [dir.path().join("a.log"), dir.path().join("b.log")];
    let a = Child::spawn(test, db.url(), &sinks[0], "slow", 50);
    let b = Child::spawn(test, db.url(), &sinks[1], "slow", 50);

    let bus = bus_on(Recorder::default()).await;
    const ROWS: u64 = 10_000;
    let mut ids = HashSet::new();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(100) {
        let items: Vec<Item> = chunk.iter().map(|n| Item::Note(*n)).collect();
        ids.extend(
            db.publish(&bus, &items, true)
                .await
                .into_iter()
                .map(|i| i.to_string()),
        );
    }
    assert!(
        eventually(Duration::from_secs(120), || async {
            db.counts().await.pending == 0
        })
        .await,
        "rows left pending: {:?}",
        db.counts().await
    );
    a.kill();
    b.kill();

    let per_relay: Vec<usize> = sinks
        .iter()
        .map(|s| sink_ids(std::slice::from_ref(s)).len())
        .collect();
    let all = sink_ids(&sinks);
    let distinct: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(distinct, ids, "every event delivered");
    assert_eq!(
        all.len(),
        ROWS as usize,
        "no event published twice (per relay: {per_relay:?})"
    );
    if both {
        assert!(
            per_relay.iter().all(|n| *n > 0),
            "both relays took part: {per_relay:?}"
        );
    }
    assert_eq!(db.counts().await.published, ROWS);
}

/// A relay process killed with SIGKILL mid-batch (`mode`: `hang` = after
/// the claim, before publishing; `write-then-hang` = after publishing,
/// before committing): its rows are not lost; another relay sends them.
pub async fn killed_relay_loses_nothing(db: Db, test: &str, mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("killed.log");
    let bus = bus_on(Recorder::default()).await;
    let items: Vec<Item> = (0..300).map(Item::Note).collect();
    let ids: HashSet<String> = db
        .publish(&bus, &items, true)
        .await
        .into_iter()
        .map(|i| i.to_string())
        .collect();

    let mut child = Child::spawn(test, db.url(), &sink, mode, 100);
    let claimed = child.wait_for_line("CLAIMED");
    assert_eq!(claimed, "CLAIMED 100");
    // The child holds its batch: in the middle of a round.
    assert_eq!(db.counts().await.pending, 300);
    child.kill();

    let recorder = Recorder::default();
    let relay = Running::start(
        bus_on(recorder.clone()).await,
        fast(RelayOptions::new(db.database())),
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.counts().await.published == 300
        })
        .await,
        "rows lost after the kill: {:?}",
        db.counts().await
    );
    relay.stop().await;
    let delivered: HashSet<String> = recorder.log().into_iter().map(|d| d.id).collect();
    let before_kill: HashSet<String> = sink_ids(&[sink]).into_iter().collect();
    if mode == "hang" {
        assert!(before_kill.is_empty());
        assert_eq!(delivered, ids, "every event delivered after the kill");
    } else {
        // Published but not committed: sent again (at least once).
        assert_eq!(before_kill.len(), 100);
        assert!(before_kill.is_subset(&delivered));
        assert_eq!(delivered, ids);
    }
}

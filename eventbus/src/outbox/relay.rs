//! The relay: moves committed outbox rows to the transport.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "postgres")]
use super::postgres;
#[cfg(feature = "sqlite")]
use super::sqlite;
use super::{Claimed, Database, Failure, db_error};
use crate::RetryPolicy;
use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::transport::Outgoing;

/// Rows that fail on their own, one after the other with none succeeding,
/// before a failed batch is blamed on the transport rather than on its rows.
const OUTAGE_PROBES: usize = 3;
/// How long a relay waits when due rows are held by another relay.
const BUSY_WAIT: Duration = Duration::from_millis(50);
/// Rows deleted per statement by the retention cleanup.
const CLEANUP_CHUNK: i64 = 5_000;
/// Statements per cleanup run, so that a huge backlog does not stall the relay.
const CLEANUP_CHUNKS_PER_RUN: usize = 20;
/// Longest `last_error` kept.
const MAX_ERROR_LEN: usize = 2_000;

/// The settings of a [`Relay`]: the database and its tunables.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # fn demo(pool: sqlx::PgPool) {
/// use std::time::Duration;
/// use eventbus::outbox::RelayOptions;
/// let options = RelayOptions::new(&pool)
///     .batch_size(1_000)
///     .max_attempts(10)
///     .retention(Some(Duration::from_secs(24 * 3600)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RelayOptions {
    db: Database,
    batch_size: usize,
    max_attempts: u32,
    backoff: RetryPolicy,
    outage_backoff: RetryPolicy,
    poll_interval: Option<Duration>,
    publish_timeout: Duration,
    retention: Option<Duration>,
    cleanup_interval: Duration,
}

impl RelayOptions {
    /// Default options on `db` (a pool, or a [`Database`]).
    pub fn new(db: impl Into<Database>) -> Self {
        Self {
            db: db.into(),
            batch_size: 500,
            max_attempts: 25,
            backoff: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            outage_backoff: RetryPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            poll_interval: None,
            publish_timeout: Duration::from_secs(10),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            cleanup_interval: Duration::from_secs(60),
        }
    }

    /// Rows claimed and published per round, in one transport batch (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Publish attempts of a row before it becomes `failed` (default 25:
    /// about two hours of backoff with the default policy).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delay before retrying a row after its n-th failed attempt (default
    /// 1 s doubling up to 5 min, with jitter).
    pub fn backoff(mut self, policy: RetryPolicy) -> Self {
        self.backoff = policy;
        self
    }

    /// How long the relay sleeps, with no transaction open, while the
    /// transport looks down or the database fails (default 0.5 s doubling up
    /// to 30 s, with jitter).
    pub fn outage_backoff(mut self, policy: RetryPolicy) -> Self {
        self.outage_backoff = policy;
        self
    }

    /// Longest idle wait between two looks at the table (default 500 ms on
    /// PostgreSQL, where `NOTIFY` wakes the relay at once; 100 ms on SQLite).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// A batch the transport has not accepted in this time has failed (default 10 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Published rows are deleted this long after publication (default 7
    /// days); `None` keeps them. `failed` rows are never deleted.
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// How often the retention cleanup runs (default every minute).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn poll(&self) -> Duration {
        self.poll_interval.unwrap_or(match &self.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => Duration::from_millis(500),
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => Duration::from_millis(100),
        })
    }
}

/// What one relay round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundReport {
    /// Rows locked by the claim.
    pub claimed: usize,
    /// Rows the transport accepted.
    pub published: usize,
    /// Rows that failed and will be retried after their backoff.
    pub retried: usize,
    /// Rows that failed for the last time (`max_attempts`) and are now `failed`.
    pub failed: usize,
    /// The transport looked down: the relay backs off before the next round.
    pub outage: bool,
}

/// Moves committed outbox rows to the bus's transport. See the [module
/// docs](super) for the algorithm and its guarantees.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn demo(pool: sqlx::PgPool) -> eventbus::Result<()> {
/// use eventbus::outbox::{Relay, RelayOptions};
/// let bus = eventbus::Bus::builder().without_registered().connect("redis://127.0.0.1:6379").await?;
/// let relay = Relay::new(bus, RelayOptions::new(&pool));
/// relay.run(tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    bus: Bus,
    options: RelayOptions,
    beat: Arc<crate::metrics::RelayBeat>,
}

/// Why a publish failed.
struct PublishError {
    message: String,
    timed_out: bool,
}

/// What to write back after publishing the claimed rows.
#[derive(Default)]
struct Outcome {
    published: Vec<i64>,
    failures: Vec<Failure>,
    report: RoundReport,
}

/// A claimed row without its message.
struct Meta {
    seq: i64,
    id: String,
    event_type_for_log: String,
    key: Option<String>,
    attempts: i32,
}

impl Relay {
    /// A relay publishing through `bus`'s transport.
    pub fn new(bus: Bus, options: RelayOptions) -> Self {
        let beat = Arc::new(crate::metrics::RelayBeat::new());
        Self { bus, options, beat }
    }

    /// The options.
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Runs until `token` is cancelled: rounds back to back while there is
    /// work, then waits for a `NOTIFY`, the next due row, or the poll
    /// interval; backs off while the transport or the database is down;
    /// cleans up old published rows. Returns an error only for set-up
    /// mistakes (the table is missing); outages are logged and outlived.
    pub async fn run(&self, token: CancellationToken) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let listener: Option<tokio::task::JoinHandle<()>> = match &self.options.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => Some(postgres::spawn_listener(
                pool.clone(),
                wake.clone(),
                token.child_token(),
            )),
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => None,
        };
        tracing::info!(
            database = self.options.db.kind(),
            transport = self.bus.transport().name(),
            "outbox relay running"
        );
        crate::metrics::register_relay(&self.bus, &self.beat);
        let (db, beat, every) = (
            self.options.db.clone(),
            self.beat.clone(),
            self.bus.metrics().interval,
        );
        let sampler = tokio::spawn(crate::metrics::sample_outbox(
            db,
            beat,
            every,
            token.child_token(),
        ));
        let result = self.run_loop(&token, &wake).await;
        sampler.abort();
        crate::metrics::unregister_relay(&self.bus, &self.beat);
        if let Some(listener) = listener {
            listener.abort();
        }
        tracing::info!("outbox relay stopped");
        result
    }

    async fn run_loop(&self, token: &CancellationToken, wake: &Notify) -> Result<()> {
        let poll = self.options.poll();
        let mut outages = 0u32;
        let mut errors = 0u32;
        let mut next_cleanup = tokio::time::Instant::now();
        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            // `(wait, wakeable)`: how long to wait, and whether a NOTIFY may cut it short.
            let round = if outages > 0 {
                self.round_after_outage().await
            } else {
                self.run_once().await
            };
            tracing::trace!(?round, "outbox relay round");
            let (wait, wakeable) = match round {
                Ok(report) if report.outage => {
                    self.beat.failed("the transport looks down");
                    outages += 1;
                    let wait = self.options.outage_backoff.delay(outages);
                    tracing::warn!(
                        rows = report.claimed,
                        "the transport looks down; outbox relay backs off for {wait:?}"
                    );
                    (Some(wait), false)
                }
                Ok(report) => {
                    self.beat.ok();
                    errors = 0;
                    if report.published > 0 && outages > 0 {
                        outages = 0;
                        match self.end_backoffs().await {
                            Ok(n) => tracing::info!(
                                rows = n,
                                "the transport is back; rows in backoff are due again"
                            ),
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                    if report.published > 0 {
                        (None, true)
                    } else {
                        (Some(self.idle_wait(poll).await), true)
                    }
                }
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => {
                    self.beat.failed(e.to_string());
                    errors += 1;
                    let wait = self.options.outage_backoff.delay(errors);
                    tracing::warn!("outbox relay round failed, next try in {wait:?}: {e}");
                    (Some(wait), false)
                }
            };
            if self.options.retention.is_some() && tokio::time::Instant::now() >= next_cleanup {
                next_cleanup = tokio::time::Instant::now() + self.options.cleanup_interval;
                match self.cleanup().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "outbox cleanup"),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            let Some(wait) = wait else { continue };
            if wakeable {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// How long to sleep when there was nothing to do.
    async fn idle_wait(&self, poll: Duration) -> Duration {
        let due = match &self.options.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => postgres::next_due(pool).await,
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => sqlite::next_due(pool).await,
        };
        match due {
            Ok(None) => poll,
            // Due but not claimable: another relay holds it.
            Ok(Some(ms)) if ms <= 0 => poll.min(BUSY_WAIT),
            // A little after it is due, so that the claim's clock has passed it.
            Ok(Some(ms)) => poll.min(Duration::from_millis(ms as u64 + 2)),
            Err(e) => {
                tracing::debug!("{e}");
                poll
            }
        }
    }

    /// A round while the transport looked down: first a `ping` with no lock
    /// held; if the transport still fails, the due rows are charged an attempt
    /// (a short claim and update, no publish) instead of being held locked
    /// while a publish waits on a dead server.
    async fn round_after_outage(&self) -> Result<RoundReport> {
        let transport = self.bus.transport();
        let down = match tokio::time::timeout(self.options.publish_timeout, transport.ping()).await
        {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(error_chain(&e)),
            Err(_) => Some(format!(
                "the {} transport did not answer within {:?}",
                transport.name(),
                self.options.publish_timeout
            )),
        };
        match down {
            None => self.run_once().await,
            Some(error) => self.round(Some(&error)).await,
        }
    }

    /// One round: claims a batch, publishes it, records the outcome, commits.
    pub async fn run_once(&self) -> Result<RoundReport> {
        self.round(None).await
    }

    /// A round; with `down`, the transport is known to fail with that error:
    /// the claimed rows are charged without a publish.
    async fn round(&self, down: Option<&str>) -> Result<RoundReport> {
        let batch = self.options.batch_size;
        match &self.options.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(db_error("cannot start a relay transaction"))?;
                let rows = postgres::claim(&mut tx, batch).await?;
                if rows.is_empty() {
                    tx.commit().await.map_err(db_error("cannot commit"))?;
                    return Ok(RoundReport::default());
                }
                let outcome = match down {
                    None => self.publish(rows).await,
                    Some(error) => self.charge(rows, error),
                };
                postgres::mark_published(&mut tx, &outcome.published).await?;
                postgres::mark_failed(&mut tx, &outcome.failures).await?;
                tx.commit()
                    .await
                    .map_err(db_error("cannot commit published outbox rows"))?;
                Ok(outcome.report)
            }
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => {
                // Look before taking SQLite's one write lock.
                if !sqlite::any_due(pool).await? {
                    return Ok(RoundReport::default());
                }
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_error("cannot start a relay transaction"))?;
                let rows = sqlite::claim(&mut tx, batch).await?;
                if rows.is_empty() {
                    tx.commit().await.map_err(db_error("cannot commit"))?;
                    return Ok(RoundReport::default());
                }
                let outcome = match down {
                    None => self.publish(rows).await,
                    Some(error) => self.charge(rows, error),
                };
                sqlite::mark_published(&mut tx, &outcome.published).await?;
                sqlite::mark_failed(&mut tx, &outcome.failures).await?;
                tx.commit()
                    .await
                    .map_err(db_error("cannot commit published outbox rows"))?;
                Ok(outcome.report)
            }
        }
    }

    /// Deletes published rows older than the retention; returns how many.
    pub async fn cleanup(&self) -> Result<u64> {
        let Some(retention) = self.options.retention else {
            return Ok(0);
        };
        let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
        let mut total = 0;
        for _ in 0..CLEANUP_CHUNKS_PER_RUN {
            let n = match &self.options.db {
                #[cfg(feature = "postgres")]
                Database::Postgres(pool) => {
                    postgres::cleanup(pool, retention_ms, CLEANUP_CHUNK).await?
                }
                #[cfg(feature = "sqlite")]
                Database::Sqlite(pool) => {
                    sqlite::cleanup(pool, retention_ms, CLEANUP_CHUNK).await?
                }
            };
            total += n;
            if n < CLEANUP_CHUNK as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// Makes the rows waiting out a retry backoff due now.
    async fn end_backoffs(&self) -> Result<u64> {
        match &self.options.db {
            #[cfg(feature = "postgres")]
            Database::Postgres(pool) => postgres::recover(pool).await,
            #[cfg(feature = "sqlite")]
            Database::Sqlite(pool) => sqlite::recover(pool).await,
        }
    }

    async fn try_publish(&self, batch: &[Outgoing]) -> std::result::Result<(), PublishError> {
        match tokio::time::timeout(
            self.options.publish_timeout,
            tracing::Instrument::instrument(
                self.bus.publish_encoded(batch),
                crate::trace::relay_span(self.bus.transport().name(), batch),
            ),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishError {
                message: error_chain(&e),
                timed_out: false,
            }),
            Err(_) => Err(PublishError {
                message: format!(
                    "the {} transport did not accept the batch within {:?}",
                    self.bus.transport().name(),
                    self.options.publish_timeout
                ),
                timed_out: true,
            }),
        }
    }

    /// Publishes the claimed rows: all at once, or one by one to find the
    /// rows that fail if the batch fails.
    async fn publish(&self, rows: Vec<Claimed>) -> Outcome {
        let mut outcome = Outcome::default();
        outcome.report.claimed = rows.len();
        let mut metas = Vec::with_capacity(rows.len());
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            metas.push(Meta {
                seq: row.seq,
                id: row.id,
                event_type_for_log: row.event_type.clone(),
                key: row.key,
                attempts: row.attempts,
            });
            batch.push(Outgoing {
                event_type: Cow::Owned(row.event_type),
                payload: Bytes::from(row.payload),
            });
        }
        if batch.is_empty() {
            return outcome;
        }
        let error = match self.try_publish(&batch).await {
            Ok(()) => {
                outcome.published = metas.iter().map(|m| m.seq).collect();
                outcome.report.published = metas.len();
                tracing::debug!(rows = metas.len(), "outbox batch published");
                return outcome;
            }
            Err(e) => e,
        };
        if batch.len() == 1 {
            self.fail(&mut outcome, &metas[0], &error.message);
            outcome.report.outage = error.timed_out;
            return outcome;
        }
        if error.timed_out {
            for meta in &metas {
                self.fail(&mut outcome, meta, &error.message);
            }
            outcome.report.outage = true;
            return outcome;
        }

        // Find the rows that fail. Rows after a failed row of their key wait.
        tracing::debug!(
            rows = metas.len(),
            "outbox batch failed, publishing its rows one by one: {}",
            error.message
        );
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let mut skipped: Vec<usize> = Vec::new();
        let mut successes = 0usize;
        let mut failures_in_a_row = 0usize;
        for (i, meta) in metas.iter().enumerate() {
            if let Some(key) = meta.key.as_deref()
                && failed_keys.contains(key)
            {
                skipped.push(i);
                continue;
            }
            match self.try_publish(std::slice::from_ref(&batch[i])).await {
                Ok(()) => {
                    outcome.published.push(meta.seq);
                    outcome.report.published += 1;
                    successes += 1;
                    failures_in_a_row = 0;
                }
                Err(e) => {
                    self.fail(&mut outcome, meta, &e.message);
                    if let Some(key) = meta.key.as_deref() {
                        failed_keys.insert(key);
                    }
                    failures_in_a_row += 1;
                    if e.timed_out || (successes == 0 && failures_in_a_row >= OUTAGE_PROBES) {
                        // The transport is down: every row of the batch was
                        // attempted (in the batch) and failed.
                        for rest in skipped.iter().copied().chain(i + 1..metas.len()) {
                            self.fail(&mut outcome, &metas[rest], &error.message);
                        }
                        outcome.report.outage = true;
                        break;
                    }
                }
            }
        }
        outcome
    }

    /// Charges every claimed row one failed attempt with `error`.
    fn charge(&self, rows: Vec<Claimed>, error: &str) -> Outcome {
        let mut outcome = Outcome::default();
        outcome.report.claimed = rows.len();
        outcome.report.outage = true;
        for row in rows {
            let meta = Meta {
                seq: row.seq,
                id: row.id,
                event_type_for_log: row.event_type,
                key: row.key,
                attempts: row.attempts,
            };
            self.fail(&mut outcome, &meta, error);
        }
        outcome
    }

    fn fail(&self, outcome: &mut Outcome, meta: &Meta, error: &str) {
        let attempt = u32::try_from(meta.attempts).unwrap_or(0).saturating_add(1);
        let dead = attempt >= self.options.max_attempts;
        let delay = self.options.backoff.delay(attempt);
        if dead {
            outcome.report.failed += 1;
            tracing::error!(
                id = %meta.id,
                event_type = %meta.event_type_for_log,
                attempts = attempt,
                "outbox row failed for good after {attempt} attempts: {error}"
            );
        } else {
            outcome.report.retried += 1;
            tracing::debug!(
                id = %meta.id,
                attempts = attempt,
                "outbox row failed, next attempt in {delay:?}: {error}"
            );
        }
        let mut error = error.to_owned();
        if error.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
        outcome.failures.push(Failure {
            seq: meta.seq,
            delay_ms: delay.as_millis().min(i64::MAX as u128) as i64,
            dead,
            error,
        });
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

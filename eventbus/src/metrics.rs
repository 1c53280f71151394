//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: nothing
//! is kept or exported until the application installs a recorder (or turns
//! on the `prometheus` feature and calls [`prometheus::install`]).
//!
//! Every name is a constant of [`METRICS`] (the table in `eventbus/METRICS.md`
//! is generated from it). Counters and the handler histogram are recorded as
//! things happen; the consumer-group gauges are sampled by a running bus
//! every [`BusBuilder::metrics_interval`](crate::BusBuilder::metrics_interval)
//! (10 s by default) from [`Transport::group_stats`], and the outbox gauges
//! by a running relay. A worker registers its handles with the recorder
//! once per event type: install the recorder before the bus handles its
//! first event.

// The relay beats are read by `/readyz` (`http`) and written by the outbox relays.
#![cfg_attr(
    not(all(feature = "http", any(feature = "postgres", feature = "sqlite"))),
    allow(dead_code)
)]

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub use eventbus_core::metrics::*;

use crate::transport::{Delivery, GroupSpec, Outgoing, Transport};

/// How often a bus samples its groups unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The bus's metrics settings and what its health checks read.
#[derive(Debug)]
pub(crate) struct BusMetrics {
    pub interval: Option<Duration>,
    /// The outbox relays running with this bus.
    pub relays: Mutex<Vec<Arc<RelayBeat>>>,
    /// `messaging.client.sent.messages` by event type, registered with the
    /// recorder at the first publish of the type (see [`GroupMetrics`]).
    sent: Mutex<TypeMap<metrics::Counter>>,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self {
            interval: Some(DEFAULT_INTERVAL),
            relays: Mutex::new(Vec::new()),
            sent: Mutex::default(),
        }
    }
}

impl BusMetrics {
    /// `messaging.client.sent.messages`, one increment per run of one type.
    pub(crate) fn sent(&self, transport: &'static str, batch: &[Outgoing]) {
        let mut sent = self.sent.lock();
        for run in batch.chunk_by(|a, b| a.event_type == b.event_type) {
            let ty = &*run[0].event_type;
            let counter = match sent.get(ty) {
                Some(c) => c,
                None => sent.entry(ty.into()).or_insert_with(|| {
                    counter!(SENT_MESSAGES.name, "type" => ty.to_owned(), "transport" => transport)
                }),
            };
            counter.increment(run.len() as u64);
        }
    }
}

/// A map by event type, hashed by FNV-1a: its keys are a few short names, on
/// the path of every event.
type TypeMap<V> = std::collections::HashMap<Box<str>, V, std::hash::BuildHasherDefault<Fnv>>;

/// FNV-1a (64 bits).
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The last round of an outbox relay that went through (for `/readyz` and
/// the `eventbus.outbox.last_round.age` gauge).
#[derive(Debug)]
pub(crate) struct RelayBeat {
    last_ok: Mutex<tokio::time::Instant>,
    /// The last outage or error, while the relay is failing.
    error: Mutex<Option<String>>,
}

impl RelayBeat {
    pub(crate) fn new() -> Self {
        Self {
            last_ok: Mutex::new(tokio::time::Instant::now()),
            error: Mutex::new(None),
        }
    }

    /// A round went through.
    pub(crate) fn ok(&self) {
        *self.last_ok.lock() = tokio::time::Instant::now();
        *self.error.lock() = None;
    }

    /// A round failed (an outage, or a database error).
    pub(crate) fn failed(&self, error: impl Into<String>) {
        *self.error.lock() = Some(error.into());
    }

    pub(crate) fn since_ok(&self) -> Duration {
        self.last_ok.lock().elapsed()
    }

    /// Why the relay is stuck: failing for longer than `after`.
    pub(crate) fn stuck(&self, after: Duration) -> Option<String> {
        let error = self.error.lock().clone()?;
        let since = self.since_ok();
        (since > after).then(|| format!("no relay round went through for {since:?}: {error}"))
    }
}

/// Registers a running relay with its bus, for `/readyz`.
pub(crate) fn register_relay(bus: &crate::Bus, beat: &Arc<RelayBeat>) {
    bus.metrics().relays.lock().push(beat.clone());
}

/// Unregisters a relay that stopped.
pub(crate) fn unregister_relay(bus: &crate::Bus, beat: &Arc<RelayBeat>) {
    bus.metrics()
        .relays
        .lock()
        .retain(|b| !Arc::ptr_eq(b, beat));
}

/// Why the bus's relays are stuck, if one is.
pub(crate) fn relays_stuck(bus: &crate::Bus, after: Duration) -> Option<String> {
    bus.metrics()
        .relays
        .lock()
        .iter()
        .find_map(|b| b.stuck(after))
}

/// A worker's metric handles, registered with the recorder once per event
/// type: an event then costs a map lookup, not a key built (and allocated)
/// and looked up by the recorder. So install the recorder before the bus
/// handles its first event.
#[derive(Default)]
pub(crate) struct GroupMetrics {
    by_type: Mutex<TypeMap<TypeHandles>>,
    /// The transport's name, known from the first read (before anything is
    /// handled).
    transport: std::sync::OnceLock<&'static str>,
}

impl std::fmt::Debug for GroupMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMetrics").finish_non_exhaustive()
    }
}

struct TypeHandles {
    consumed: metrics::Counter,
    ok: metrics::Histogram,
    error: metrics::Histogram,
    retries: metrics::Counter,
    dead: metrics::Counter,
}

impl TypeHandles {
    fn new(group: &Arc<str>, transport: &'static str, event_type: &str) -> Self {
        let (ty, group) = (event_type.to_owned(), group.clone());
        let duration = |outcome: &'static str| {
            histogram!(
                PROCESS_DURATION.name,
                "type" => ty.clone(),
                "group" => group.clone(),
                "outcome" => outcome
            )
        };
        Self {
            consumed: counter!(
                CONSUMED_MESSAGES.name,
                "type" => ty.clone(),
                "group" => group.clone(),
                "transport" => transport
            ),
            ok: duration("ok"),
            error: duration("error"),
            retries: counter!(RETRIES.name, "type" => ty.clone(), "group" => group.clone()),
            dead: counter!(DEAD_LETTERED.name, "type" => ty, "group" => group),
        }
    }
}

impl GroupMetrics {
    fn with<R>(&self, group: &Arc<str>, event_type: &str, f: impl FnOnce(&TypeHandles) -> R) -> R {
        let mut by_type = self.by_type.lock();
        if let Some(handles) = by_type.get(event_type) {
            return f(handles);
        }
        let transport = self.transport.get().copied().unwrap_or("");
        let handles = TypeHandles::new(group, transport, event_type);
        let r = f(&handles);
        by_type.insert(event_type.into(), handles);
        r
    }

    /// `messaging.client.consumed.messages` for what a worker read.
    pub(crate) fn consumed(&self, group: &Arc<str>, transport: &'static str, batch: &[Delivery]) {
        let _ = self.transport.set(transport);
        for run in batch.chunk_by(|a, b| a.event_type == b.event_type) {
            self.with(group, &run[0].event_type, |h| {
                h.consumed.increment(run.len() as u64)
            });
        }
    }

    /// `messaging.process.duration` of one handler run.
    pub(crate) fn processed(&self, group: &Arc<str>, event_type: &str, ok: bool, took: Duration) {
        self.with(group, event_type, |h| {
            if ok { &h.ok } else { &h.error }.record(took.as_secs_f64())
        });
    }

    /// `eventbus.handler.retries`.
    pub(crate) fn retried(&self, group: &Arc<str>, event_type: &str) {
        self.with(group, event_type, |h| h.retries.increment(1));
    }

    /// `eventbus.dead_lettered.messages`.
    pub(crate) fn dead_lettered(&self, group: &Arc<str>, event_type: &str) {
        self.with(group, event_type, |h| h.dead.increment(1));
    }
}

/// The groups a run samples.
pub(crate) fn groups<'a>(specs: impl IntoIterator<Item = &'a GroupSpec>) -> Vec<GroupSpec> {
    specs
        .into_iter()
        .filter(|g| !g.broadcast)
        .cloned()
        .collect()
}

/// Samples the consumer-group gauges once.
pub async fn sample_groups(transport: &dyn Transport, groups: &[GroupSpec]) {
    for group in groups {
        let Some(stats) = transport.group_stats(group) else {
            continue;
        };
        let stats = match stats.await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(group = %group.group, "cannot sample the group's backlog: {e}");
                continue;
            }
        };
        let labels = [
            ("group", group.group.clone()),
            ("transport", transport.name().to_owned()),
        ];
        if let Some(lag) = stats.lag {
            gauge!(CONSUMER_LAG.name, &labels).set(lag as f64);
        }
        if let Some(pending) = stats.pending {
            gauge!(CONSUMER_PENDING.name, &labels).set(pending as f64);
        }
        if let Some(age) = stats.oldest_pending {
            gauge!(CONSUMER_OLDEST_PENDING_AGE.name, &labels).set(age.as_secs_f64());
        }
    }
}

/// Samples the groups every `interval` until `token` fires (a bus's run).
pub(crate) async fn sample_loop(
    transport: Arc<dyn Transport>,
    groups: Vec<GroupSpec>,
    interval: Option<Duration>,
    token: CancellationToken,
) -> crate::Result<()> {
    let Some(interval) = interval else {
        return Ok(());
    };
    if groups.is_empty() {
        return Ok(());
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tick.tick() => sample_groups(&*transport, &groups).await,
        }
    }
}

/// Samples the outbox gauges every `interval` until `token` fires (a relay's run).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) async fn sample_outbox(
    db: crate::outbox::Database,
    beat: Arc<RelayBeat>,
    interval: Option<Duration>,
    token: CancellationToken,
) {
    let Some(interval) = interval else { return };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        gauge!(OUTBOX_LAST_ROUND_AGE.name).set(beat.since_ok().as_secs_f64());
        sample_outbox_once(db.clone()).await;
    }
}

/// Samples `eventbus.outbox.pending`, `.failed` and `.oldest_pending.age`
/// once (a full count of the table, and one indexed query).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub async fn sample_outbox_once(db: impl Into<crate::outbox::Database>) {
    let db = db.into();
    match crate::outbox::counts(db.clone()).await {
        Ok(counts) => {
            gauge!(OUTBOX_PENDING.name).set(counts.pending as f64);
            gauge!(OUTBOX_FAILED.name).set(counts.failed as f64);
        }
        Err(e) => tracing::debug!("cannot count the outbox: {e}"),
    }
    match crate::outbox::oldest_due(db).await {
        Ok(age) => gauge!(OUTBOX_OLDEST_PENDING_AGE.name).set(age.as_secs_f64()),
        Err(e) => tracing::debug!("cannot read the outbox's oldest row: {e}"),
    }
}

/// The Prometheus exporter (feature `prometheus`): a recorder whose
/// [`PrometheusHandle`](metrics_exporter_prometheus::PrometheusHandle)
/// renders the text exposition that `GET /metrics` serves
/// ([`crate::health::router`]).
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus {
    use std::sync::OnceLock;

    pub use metrics_exporter_prometheus::{
        PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
    };

    use super::PROCESS_DURATION;
    use crate::{Error, Result};

    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

    /// Buckets of `messaging.process.duration`, in seconds.
    pub const DURATION_BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];

    /// A builder with eventbus's histogram buckets, for [`install_with`] or a
    /// recorder of the caller's own.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(PROCESS_DURATION.name.to_owned()),
                DURATION_BUCKETS,
            )
            .expect("the buckets are not empty")
    }

    /// Installs a Prometheus recorder as the global recorder (once per
    /// process) and returns its handle, which `GET /metrics` then renders
    /// (call [`PrometheusHandle::run_upkeep`] now and then if the process
    /// records many histograms and is rarely scraped).
    pub fn install() -> Result<PrometheusHandle> {
        install_with(builder())
    }

    /// [`install`] with the caller's builder (start from [`builder`]). Fails
    /// if a global recorder is installed already (a second call).
    pub fn install_with(builder: PrometheusBuilder) -> Result<PrometheusHandle> {
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| {
            Error::Config(format!(
                "cannot install the Prometheus recorder: {e} (another metrics recorder is installed)"
            ))
        })?;
        let _ = HANDLE.set(handle.clone());
        Ok(handle)
    }

    /// Uses `handle` for `GET /metrics` (a recorder installed by the caller,
    /// or a local one in tests); the first handle set stays.
    pub fn set_handle(handle: PrometheusHandle) {
        let _ = HANDLE.set(handle);
    }

    /// The handle `GET /metrics` renders, once installed.
    pub fn handle() -> Option<&'static PrometheusHandle> {
        HANDLE.get()
    }
}

//! [`Bus`]: publish events, run handlers.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::RetryPolicy;
use crate::codec::{self, Stamp};
use crate::context::StateMap;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handler::HandlerDef;
use crate::registry::{EventRegistration, HandlerRegistration, Registry, ScheduleRegistration};
use crate::routing::{self, RouteSpec, Router, Target};
use crate::schedule::ScheduleDef;
use crate::transport::{DeadLetter, GroupSpec, Outgoing, Topics, Transport};
use crate::worker::{self, WorkerSpec};

/// Handlers retry this many times after the first attempt unless `retries = N` says otherwise.
pub const DEFAULT_RETRIES: u32 = 5;
/// Events one handler instance handles at once unless `concurrency = N` says otherwise.
pub const DEFAULT_CONCURRENCY: u32 = 16;

/// The event bus of a service: publishes typed events and runs the handlers.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    source: String,
    transport: Arc<dyn Transport>,
    /// The same transport when the bus routes events by type over several.
    router: Option<Arc<Router>>,
    registry: Registry,
    workers: Vec<Arc<WorkerSpec>>,
    state: StateMap,
    retry: RetryPolicy,
    process_parent: crate::trace::ProcessParent,
    shutdown_timeout: Duration,
    shutdown: CancellationToken,
    warned: Mutex<HashSet<&'static str>>,
    background: Vec<Background>,
    /// Where the bus is in its run, for [`Bus::ready`].
    phase: tokio::sync::watch::Sender<Phase>,
    metrics: crate::metrics::BusMetrics,
    /// The Celery broker of the bus's Celery tasks, when they have one.
    #[cfg(feature = "redis")]
    celery: Option<crate::celery::CeleryTransport>,
}

/// Where a bus is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not run yet.
    Idle,
    /// Its workers are subscribing.
    Starting,
    /// Every subscription is live.
    Ready,
    /// The run ended (shut down, or failed).
    Stopped,
}

/// Marks the run stopped when it ends, however it ends.
struct StopOnDrop<'a>(&'a tokio::sync::watch::Sender<Phase>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(Phase::Stopped);
    }
}

/// A long-running task that [`Bus::run`] runs next to the handlers (an outbox
/// relay, for instance). It gets the bus and a token cancelled at shutdown.
pub type BackgroundFn =
    Arc<dyn Fn(Bus, CancellationToken) -> BoxFuture<'static, Result<()>> + Send + Sync>;

#[derive(Clone)]
struct Background {
    name: String,
    run: BackgroundFn,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("service", &self.inner.service)
            .field("transport", &self.inner.transport.name())
            .field("groups", &self.groups().collect::<Vec<_>>())
            .finish()
    }
}

impl Bus {
    /// Starts building a bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// The service name (the default `source` and group prefix).
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The checked registry of this bus: events, handlers, schedules.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The Celery broker of this bus's Celery tasks (`#[event("name",
    /// celery)]`), when the bus runs on Redis: to send tasks no Rust type
    /// declares ([`CeleryTransport::send_task`](crate::celery::CeleryTransport::send_task)),
    /// give a task's result, read one.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn celery(&self) -> Option<&crate::celery::CeleryTransport> {
        self.inner.celery.as_ref()
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// The consumer groups this bus runs (one per handler).
    pub fn groups(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.workers.iter().map(|w| w.group.group.as_str())
    }

    /// The app state of type `T` given to [`BusBuilder::state`].
    ///
    /// # Panics
    /// If no state of that type was given; see [`Bus::try_state`].
    pub fn state<T: Send + Sync + 'static>(&self) -> &T {
        self.try_state().unwrap_or_else(|| {
            panic!(
                "no state of type `{}` was given to the bus; add `.state(value)` to `Bus::builder()`",
                std::any::type_name::<T>()
            )
        })
    }

    /// The app state of type `T`, if any.
    pub fn try_state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .state
            .get(&TypeId::of::<T>())
            .and_then(|s| s.downcast_ref())
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    pub(crate) fn process_parent(&self) -> crate::trace::ProcessParent {
        self.inner.process_parent
    }

    /// Encodes `event` as a structured CloudEvent, stamped with a fresh UUIDv7
    /// id, the time and the [current trace context](crate::trace::current);
    /// returns the id with the message.
    pub fn encode<E: Event>(&self, event: &E) -> Result<(uuid::Uuid, Outgoing)> {
        let (now, time) = codec::now_stamped();
        self.encode_at(event, now, &time, crate::trace::current().as_ref())
    }

    /// [`Bus::encode`] at `now`, already formatted as `time`.
    fn encode_at<E: Event>(
        &self,
        event: &E,
        now: SystemTime,
        time: &[u8; 27],
        trace: Option<&crate::trace::TraceContext>,
    ) -> Result<(uuid::Uuid, Outgoing)> {
        let info = E::info();
        if info.is_deprecated() {
            self.warn_deprecated(info);
        }
        let source = info.source.unwrap_or(&self.inner.source);
        let id = codec::new_event_id(now);
        let stamp = Stamp {
            id,
            source,
            time,
            trace,
        };
        let payload = codec::encode(event, stamp).map_err(|source| Error::Encode {
            event_type: E::TYPE.to_owned(),
            source,
        })?;
        let message = Outgoing {
            event_type: std::borrow::Cow::Borrowed(E::TYPE),
            payload,
        };
        Ok((id, message))
    }

    fn warn_deprecated(&self, info: &'static crate::EventInfo) {
        if self.inner.warned.lock().insert(info.type_name) {
            let hint = match (info.replaced_by, info.deprecated) {
                (Some(new), _) => format!("publish `{new}` instead"),
                (None, Some(note)) => note.to_owned(),
                (None, None) => String::new(),
            };
            tracing::warn!(
                event_type = info.type_name,
                "publishing the deprecated event type `{}`: {hint}",
                info.type_name
            );
        }
    }

    /// Publishes an event; returns once the transport accepted it.
    ///
    /// Handlers run later, on their own workers, never inside this call.
    /// ([`Bus::encode`] and [`Bus::publish_encoded`] give the event's id.)
    pub async fn publish<E: Event>(&self, event: E) -> Result<()> {
        let (_, message) = self.encode(&event)?;
        self.send(std::slice::from_ref(&message))
            .instrument(tracing::debug_span!(
                "eventbus.publish",
                event_type = E::TYPE
            ))
            .await
    }

    /// Publishes on the transport, without a future when it can do it at once.
    async fn send(&self, batch: &[Outgoing]) -> Result<()> {
        match self.inner.transport.publish_now(batch) {
            Some(done) => done,
            None => self.inner.transport.publish(batch).await,
        }?;
        self.inner.metrics.sent(self.inner.transport.name(), batch);
        Ok(())
    }

    /// Publishes many events of one type in one transport round trip.
    ///
    /// The events share one `time` (the clock is read once for the batch);
    /// each has its own id.
    pub async fn publish_batch<E: Event>(&self, events: impl IntoIterator<Item = E>) -> Result<()> {
        let (now, time) = codec::now_stamped();
        let trace = crate::trace::current();
        let batch = events
            .into_iter()
            .map(|e| {
                self.encode_at(&e, now, &time, trace.as_ref())
                    .map(|(_, m)| m)
            })
            .collect::<Result<Vec<_>>>()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.send(&batch).await
    }

    /// Publishes a `cloudevents::Event` as it is (for relays and bridges),
    /// with the [current trace context](crate::trace::current) unless it has
    /// a `traceparent` already.
    pub async fn publish_cloudevent(&self, event: &crate::CloudEvent) -> Result<()> {
        let traced = crate::trace::stamp_cloudevent(event);
        let event = traced.as_ref().unwrap_or(event);
        let payload = codec::encode_cloudevent(event).map_err(|source| Error::Encode {
            event_type: cloudevents::AttributesReader::ty(event).to_owned(),
            source,
        })?;
        let message = Outgoing {
            event_type: std::borrow::Cow::Owned(
                cloudevents::AttributesReader::ty(event).to_owned(),
            ),
            payload,
        };
        self.send(std::slice::from_ref(&message)).await
    }

    /// Publishes already-encoded messages (the outbox relay's path).
    pub async fn publish_encoded(&self, batch: &[Outgoing]) -> Result<()> {
        self.send(batch).await
    }

    /// Publishes `event` at `at`; durable on durable transports.
    pub async fn publish_at<E: Event>(&self, event: E, at: SystemTime) -> Result<()> {
        let (_, message) = self.encode(&event)?;
        self.inner.transport.publish_at(message, at).await
    }

    /// Publishes `event` after `delay`; durable on durable transports.
    pub async fn publish_after<E: Event>(&self, event: E, delay: Duration) -> Result<()> {
        self.publish_at(event, SystemTime::now() + delay).await
    }

    /// Lists up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.transport.dead_letters(limit).await
    }

    /// Delivers a dead letter again to the group that gave up on it. False if there is no such entry.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<bool> {
        self.inner.transport.replay(id).await
    }

    /// Removes a dead letter without delivering it again. False if there is no such entry.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool> {
        self.inner.transport.delete_dead_letter(id).await
    }

    /// Runs every handler and schedule until SIGINT/SIGTERM or [`Bus::shutdown`],
    /// then drains: stops taking events, finishes those in flight (up to the
    /// shutdown timeout), acknowledges what finished and leaves the rest to be
    /// delivered again.
    pub async fn run(&self) -> Result<()> {
        self.run_inner(None, true).await
    }

    /// Like [`Bus::run`], for the named groups only (one worker per queue).
    pub async fn run_groups<I, S>(&self, groups: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let wanted: BTreeSet<String> = groups.into_iter().map(|g| g.as_ref().to_owned()).collect();
        self.run_inner(Some(wanted), true).await
    }

    /// Runs the bus in a background task (no signal handling); stop it with
    /// [`Running::shutdown`] or [`Bus::shutdown`].
    ///
    /// Returns at once, before the handlers' subscriptions are live; await
    /// [`Running::ready`] before publishing what they must see (on pub/sub,
    /// which keeps nothing for a group, an event published earlier is lost).
    pub fn spawn(&self) -> Running {
        let bus = self.clone();
        Running {
            bus: self.clone(),
            task: Some(tokio::spawn(
                async move { bus.run_inner(None, false).await },
            )),
        }
    }

    /// Waits until the run of this bus ([`Bus::run`], [`Bus::run_groups`] or
    /// [`Bus::spawn`], started before or after this call) has every handler's
    /// subscription live: pub/sub `SUBSCRIBE`s confirmed by the server,
    /// Streams groups created. From then on everything published reaches the
    /// handlers, and schedules, background tasks and the transport's
    /// background work are running.
    ///
    /// Fails with [`Error::Closed`] if the run ends first (shut down, or a
    /// subscription failed: the run's own result says why). For a bus from
    /// [`Bus::spawn`], [`Running::ready`] returns that reason instead.
    ///
    /// ```
    /// # async fn demo() -> eventbus::Result<()> {
    /// let bus = eventbus::Bus::builder().service("svc").connect("memory://").await?;
    /// let (run, ready) = tokio::join!(bus.run(), async {
    ///     bus.ready().await?;
    ///     // e.g. report the service healthy
    ///     bus.shutdown();
    ///     Ok::<(), eventbus::Error>(())
    /// });
    /// ready?;
    /// run
    /// # }
    /// ```
    pub async fn ready(&self) -> Result<()> {
        let mut phase = self.inner.phase.subscribe();
        let reached = phase
            .wait_for(|p| matches!(p, Phase::Ready | Phase::Stopped))
            .await
            .map(|p| *p)
            .map_err(|_| Error::Closed)?;
        match reached {
            Phase::Ready => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    /// Whether every handler's subscription is live now (see [`Bus::ready`]).
    pub fn is_ready(&self) -> bool {
        *self.inner.phase.borrow() == Phase::Ready
    }

    /// Whether a run of this bus has ended (shut down, or failed).
    pub fn is_stopped(&self) -> bool {
        *self.inner.phase.borrow() == Phase::Stopped
    }

    #[cfg_attr(
        not(any(feature = "http", feature = "postgres", feature = "sqlite")),
        allow(dead_code)
    )]
    pub(crate) fn metrics(&self) -> &crate::metrics::BusMetrics {
        &self.inner.metrics
    }

    /// Asks a running bus to stop; [`Bus::run`] then drains and returns.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Resolves once [`Bus::shutdown`] was called.
    pub async fn shutdown_signal(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// Whether [`Bus::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    async fn run_inner(&self, only: Option<BTreeSet<String>>, signals: bool) -> Result<()> {
        let token = self.inner.shutdown.clone();
        let workers: Vec<Arc<WorkerSpec>> = match &only {
            None => self.inner.workers.clone(),
            Some(wanted) => {
                let known: BTreeSet<&str> = self.groups().collect();
                let unknown: Vec<&String> = wanted
                    .iter()
                    .filter(|g| !known.contains(g.as_str()))
                    .collect();
                if !unknown.is_empty() {
                    return Err(Error::Config(format!(
                        "unknown group(s) {unknown:?}; this service has: {}",
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                // Bridges run with every run: each runs once across instances.
                self.inner
                    .workers
                    .iter()
                    .filter(|w| {
                        wanted.contains(&w.group.group) || routing::is_bridge_group(&w.group.group)
                    })
                    .cloned()
                    .collect()
            }
        };
        tracing::info!(
            service = %self.inner.service,
            transport = self.inner.transport.name(),
            groups = workers.len(),
            "eventbus starting"
        );
        if only.is_none() && workers.is_empty() && self.inner.registry.schedules().is_empty() {
            tracing::warn!(
                service = %self.inner.service,
                "no handlers or schedules are registered in this binary, so this bus runs nothing; if they live in a library crate, name it once in the binary (`use my_handlers as _;`) so the linker keeps them, or add them with Bus::builder().handler(..)"
            );
        }
        if signals {
            tokio::spawn(wait_for_signal(token.clone()));
        }
        self.inner.phase.send_replace(Phase::Starting);
        let _stopped = StopOnDrop(&self.inner.phase);
        // A group that cannot be what it says (compete, or broadcast) on its
        // transport is refused before anything runs.
        routing::check_groups(
            &*self.inner.transport,
            self.inner.router.as_deref(),
            workers.iter().map(|w| &w.group),
        )?;
        let work_token = token.child_token();
        let sampled = crate::metrics::groups(workers.iter().map(|w| &w.group));
        let mut tasks = tokio::task::JoinSet::new();
        let mut live = Vec::with_capacity(workers.len());
        for spec in workers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            live.push(rx);
            tasks.spawn(worker::run(self.clone(), spec, work_token.clone(), tx));
        }
        let groups = tasks.len();

        // Ready once every worker's subscription is live; until then nothing
        // of the bus's own publishes (schedules, background tasks, due
        // scheduled events) starts, since on pub/sub it would reach no one.
        let mut failure = None;
        let started = {
            let all_live = futures::future::try_join_all(live);
            tokio::pin!(all_live);
            let mut waiting = true;
            loop {
                tokio::select! {
                    biased;
                    _ = token.cancelled() => break false,
                    Some(done) = tasks.join_next() => match done {
                        Ok(Err(e)) => {
                            failure = Some(e);
                            break false;
                        }
                        Err(e) if e.is_panic() => {
                            failure = Some(Error::Config(format!(
                                "a handler worker panicked while subscribing: {e}"
                            )));
                            break false;
                        }
                        _ => {}
                    },
                    all = &mut all_live, if waiting => match all {
                        Ok(_) => break true,
                        // A worker ended without subscribing; the next
                        // finished task tells why.
                        Err(_) => waiting = false,
                    },
                }
            }
        };
        let mut background = None;
        let mut schedules = tokio::task::JoinSet::new();
        if started {
            background = Some(tokio::spawn(
                self.inner.transport.run_background(work_token.clone()),
            ));
            let (transport, every) = (self.inner.transport.clone(), self.inner.metrics.interval);
            tasks.spawn(crate::metrics::sample_loop(
                transport,
                sampled,
                every,
                work_token.clone(),
            ));
            for bg in &self.inner.background {
                let (bus, token, bg) = (self.clone(), work_token.clone(), bg.clone());
                tasks.spawn(async move {
                    let result = (bg.run)(bus, token).await;
                    if let Err(e) = &result {
                        tracing::error!(task = %bg.name, "background task failed: {e}");
                    }
                    result
                });
            }
            for def in self.inner.registry.schedules() {
                schedules.spawn(crate::schedule::run(
                    self.clone(),
                    def.clone(),
                    work_token.clone(),
                ));
            }
            self.inner.phase.send_replace(Phase::Ready);
            tracing::info!(
                service = %self.inner.service,
                transport = self.inner.transport.name(),
                groups,
                schedules = schedules.len(),
                "bus running: every subscription is live"
            );

            // Run until asked to stop, or until a task fails.
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    Some(done) = tasks.join_next() => {
                        if let Ok(Err(e)) = done {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        work_token.cancel();
        schedules.abort_all();
        let drained = tokio::time::timeout(self.inner.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if let Some(background) = background {
            let _ = background.await;
        }
        if let Some(e) = failure {
            token.cancel();
            return Err(e);
        }
        if drained.is_err() {
            tasks.abort_all();
            return Err(Error::ShutdownTimeout(self.inner.shutdown_timeout));
        }
        tracing::info!(service = %self.inner.service, "bus stopped");
        Ok(())
    }
}

/// A bus running in the background, from [`Bus::spawn`].
///
/// ```
/// # async fn demo() -> eventbus::Result<()> {
/// let bus = eventbus::Bus::builder().service("svc").connect("memory://").await?;
/// let mut running = bus.spawn();
/// running.ready().await?; // every subscription is live
/// // ... publish ...
/// running.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct Running {
    bus: Bus,
    /// `None` once awaited (by `ready` when the run ended before it was ready).
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Running {
    /// Waits until every handler's subscription is live (see [`Bus::ready`]):
    /// whatever is published from then on reaches the handlers.
    ///
    /// If the bus stops first, returns why: the error that stopped it (a
    /// subscription that failed, say), or [`Error::Closed`] if it was shut
    /// down; [`Running::shutdown`] then returns `Ok`.
    pub async fn ready(&mut self) -> Result<()> {
        if self.bus.ready().await.is_ok() {
            return Ok(());
        }
        match self.join().await {
            Err(e) => Err(e),
            Ok(()) => Err(Error::Closed),
        }
    }

    /// Stops the bus and waits for the drain to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        self.bus.shutdown();
        self.join().await
    }

    async fn join(&mut self) -> Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Config(format!("the bus task failed: {e}")))?,
            None => Ok(()),
        }
    }

    /// Whether the bus stopped (by shutdown or failure).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

async fn wait_for_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
            _ = term.recv() => tracing::info!("SIGTERM received, draining"),
            _ = token.cancelled() => return,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received, draining"),
            _ = token.cancelled() => return,
        }
    }
    token.cancel();
}

/// Builds a [`Bus`].
///
/// ```
/// # async fn demo() -> eventbus::Result<()> {
/// let bus = eventbus::Bus::builder()
///     .service("reviews")
///     .state(42_u32)
///     .connect("memory://")
///     .await?;
/// assert_eq!(bus.service(), "reviews");
/// # Ok(()) }
/// ```
pub struct BusBuilder {
    service: Option<String>,
    state: StateMap,
    transport: Option<Arc<dyn Transport>>,
    handlers: Vec<HandlerDef>,
    events: Vec<&'static crate::EventInfo>,
    schedules: Vec<ScheduleDef>,
    registered: bool,
    retry: RetryPolicy,
    process_parent: crate::trace::ProcessParent,
    handler_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    background: Vec<Background>,
    /// The default transport's URL, when it is connected with the routes.
    url: Option<String>,
    routes: Vec<RouteSpec>,
    bridges: Vec<RouteSpec>,
    /// The URL given to `connect`, for the Celery broker.
    connected_url: Option<String>,
    /// The Celery broker, when it is not the default transport's server.
    #[cfg(feature = "redis")]
    celery_url: Option<String>,
    #[cfg(feature = "redis")]
    celery_options: crate::celery::CeleryOptions,
    metrics: crate::metrics::BusMetrics,
}

impl Default for BusBuilder {
    fn default() -> Self {
        Self {
            service: None,
            state: StateMap::default(),
            transport: None,
            handlers: Vec::new(),
            events: Vec::new(),
            schedules: Vec::new(),
            registered: true,
            retry: RetryPolicy::default(),
            process_parent: crate::trace::ProcessParent::default(),
            handler_timeout: Some(Duration::from_secs(30)),
            shutdown_timeout: Duration::from_secs(30),
            background: Vec::new(),
            url: None,
            routes: Vec::new(),
            bridges: Vec::new(),
            connected_url: None,
            #[cfg(feature = "redis")]
            celery_url: None,
            #[cfg(feature = "redis")]
            celery_options: crate::celery::CeleryOptions::default(),
            metrics: Default::default(),
        }
    }
}

impl fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusBuilder")
            .field("service", &self.service)
            .field("handlers", &self.handlers)
            .field("registered", &self.registered)
            .field("routes", &self.routes)
            .field("bridges", &self.bridges)
            .finish_non_exhaustive()
    }
}

impl BusBuilder {
    /// How often a running bus samples its groups' backlog for the
    /// `eventbus.consumer.*` gauges ([`Transport::group_stats`]): every 10 s
    /// by default; `None` turns the sampling off.
    pub fn metrics_interval(mut self, every: Option<Duration>) -> Self {
        self.metrics.interval = every;
        self
    }

    /// The service name: default `source` (`/name`) and group prefix (`name.handler`).
    /// Defaults to `EVENTBUS_SERVICE`, then the executable's name.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// App state, read by handlers with `ctx.state::<T>()`; one value per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(
            TypeId::of::<T>(),
            Arc::new(value) as Arc<dyn Any + Send + Sync>,
        );
        self
    }

    /// Adds a handler explicitly (besides those registered with `#[handler]`).
    pub fn handler(mut self, handler: HandlerDef) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Adds an event type besides those `#[derive(Event)]` registers in the
    /// binary: one whose [`Event`] impl is written by hand, so that it is
    /// known to this bus only.
    pub fn event<E: Event>(mut self) -> Self {
        self.events.push(E::info());
        self
    }

    /// Adds a recurring schedule explicitly (besides those registered with
    /// `#[schedule]`), e.g. one read from configuration with
    /// [`ScheduleDef::every`] or [`ScheduleDef::cron`].
    pub fn schedule(mut self, schedule: ScheduleDef) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Schedules count from the wall-clock time `start` instead of the system
    /// clock's when the bus runs, then move with tokio's clock: on a paused
    /// clock (`#[tokio::test(start_paused = true)]`) a test runs cron
    /// schedules through any date, daylight-saving changes included.
    pub fn schedule_clock(self, start: SystemTime) -> Self {
        self.state(crate::schedule::WallClockStart(start))
    }

    /// Ignores the handlers and schedules registered with the macros; only
    /// those given to [`handler`](Self::handler)/[`schedule`](Self::schedule) run.
    pub fn without_registered(mut self) -> Self {
        self.registered = false;
        self
    }

    /// The backoff between retries (default 200 ms doubling up to 60 s, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How each delivery's `process <type>` span relates to the trace
    /// context the event carries: its parent (the default), a link, or
    /// nothing; see [`trace`](crate::trace).
    ///
    /// ```
    /// # async fn demo() -> eventbus::Result<()> {
    /// use eventbus::trace::ProcessParent;
    /// let bus = eventbus::Bus::builder()
    ///     .service("audit")
    ///     .process_parent(ProcessParent::Link)
    ///     .connect("memory://")
    ///     .await?;
    /// # drop(bus); Ok(()) }
    /// ```
    pub fn process_parent(mut self, parent: crate::trace::ProcessParent) -> Self {
        self.process_parent = parent;
        self
    }

    /// A handler run longer than this fails (and is retried); default 30 s, `None` for no limit.
    pub fn handler_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// How long [`Bus::run`] waits for in-flight events when stopping (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Runs `task` next to the handlers while the bus runs (e.g. an outbox
    /// relay); it must return when the token is cancelled.
    pub fn background<F>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: Fn(Bus, CancellationToken) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        self.background.push(Background {
            name: name.into(),
            run: Arc::new(task),
        });
        self
    }

    /// Uses this transport.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Routes the event types `types` (each a type, or a prefix ending in
    /// `*`: `"review_*"`) to the transport at `url`: they are published
    /// there, and handlers subscribe to them there; every other type stays
    /// on the default transport ([`connect`](Self::connect)'s URL). An exact
    /// type wins over a prefix, a longer prefix over a shorter one. A group
    /// whose types end up on several transports subscribes on each (see
    /// [`routing`](crate::routing)). The URL is connected when the bus is
    /// built; a wrong pattern or URL is an error then.
    ///
    /// ```
    /// # async fn demo() -> eventbus::Result<()> {
    /// // The legacy catalogue on the memory transport "legacy", the rest on another.
    /// let bus = eventbus::Bus::builder()
    ///     .service("reviews")
    ///     .route(["review_*", "moderate_action"], "memory://legacy")
    ///     .connect("memory://jobs")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn route<I, S>(mut self, types: I, url: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes.push(RouteSpec {
            patterns: types.into_iter().map(Into::into).collect(),
            target: Target::Url(url.into()),
            origin: "Bus::builder()",
        });
        self
    }

    /// [`route`](Self::route) to a transport built in code.
    pub fn route_transport<I, S>(mut self, types: I, transport: impl Transport) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes.push(RouteSpec {
            patterns: types.into_iter().map(Into::into).collect(),
            target: Target::Transport(Arc::new(transport)),
            origin: "Bus::builder()",
        });
        self
    }

    /// Bridges the event types `types` (types, or prefixes ending in `*`
    /// matched against the types this binary knows) from the transport at
    /// `from_url` (e.g. the Redis pub/sub channels Django publishes on) into
    /// the transport they are routed to (the default one unless a
    /// [`route`](Self::route) says otherwise, e.g. Redis Streams).
    ///
    /// Every running instance takes part, and each message is appended once
    /// across them (the source's groups compete; on Redis pub/sub through a
    /// lease): handlers read the bridged types from the destination, where
    /// their instances compete as usual. Publishing a bridged type goes to
    /// the source, so the services still reading it there see it, and the
    /// bridge appends it like the others. Pub/sub stays at-most-once up to
    /// the append; see [`routing`](crate::routing).
    pub fn bridge<I, S>(mut self, types: I, from_url: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bridges.push(RouteSpec {
            patterns: types.into_iter().map(Into::into).collect(),
            target: Target::Url(from_url.into()),
            origin: "Bus::builder()",
        });
        self
    }

    /// [`bridge`](Self::bridge) from a transport built in code.
    pub fn bridge_transport<I, S>(mut self, types: I, from: impl Transport) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bridges.push(RouteSpec {
            patterns: types.into_iter().map(Into::into).collect(),
            target: Target::Transport(Arc::new(from)),
            origin: "Bus::builder()",
        });
        self
    }

    /// The Redis server that is the Celery broker of the bus's Celery tasks
    /// (`#[event("name", celery)]`), when it is not the one of `connect`'s
    /// URL (also `EVENTBUS_CELERY_URL`).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn celery(mut self, url: impl Into<String>) -> Self {
        self.celery_url = Some(url.into());
        self
    }

    /// Tuning of the Celery queues (visibility timeout, key prefix,
    /// prefetch); `EVENTBUS_CELERY_VISIBILITY_TIMEOUT` overrides the
    /// visibility timeout.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn celery_options(mut self, options: crate::celery::CeleryOptions) -> Self {
        self.celery_options = options;
        self
    }

    /// Connects to the transport at `url` (`memory://`, `redis://...`) and builds the bus.
    pub async fn connect(mut self, url: &str) -> Result<Bus> {
        self.connected_url = Some(url.to_owned());
        if self.routes.is_empty() && self.bridges.is_empty() {
            self.transport = Some(crate::transport::connect(url).await?);
        } else {
            // Connected with the routes, so that a route to the same URL
            // shares the connection.
            self.url = Some(url.to_owned());
        }
        self.build().await
    }

    /// Connects to `EVENTBUS_URL` (default `memory://`), with the routes of
    /// `EVENTBUS_ROUTES` and the bridges of `EVENTBUS_BRIDGES` (both
    /// optional, added after those given in code, and winning over them for
    /// the same pattern), and builds the bus:
    ///
    /// ```sh
    /// EVENTBUS_URL='redis://redis:6379'   # Streams: everything not routed elsewhere
    /// EVENTBUS_ROUTES='moderate_action,record_*=redis://redis:6379?mode=pubsub&codec=legacy'
    /// EVENTBUS_BRIDGES='review_created,id_user_changed=redis://redis:6379?mode=pubsub&codec=legacy'
    /// ```
    ///
    /// The syntax (see [`routing::parse_routes`]): `types=url` separated by
    /// `;` or new lines, `types` separated by `,`, each a type or a prefix
    /// ending in `*`. A mistake is an error naming the variable and the
    /// route; passwords are shown as `***`.
    pub async fn connect_env(mut self) -> Result<Bus> {
        #[cfg(feature = "redis")]
        if let Some(url) = env_var(crate::celery::URL_ENV)? {
            self.celery_url = Some(url);
        }
        let url = match env_var("EVENTBUS_URL")? {
            Some(u) => u,
            None => {
                tracing::info!(
                    "EVENTBUS_URL is not set: using the in-process memory:// transport (events never leave this process; set EVENTBUS_URL=redis://host:6379 to share them)"
                );
                "memory://".to_owned()
            }
        };
        for (var, into) in [
            (routing::ROUTES_ENV, &mut self.routes),
            (routing::BRIDGES_ENV, &mut self.bridges),
        ] {
            let Some(value) = env_var(var)? else { continue };
            for (patterns, url) in routing::parse_routes(var, &value)? {
                into.push(RouteSpec {
                    patterns,
                    target: Target::Url(url),
                    origin: var,
                });
            }
        }
        self.connect(&url).await
    }

    /// Builds the bus on the transport given to [`transport`](Self::transport)
    /// (an in-memory one if none): checks the registry, declares every
    /// handler's group so that nothing published from now on is missed.
    pub async fn build(#[allow(unused_mut)] mut self) -> Result<Bus> {
        let service = match self.service {
            Some(s) => s,
            None => default_service(),
        };
        if service.is_empty() || service.contains(char::is_whitespace) {
            return Err(Error::Config(format!(
                "service name {service:?} must be non-empty and without spaces; set it with Bus::builder().service(\"name\")"
            )));
        }
        let events: Vec<_> = inventory::iter::<EventRegistration>()
            .map(|r| r.0)
            .chain(self.events)
            .collect();
        let mut handlers: Vec<HandlerDef> = Vec::new();
        let mut schedules: Vec<ScheduleDef> = Vec::new();
        if self.registered {
            handlers.extend(inventory::iter::<HandlerRegistration>().map(|r| (r.0)()));
            schedules.extend(inventory::iter::<ScheduleRegistration>().map(|r| (r.0)()));
        }
        handlers.extend(self.handlers);
        schedules.extend(self.schedules);
        let registry = Registry::build(events, handlers, schedules)?;
        #[cfg(feature = "redis")]
        let celery = celery_route(
            self.celery_url.as_deref(),
            self.connected_url.as_deref(),
            &self.celery_options,
            &mut self.routes,
            &registry,
        )
        .await?;

        let default = match (self.transport, self.url) {
            (Some(t), _) => Target::Transport(t),
            (None, Some(url)) => Target::Url(url),
            (None, None) => Target::Url("memory://".to_owned()),
        };
        let (transport, router, bridges) = if self.routes.is_empty() && self.bridges.is_empty() {
            let transport = match default {
                Target::Transport(t) => t,
                Target::Url(url) => crate::transport::connect(&url).await?,
            };
            (transport, None, Vec::new())
        } else {
            let mut known = BTreeSet::new();
            for info in registry.events() {
                known.insert(info.type_name);
                known.extend(info.aliases.iter().copied());
            }
            let (router, bridges) =
                Router::build(default, self.routes, self.bridges, &known).await?;
            let router = Arc::new(router);
            (router.clone() as Arc<dyn Transport>, Some(router), bridges)
        };

        let tasks: Arc<[&'static str]> = registry
            .events()
            .filter(|e| e.task.is_some())
            .flat_map(|e| std::iter::once(e.type_name).chain(e.aliases.iter().copied()))
            .collect();
        let mut workers = Vec::new();
        for h in registry.handler_arcs() {
            let group = match h.meta.group {
                Some(g) => g.to_owned(),
                None => format!("{service}.{}", h.meta.name),
            };
            let handler_name = if h.meta.module_path.is_empty() {
                h.meta.name.to_owned()
            } else {
                format!("{}::{}", h.meta.module_path, h.meta.name)
            };
            let (topics, upcasts) = match h.event_type() {
                None => (Topics::All, Vec::new()),
                Some(ty) => {
                    let routes = registry.routes_for(ty);
                    (
                        Topics::Types(routes.types.iter().map(|t| (*t).to_owned()).collect()),
                        routes.upcasts,
                    )
                }
            };
            let concurrency = h.meta.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if concurrency == 0 {
                return Err(Error::Config(format!(
                    "handler `{handler_name}` has concurrency 0; it must be at least 1"
                )));
            }
            workers.push(Arc::new(WorkerSpec {
                group_name: Arc::from(group.as_str()),
                group: GroupSpec {
                    group,
                    handler: handler_name,
                    topics,
                    handler_timeout: self.handler_timeout,
                    broadcast: h.meta.broadcast,
                },
                handler: h.clone(),
                upcasts,
                max_attempts: h.meta.retries.unwrap_or(DEFAULT_RETRIES).saturating_add(1),
                concurrency: concurrency as usize,
                timeout: self.handler_timeout,
                skip: if h.event_type().is_none() {
                    tasks.clone()
                } else {
                    Arc::from([])
                },
                metrics: Default::default(),
            }));
        }
        for b in bridges {
            workers.push(Arc::new(crate::bridge::worker(b, self.handler_timeout)));
        }
        for w in &workers {
            transport.declare(&w.group).await?;
        }
        let source = codec::normalize_source(&service).into_owned();
        Ok(Bus {
            inner: Arc::new(Inner {
                service,
                source,
                transport,
                router,
                registry,
                workers,
                state: self.state,
                retry: self.retry,
                process_parent: self.process_parent,
                shutdown_timeout: self.shutdown_timeout,
                shutdown: CancellationToken::new(),
                warned: Mutex::new(HashSet::new()),
                background: self.background,
                phase: tokio::sync::watch::Sender::new(Phase::Idle),
                metrics: self.metrics,
                #[cfg(feature = "redis")]
                celery,
            }),
        })
    }
}

/// Routes the registry's Celery tasks to their broker, when there is one.
#[cfg(feature = "redis")]
async fn celery_route(
    celery_url: Option<&str>,
    connected_url: Option<&str>,
    options: &crate::celery::CeleryOptions,
    routes: &mut Vec<RouteSpec>,
    registry: &Registry,
) -> Result<Option<crate::celery::CeleryTransport>> {
    let tasks = crate::celery::tasks(registry.events());
    if tasks.is_empty() {
        return Ok(None);
    }
    let url = match (celery_url, connected_url) {
        (Some(u), _) => u,
        (None, Some(u)) if crate::celery::is_broker(u) => u,
        _ => {
            tracing::info!(
                "the Celery tasks of this service run in-process on the default transport; connect to redis:// (EVENTBUS_URL) to share them with Celery workers"
            );
            return Ok(None);
        }
    };
    if !crate::celery::is_broker(url) {
        return Err(Error::Config(format!(
            "the Celery broker `{}` is not a Redis URL; write redis://host:6379/0",
            crate::transport::redact(url)
        )));
    }
    let options = crate::celery::options_from_env(options.clone())?;
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let transport = crate::celery::CeleryTransport::connect(url, tasks, options).await?;
    // Before the routes of the environment, which win over it.
    routes.insert(
        0,
        RouteSpec {
            patterns: names,
            target: Target::Transport(Arc::new(transport.clone())),
            origin: "Celery tasks",
        },
    );
    Ok(Some(transport))
}

/// The trimmed value of `var`; `None` when unset or blank.
fn env_var(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{var} is not valid UTF-8")))
        }
    }
}

fn default_service() -> String {
    if let Ok(s) = std::env::var("EVENTBUS_SERVICE")
        && !s.trim().is_empty()
    {
        return s.trim().to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| strip_cargo_hash(&s).to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "service".to_owned())
}

/// `tests_foo-0123456789abcdef` (a cargo test binary) -> `tests_foo`.
fn strip_cargo_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base
        }
        _ => name,
    }
}

#[cfg(feature = "http")]
impl eventbus_http::Source for Bus {
    fn transport(&self) -> Arc<dyn Transport> {
        self.inner.transport.clone()
    }

    /// `/healthz`, `/readyz` and (feature `prometheus`) `/metrics` of
    /// [`health`](crate::health), on the same router as the CloudEvents endpoints.
    fn extra_routes(&self) -> Option<axum::Router> {
        Some(crate::health::router(self))
    }
}

//! The transport contract as code: one scenario per promise a [`Transport`]
//! makes, run through a real [`Bus`] (handlers, retries, the dead-letter
//! queue, schedules, shutdown), the way watermill's `TestPubSub` is.
//!
//! A transport gets its contract by calling [`conformance_tests!`](crate::conformance_tests)
//! from its tests with the [`Features`] it has and a [`Connect`] that opens a
//! new connection to one backend; the macro writes one `#[test]` per scenario,
//! so a failure names its scenario:
//!
//! ```no_run
//! use eventbus::testing::conformance::{self, Features};
//!
//! // In-process: every connection shares one fresh `MemoryTransport`,
//! // and the scenarios run on tokio's paused clock.
//! mod memory {
//!     eventbus::conformance_tests!(super::Features::in_process(), super::conformance::memory());
//! }
//!
//! // A broker: each connection is a new client of the same server.
//! mod redis {
//!     eventbus::conformance_tests!(
//!         super::Features::durable(),
//!         super::conformance::url("redis://127.0.0.1:6390/0")
//!     );
//! }
//! # fn main() {}
//! ```
//!
//! The connect expression is evaluated once per scenario, inside the
//! scenario's runtime. The scenarios share a backend safely, in parallel:
//! each uses its own event type, a fresh service name (so its own groups,
//! schedules and dead letters) and a run tag in every payload, and ignores
//! what other runs publish. Waits are bounded (a condition polled until a
//! generous deadline), never sleeps that assert speed; the lower bounds of
//! delays and backoff always hold, their upper bounds are checked on the
//! paused clock only.
//!
//! The suite relies on one promise of [`Transport::subscribe`]: it returns
//! once the subscription is in place, so that whatever is published from
//! then on reaches it. A scenario publishes only after every worker of an
//! instance subscribed.
//!
//! [`Features`] names the real differences between transports. A scenario
//! whose feature a transport lacks asserts the behaviour it has instead
//! (pub/sub: every instance of a group gets every event; a replay reaches
//! every subscriber of the type), or passes with a note when there is
//! nothing to assert (at-most-once: no redelivery of a lost delivery).
//!
//! Each scenario is also a public `async fn(&Conformance)`, for a runner of
//! one's own: [`run`] builds the runtime [`Features::paused_clock`] asks for.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::{BoxFuture, LocalBoxFuture};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::event::EventInfo;
use crate::transport::memory::MemoryTransport;
use crate::transport::{DeadLetter, Delivery, GroupSpec, Outgoing, Subscriber, Topics, Transport};
use crate::{
    Bus, BusBuilder, CloudEvent, Context, Event, HandlerDef, Result, RetryPolicy, Running,
};
use crate::{ScheduleDef, cloudevents};

/// What a transport promises beyond the common core (groups get every event,
/// retries, the dead-letter queue, malformed messages, concurrency, drain).
///
/// Start from [`durable`](Self::durable), [`in_process`](Self::in_process)
/// or [`at_most_once`](Self::at_most_once) and change single fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// The subscribers of one group compete: each event goes to one of them
    /// ([`Capabilities::competing_consumers`](crate::transport::Capabilities)).
    /// Without: the bus refuses to run a group that is not broadcast, and
    /// the scenarios run their handlers as broadcast ones.
    pub competing_consumers: bool,
    /// Competing subscribers share the work (each gets some of the events).
    /// Without: one of them at a time handles the group's events, the others
    /// stand by (Redis pub/sub's lease).
    pub shares_work: bool,
    /// A broadcast group gives every subscriber every event
    /// ([`Capabilities::broadcast`](crate::transport::Capabilities)).
    /// Without: the bus refuses to run a broadcast handler.
    pub broadcast: bool,
    /// At-least-once: a declared group keeps what is published before anyone
    /// subscribes, a delivery its subscriber never settled (the process
    /// died) is delivered again with its attempt increased, and what a
    /// stopping instance did not finish goes to the next one. Without:
    /// at-most-once (pub/sub).
    pub durable: bool,
    /// A replayed dead letter reaches only the group that gave up on it.
    /// Without: it is published again, to every group of its type (pub/sub).
    pub targeted_replay: bool,
    /// `publish_at` / `publish_after` hold an event until it is due.
    pub delays: bool,
    /// `claim_tick` gives each tick of a recurring schedule to exactly one caller.
    pub schedules: bool,
    /// One subscriber handling one event at a time gets the events of one
    /// type in publish order.
    pub per_type_order: bool,
    /// [`Transport::feed`] reads back what was published, by cursor
    /// (eventbus-core's [`Feed`](crate::feed::Feed)). Without: the
    /// transport has no feed (`None`).
    pub feed: bool,
    /// Run the scenarios on tokio's paused clock (an in-process transport):
    /// delays and backoff take no real time, and their upper bounds are checked.
    pub paused_clock: bool,
    /// Every group of a type gets every event, and a global group every
    /// type. Without: a type has one group (a task queue, where a task runs
    /// once): the bus refuses a second group of it at build time.
    pub fan_out: bool,
    /// The transport carries the published structured CloudEvent as it is.
    /// Without: it translates each into a message format of its own (a
    /// Celery task message) and refuses, at publish, what is not a
    /// CloudEvent of a type it carries.
    pub carries_cloudevents: bool,
}

impl Features {
    /// A durable broker (Redis Streams): every feature, on the real clock.
    pub const fn durable() -> Self {
        Self {
            competing_consumers: true,
            shares_work: true,
            broadcast: false,
            durable: true,
            targeted_replay: true,
            delays: true,
            schedules: true,
            per_type_order: true,
            feed: true,
            paused_clock: false,
            fan_out: true,
            carries_cloudevents: true,
        }
    }

    /// A durable task queue (Celery on Redis): at-least-once, competing
    /// workers, delays and schedules, one group per type, its own message
    /// format, no feed.
    pub const fn task_queue() -> Self {
        Self {
            fan_out: false,
            carries_cloudevents: false,
            feed: false,
            ..Self::durable()
        }
    }

    /// An in-process transport (`memory://`): every feature, broadcast
    /// included, on the paused clock.
    pub const fn in_process() -> Self {
        Self {
            paused_clock: true,
            broadcast: true,
            ..Self::durable()
        }
    }

    /// Fire-and-forget pub/sub whose groups compete through a lease (Redis
    /// pub/sub): at-most-once, one subscriber of a group at a time handles
    /// its events, broadcast groups, a replay goes to every group of the
    /// type; delays, schedules and order kept. A pub/sub whose groups cannot
    /// compete at all sets `competing_consumers` to false.
    pub const fn at_most_once() -> Self {
        Self {
            shares_work: false,
            broadcast: true,
            durable: false,
            targeted_replay: false,
            feed: false,
            ..Self::durable()
        }
    }
}

/// Opens a new connection (a new instance, as another process would) to the
/// backend under test; every call reaches the same backend.
///
/// Implemented by closures `Fn() -> impl Future<Output = Result<Arc<dyn Transport>>>`;
/// see [`memory`] and [`url()`].
pub trait Connect: Send + Sync + 'static {
    /// A new connection.
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Transport>>>;
}

impl<F, Fut> Connect for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Arc<dyn Transport>>> + Send + 'static,
{
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Transport>>> {
        Box::pin(self())
    }
}

/// A fresh in-process [`MemoryTransport`]; every connection shares it.
pub fn memory() -> impl Connect {
    let memory = MemoryTransport::new();
    move || {
        let memory = memory.clone();
        async move { Ok(Arc::new(memory) as Arc<dyn Transport>) }
    }
}

/// Opens `url` with [`transport::connect`](crate::transport::connect) on every call.
pub fn url(url: impl Into<String>) -> impl Connect {
    let url: Arc<str> = url.into().into();
    move || {
        let url = url.clone();
        async move { crate::transport::connect(&url).await }
    }
}

/// One scenario's view of the backend: its features, its connections, and
/// the run tag that keeps its events, groups and dead letters apart from
/// those of other scenarios on the same backend.
pub struct Conformance {
    features: Features,
    connect: Box<dyn Connect>,
    tag: String,
}

impl fmt::Debug for Conformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("features", &self.features)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Runs one scenario on the runtime `features` asks for (a current-thread
/// runtime on the paused clock, or two worker threads on the real one);
/// `connect` is called inside it.
///
/// # Panics
/// When the scenario fails.
pub fn run<C, S>(features: Features, connect: impl FnOnce() -> C, scenario: S)
where
    C: Connect,
    S: for<'a> FnOnce(&'a Conformance) -> LocalBoxFuture<'a, ()>,
{
    let runtime = if features.paused_clock {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = runtime.expect("a tokio runtime for the scenario");
    runtime.block_on(async move {
        let c = Conformance::new(features, connect());
        scenario(&c).await;
    });
}

/// Writes one `#[test]` per scenario of [`testing::conformance`](crate::testing::conformance)
/// for a transport with these [`Features`](crate::testing::conformance::Features),
/// connected by this [`Connect`](crate::testing::conformance::Connect) expression
/// (evaluated once per scenario). Put it in a module of its own.
#[macro_export]
macro_rules! conformance_tests {
    (@each ($features:expr, $connect:expr) $($scenario:ident)*) => {
        $(
            #[test]
            fn $scenario() {
                $crate::testing::conformance::run(
                    $features,
                    || $connect,
                    |c| ::std::boxed::Box::pin($crate::testing::conformance::$scenario(c)),
                );
            }
        )*
    };
    ($features:expr, $connect:expr $(,)?) => {
        $crate::conformance_tests!(@each ($features, $connect)
            every_group_gets_every_event
            instances_of_one_group_compete
            a_lost_subscriber_s_deliveries_come_back
            events_published_before_the_bus_runs_are_kept
            failures_are_retried_with_backoff_then_dead_lettered
            a_retry_does_not_block_other_events
            panics_are_caught_and_retried
            a_poison_event_is_dead_lettered_and_others_keep_flowing
            dead_letters_are_listed_and_replayed_to_their_group
            malformed_messages_go_to_the_dlq_and_others_keep_flowing
            delayed_events_are_delivered_when_due
            each_tick_is_claimed_by_one_connection
            a_schedule_fires_once_per_tick_across_instances
            shutdown_finishes_in_flight_events_and_hands_back_the_rest
            events_of_one_type_arrive_in_publish_order
            the_concurrency_limit_is_respected
            a_global_group_sees_every_type_even_new_ones
            broadcast_groups_reach_every_instance
            the_feed_reads_what_was_published_in_order
            the_feed_wakes_a_waiting_reader_on_a_publish
        );
    };
}

/// How long any awaited condition may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

impl Conformance {
    /// A scenario on the backend `connect` reaches, with a fresh run tag.
    pub fn new(features: Features, connect: impl Connect) -> Self {
        Self {
            features,
            connect: Box::new(connect),
            tag: format!("conf{:08x}", fastrand::u32(..)),
        }
    }

    /// The transport's features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The run tag: the service name of the scenario's buses (so its groups
    /// are `<tag>.<handler>`), and part of every payload it publishes.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A new connection to the backend.
    ///
    /// # Panics
    /// If it cannot be opened.
    pub async fn connect(&self) -> Arc<dyn Transport> {
        self.connect
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the backend under test: {e}"))
    }

    /// The group of handler `name` on the scenario's buses.
    fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.tag)
    }

    /// A builder for one instance of the scenario's service.
    fn builder(&self) -> BusBuilder {
        let builder = Bus::builder().service(&self.tag).without_registered();
        probes::register(builder)
    }

    /// Builds `builder` on a new connection (its groups declared, not running).
    async fn instance(&self, builder: BusBuilder) -> Instance {
        let subscribed = Arc::new(AtomicUsize::new(0));
        let transport = Connection {
            inner: self.connect().await,
            subscribed: subscribed.clone(),
        };
        let bus = builder
            .transport(transport)
            .build()
            .await
            .unwrap_or_else(|e| panic!("cannot build the bus: {e}"));
        Instance {
            bus,
            running: Mutex::new(None),
            subscribed,
        }
    }

    /// [`instance`](Self::instance), running and subscribed.
    async fn start(&self, builder: BusBuilder) -> Instance {
        let instance = self.instance(builder).await;
        instance.run().await;
        instance
    }

    /// A handler `name` of probe `E` running `f` on the events of this run
    /// (those of other runs are acknowledged and ignored).
    fn handler<E, F, Fut>(&self, name: &'static str, f: F) -> HandlerDef
    where
        E: Probe,
        F: Fn(E, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), String>> + Send + 'static,
    {
        let tag = self.tag.clone();
        let handler = HandlerDef::new(name, move |event: E, ctx: Context| {
            let run = (event.run() == tag).then(|| f(event, ctx));
            async move {
                match run {
                    Some(fut) => fut.await,
                    None => Ok(()),
                }
            }
        });
        // A transport whose groups cannot compete runs broadcast groups only.
        if self.features.competing_consumers {
            handler
        } else {
            handler.broadcast()
        }
    }

    /// A handler `name` of probe `E` that records each `n` it handles.
    fn recorder<E: Probe>(&self, name: &'static str, seen: &Seen) -> HandlerDef {
        let seen = seen.clone();
        self.handler(name, move |e: E, _ctx| {
            seen.lock().push(e.n());
            async { Ok(()) }
        })
    }

    /// Probe `E` number `n` of this run.
    fn probe<E: Probe>(&self, n: u32) -> E {
        E::new(&self.tag, n)
    }

    /// The dead letters of `group` (that hold this run's tag, for a group
    /// that may see other runs' messages).
    async fn dead_letters(&self, bus: &Bus, group: &str) -> Vec<DeadLetter> {
        let all = bus
            .dead_letters(100_000)
            .await
            .unwrap_or_else(|e| panic!("cannot list the dead letters: {e}"));
        let tag = self.tag.as_bytes();
        all.into_iter()
            .filter(|d| d.group == group)
            .filter(|d| d.payload.windows(tag.len()).any(|w| w == tag))
            .collect()
    }
}

/// One instance of the scenario's service (its own connection).
struct Instance {
    bus: Bus,
    running: Mutex<Option<Running>>,
    /// How many of its workers' subscriptions are in place.
    subscribed: Arc<AtomicUsize>,
}

impl Instance {
    /// Runs the bus; returns once every worker has subscribed, so that
    /// whatever is published from then on reaches it (on any transport:
    /// a pub/sub one keeps nothing for a group before it subscribes).
    async fn run(&self) {
        *self.running.lock() = Some(self.bus.spawn());
        let groups = self.bus.groups().count();
        wait_for("every worker of the instance subscribed", || {
            self.subscribed.load(Ordering::SeqCst) >= groups
        })
        .await;
    }

    /// Stops the bus, draining in-flight events.
    async fn stop(&self) {
        let running = self.running.lock().take();
        if let Some(running) = running {
            running
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("the bus did not stop cleanly: {e}"));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.bus.shutdown();
    }
}

/// A scenario's transport connection, given to a [`BusBuilder`]; counts
/// the subscriptions that are in place (a [`Transport::subscribe`] that
/// returned).
struct Connection {
    inner: Arc<dyn Transport>,
    subscribed: Arc<AtomicUsize>,
}

impl Transport for Connection {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> crate::transport::Capabilities {
        self.inner.capabilities()
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        self.inner.publish(batch)
    }

    fn publish_now(&self, batch: &[Outgoing]) -> Option<Result<()>> {
        self.inner.publish_now(batch)
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        self.inner.publish_at(message, at)
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        self.inner.declare(group)
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async move {
            let sub = self.inner.subscribe(group).await?;
            self.subscribed.fetch_add(1, Ordering::SeqCst);
            Ok(sub)
        })
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        self.inner.claim_tick(schedule, tick_ms)
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        self.inner.dead_letters(limit)
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.replay(dead_letter_id)
    }

    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.delete_dead_letter(dead_letter_id)
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.ping()
    }

    fn run_background(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<()>> {
        self.inner.run_background(shutdown)
    }
}

type Seen = Arc<Mutex<Vec<u32>>>;

fn sorted(seen: &Seen) -> Vec<u32> {
    let mut v = seen.lock().clone();
    v.sort_unstable();
    v
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after [`DEADLINE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_for`] for a condition that awaits (reads the DLQ, publishes).
async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads from `sub` until it has handed out at least `n` deliveries.
async fn next_n(sub: &dyn Subscriber, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next(n - got.len())).await {
            Ok(Ok(batch)) => got.extend(batch),
            Ok(Err(e)) => panic!("the subscriber failed to read: {e}"),
            Err(_) => panic!("timed out after {DEADLINE:?} waiting for {n} deliveries"),
        }
    }
    got
}

/// The `data.n` of a delivered probe.
fn n_of(payload: &[u8]) -> Option<u64> {
    let event: serde_json::Value = serde_json::from_slice(payload).ok()?;
    event["data"]["n"].as_u64()
}

fn skip(c: &Conformance, scenario: &str, why: &str) {
    eprintln!("{scenario}: nothing to assert on {:?}: {why}", c.features);
}

/// The events of the scenarios: `{ "run": tag, "n": number }`.
trait Probe: Event + Clone + fmt::Debug {
    fn new(run: &str, n: u32) -> Self;
    fn run(&self) -> &str;
    fn n(&self) -> u32;
}

mod probes {
    //! One event type per scenario, so that scenarios running at once on one
    //! backend never see each other's events. Their `Event` impls are
    //! written out (not derived) so that they are registered only on the
    //! scenarios' buses, never in a binary's global registry.

    use super::*;

    macro_rules! probes {
        ($($name:ident $ty:literal;)*) => {
            $(
                #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
                pub(super) struct $name {
                    pub(super) run: String,
                    pub(super) n: u32,
                }

                impl Event for $name {
                    const TYPE: &'static str = $ty;

                    fn info() -> &'static EventInfo {
                        static INFO: EventInfo = EventInfo::__new(
                            $ty,
                            concat!(module_path!(), "::", stringify!($name)),
                            None,
                            "An event of the transport conformance suite.",
                            None,
                            None,
                            &[],
                            None,
                            crate::event::schema_of::<$name>,
                            None,
                        );
                        &INFO
                    }
                }

                impl Probe for $name {
                    fn new(run: &str, n: u32) -> Self {
                        Self { run: run.to_owned(), n }
                    }
                    fn run(&self) -> &str {
                        &self.run
                    }
                    fn n(&self) -> u32 {
                        self.n
                    }
                }
            )*

            /// Registers every probe type on `builder`.
            pub(super) fn register(builder: BusBuilder) -> BusBuilder {
                builder $(.event::<$name>())*
            }
        };
    }

    probes! {
        Groups "eventbus.conformance.groups";
        Compete "eventbus.conformance.compete";
        Lost "eventbus.conformance.lost";
        Early "eventbus.conformance.early";
        Backoff "eventbus.conformance.backoff";
        NoBlock "eventbus.conformance.no_block";
        Panics "eventbus.conformance.panics";
        Poison "eventbus.conformance.poison";
        Replay "eventbus.conformance.replay";
        Malformed "eventbus.conformance.malformed";
        Delayed "eventbus.conformance.delayed";
        Tick "eventbus.conformance.tick";
        Drain "eventbus.conformance.drain";
        Order "eventbus.conformance.order";
        Limit "eventbus.conformance.limit";
        Global "eventbus.conformance.global";
        Broadcast "eventbus.conformance.broadcast";
    }
}

use probes::*;

/// Two groups of one type each get every event once, published one by one
/// and in a batch.
pub async fn every_group_gets_every_event(c: &Conformance) {
    let (a, b) = (Seen::default(), Seen::default());
    if !c.features.fan_out {
        // One group per type: a second is refused when the bus is built,
        // with a sentence naming both; the one group gets every event.
        let refused = c
            .builder()
            .handler(c.recorder::<Groups>("a", &a))
            .handler(c.recorder::<Groups>("b", &b))
            .transport(Connection {
                inner: c.connect().await,
                subscribed: Arc::new(AtomicUsize::new(0)),
            })
            .build()
            .await
            .expect_err("a second group of one type is refused");
        let text = refused.to_string();
        assert!(
            text.contains(&c.group("a")) && text.contains(&c.group("b")),
            "{text}"
        );
        let instance = c
            .start(c.builder().handler(c.recorder::<Groups>("a", &a)))
            .await;
        for n in 0..25 {
            instance.bus.publish(c.probe::<Groups>(n)).await.unwrap();
        }
        instance
            .bus
            .publish_batch((25..50).map(|n| c.probe::<Groups>(n)))
            .await
            .unwrap();
        wait_for("the group handled 50 events", || a.lock().len() >= 50).await;
        instance.stop().await;
        assert_eq!(sorted(&a), (0..50).collect::<Vec<u32>>(), "each event once");
        return;
    }
    let instance = c
        .start(
            c.builder()
                .handler(c.recorder::<Groups>("a", &a))
                .handler(c.recorder::<Groups>("b", &b)),
        )
        .await;
    for n in 0..25 {
        instance.bus.publish(c.probe::<Groups>(n)).await.unwrap();
    }
    instance
        .bus
        .publish_batch((25..50).map(|n| c.probe::<Groups>(n)))
        .await
        .unwrap();
    wait_for("both groups handled 50 events", || {
        a.lock().len() >= 50 && b.lock().len() >= 50
    })
    .await;
    instance.stop().await;
    let all: Vec<u32> = (0..50).collect();
    assert_eq!(sorted(&a), all, "group a got each event once");
    assert_eq!(sorted(&b), all, "group b got each event once");
}

/// Two instances (two connections) of one group: each event is handled by
/// one of them, and both work where the transport shares the work (with a
/// lease, one instance handles them all). A transport whose groups cannot
/// compete refuses such a group at start, with a sentence that says what to
/// do, instead of running it on every instance.
pub async fn instances_of_one_group_compete(c: &Conformance) {
    let transport = c.connect().await;
    assert_eq!(
        transport.capabilities().competing_consumers,
        c.features.competing_consumers,
        "the transport's capabilities and the suite's features agree"
    );
    if !c.features.competing_consumers {
        let competing = HandlerDef::new("work", |_p: Compete| async {});
        let instance = c.instance(c.builder().handler(competing)).await;
        let mut running = instance.bus.spawn();
        let refused = tokio::time::timeout(DEADLINE, running.ready())
            .await
            .expect("the bus refused the group at start instead of running it");
        let error = refused
            .expect_err("a group that cannot compete is refused")
            .to_string();
        assert!(
            error.contains("cannot compete") && error.contains("broadcast"),
            "the refusal says what to do: {error}"
        );
        return;
    }
    let (seen_1, seen_2) = (Seen::default(), Seen::default());
    let slow = |seen: &Seen| {
        let seen = seen.clone();
        c.handler("work", move |p: Compete, _ctx| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.lock().push(p.n);
                Ok(())
            }
        })
        .concurrency(2)
    };
    let one = c.start(c.builder().handler(slow(&seen_1))).await;
    let two = c.start(c.builder().handler(slow(&seen_2))).await;
    let events: Vec<u32> = (0..200).collect();
    for chunk in events.chunks(20) {
        one.bus
            .publish_batch(chunk.iter().map(|&n| c.probe::<Compete>(n)))
            .await
            .unwrap();
    }
    wait_for("200 events handled", || {
        seen_1.lock().len() + seen_2.lock().len() >= 200
    })
    .await;
    one.stop().await;
    two.stop().await;
    let (s1, s2) = (seen_1.lock().clone(), seen_2.lock().clone());
    if c.features.shares_work {
        assert!(
            !s1.is_empty() && !s2.is_empty(),
            "both instances worked: {} / {}",
            s1.len(),
            s2.len()
        );
    }
    let mut all: Vec<u32> = s1.into_iter().chain(s2).collect();
    all.sort_unstable();
    assert_eq!(all, events, "each event handled exactly once");
}

/// A broadcast handler (`HandlerDef::broadcast`) on two instances: each
/// instance handles every event. A transport that cannot broadcast refuses
/// it at start with a sentence that says what to do.
pub async fn broadcast_groups_reach_every_instance(c: &Conformance) {
    let transport = c.connect().await;
    assert_eq!(
        transport.capabilities().broadcast,
        c.features.broadcast,
        "the transport's capabilities and the suite's features agree"
    );
    let recorder = |seen: &Seen| {
        let handler = c.recorder::<Broadcast>("everywhere", seen);
        if c.features.competing_consumers {
            handler.broadcast()
        } else {
            handler
        }
    };
    if !c.features.broadcast {
        let instance = c
            .instance(c.builder().handler(recorder(&Seen::default())))
            .await;
        let mut running = instance.bus.spawn();
        let refused = tokio::time::timeout(DEADLINE, running.ready())
            .await
            .expect("the bus refused the broadcast handler at start instead of running it");
        let error = refused
            .expect_err("a broadcast handler is refused")
            .to_string();
        assert!(
            error.contains("broadcast") && error.contains("route"),
            "the refusal says what to do: {error}"
        );
        return;
    }
    let (seen_1, seen_2) = (Seen::default(), Seen::default());
    let one = c.start(c.builder().handler(recorder(&seen_1))).await;
    let two = c.start(c.builder().handler(recorder(&seen_2))).await;
    let events: Vec<u32> = (0..50).collect();
    one.bus
        .publish_batch(events.iter().map(|&n| c.probe::<Broadcast>(n)))
        .await
        .unwrap();
    wait_for("each instance handled 50 events", || {
        seen_1.lock().len() >= 50 && seen_2.lock().len() >= 50
    })
    .await;
    one.stop().await;
    two.stop().await;
    assert_eq!(sorted(&seen_1), events, "instance 1 got every event once");
    assert_eq!(sorted(&seen_2), events, "instance 2 got every event once");
}

/// At-least-once: a subscriber that received a delivery and went away
/// without settling it (its process died) leaves it to the next subscriber
/// of the group, with the attempt increased; once acknowledged, it is not
/// delivered again.
pub async fn a_lost_subscriber_s_deliveries_come_back(c: &Conformance) {
    if !c.features.durable {
        return skip(
            c,
            "a_lost_subscriber_s_deliveries_come_back",
            "at-most-once",
        );
    }
    let spec = GroupSpec {
        group: c.group("lost"),
        handler: "lost".into(),
        topics: Topics::Types(vec![Lost::TYPE.into()]),
        handler_timeout: Some(Duration::from_secs(1)),
        broadcast: false,
    };
    let publisher = c.instance(c.builder()).await;
    let first = c.connect().await;
    first.declare(&spec).await.unwrap();
    publisher.bus.publish(c.probe::<Lost>(1)).await.unwrap();
    {
        let sub = first.subscribe(&spec).await.unwrap();
        let got = next_n(&*sub, 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attempt, 1);
        assert_eq!(n_of(&got[0].payload), Some(1));
        // Dropped without a settle: the process died.
    }
    drop(first);

    let second = c.connect().await;
    let sub = second.subscribe(&spec).await.unwrap();
    let got = next_n(&*sub, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        n_of(&got[0].payload),
        Some(1),
        "the lost delivery came back"
    );
    assert_eq!(got[0].attempt, 2, "with its attempt increased");
    sub.ack(&[got[0].id]).await.unwrap();

    // Acknowledged: what comes next is the next event, not that one again.
    publisher.bus.publish(c.probe::<Lost>(2)).await.unwrap();
    let mut after = Vec::new();
    while !after.iter().any(|d: &Delivery| n_of(&d.payload) == Some(2)) {
        let got = next_n(&*sub, 1).await;
        sub.ack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
        after.extend(got);
    }
    let ns: Vec<_> = after
        .iter()
        .map(|d| (n_of(&d.payload), d.attempt))
        .collect();
    assert_eq!(ns, [(Some(2), 1)], "nothing came back after the ack");
}

/// Publishing never runs a handler inline; a declared group (a built bus)
/// keeps what is published before it runs.
pub async fn events_published_before_the_bus_runs_are_kept(c: &Conformance) {
    let seen = Seen::default();
    let instance = c
        .instance(c.builder().handler(c.recorder::<Early>("early", &seen)))
        .await;
    instance.bus.publish(c.probe::<Early>(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        seen.lock().is_empty(),
        "a bus that is not running handles nothing"
    );
    if !c.features.durable {
        return skip(
            c,
            "events_published_before_the_bus_runs_are_kept",
            "at-most-once: nothing is kept for a group before it subscribes",
        );
    }
    instance.run().await;
    wait_for("the early event handled", || !seen.lock().is_empty()).await;
    instance.stop().await;
    assert_eq!(
        *seen.lock(),
        [1],
        "kept for the declared group, handled once"
    );
}

/// A failing handler is retried with exponential backoff (the attempt
/// counted by the transport), then dead-lettered with its group, handler,
/// attempts, last error, event type and id, time and payload; meanwhile
/// other events are handled, and the dead letter is not delivered again.
pub async fn failures_are_retried_with_backoff_then_dead_lettered(c: &Conformance) {
    let t0 = SystemTime::now();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let ids = Arc::new(Mutex::new(BTreeSet::new()));
    let others = Seen::default();
    let failing = || {
        let (log, ids, ok) = (attempts.clone(), ids.clone(), others.clone());
        c.handler("failing", move |p: Backoff, ctx| {
            if p.n == 13 {
                log.lock().push((ctx.attempt(), Instant::now()));
                ids.lock().insert(ctx.id().to_string());
            } else {
                ok.lock().push(p.n);
            }
            async move {
                match p.n {
                    13 => Err(format!("cannot handle {}", p.n)),
                    _ => Ok(()),
                }
            }
        })
        .retries(3)
    };
    let policy = RetryPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };
    let instance = c
        .start(c.builder().retry_policy(policy).handler(failing()))
        .await;
    instance.bus.publish(c.probe::<Backoff>(13)).await.unwrap();
    instance.bus.publish(c.probe::<Backoff>(1)).await.unwrap();
    let group = c.group("failing");
    wait_for_async("the failing event is dead-lettered", || async {
        !c.dead_letters(&instance.bus, &group).await.is_empty()
    })
    .await;

    let log = attempts.lock().clone();
    assert_eq!(
        log.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "the first attempt and 3 retries"
    );
    // Retry k waits between half of and all of initial * 2^(k-1) (jitter);
    // on the paused clock, within a tenth of `initial` of that.
    for (k, pair) in log.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let full = policy.initial * (1 << k);
        assert!(gap >= full / 2, "retry {} came after {gap:?}", k + 1);
        if c.features.paused_clock {
            assert!(
                gap <= full + policy.initial / 10,
                "retry {} came after {gap:?}, backoff {full:?}",
                k + 1
            );
        }
    }
    assert_eq!(*others.lock(), [1], "the other event was not held up");
    assert_eq!(ids.lock().len(), 1, "every attempt saw the same event id");

    let dead = c.dead_letters(&instance.bus, &group).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let d = &dead[0];
    assert_eq!(d.group, group);
    assert_eq!(d.handler, "failing");
    assert_eq!(d.attempts, 4);
    assert_eq!(d.error, "cannot handle 13");
    assert_eq!(d.event_type.as_deref(), Some(Backoff::TYPE));
    assert_eq!(d.event_id.as_ref(), ids.lock().first(), "the event's id");
    // A broker's clock may differ a little from this process's.
    let slack = match c.features.paused_clock {
        true => Duration::ZERO,
        false => Duration::from_secs(1),
    };
    assert!(
        d.time + slack >= t0 && d.time <= SystemTime::now() + slack,
        "dead-lettered at {:?}",
        d.time
    );
    let event: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(event["data"]["n"], 13, "the payload as published");
    assert_eq!(event["type"], Backoff::TYPE);
    instance.stop().await;

    // Dead-lettering settled the delivery: the next instance of the group
    // gets the next event, not that one again.
    let next = c
        .start(c.builder().retry_policy(policy).handler(failing()))
        .await;
    next.bus.publish(c.probe::<Backoff>(2)).await.unwrap();
    wait_for("the next event handled", || others.lock().contains(&2)).await;
    next.stop().await;
    assert_eq!(
        attempts.lock().len(),
        4,
        "the dead letter did not come back"
    );
    assert_eq!(c.dead_letters(&next.bus, &group).await.len(), 1);
}

/// A delivery waiting for its retry does not hold up the events behind it,
/// even with one event at a time.
pub async fn a_retry_does_not_block_other_events(c: &Conformance) {
    let seen = Seen::default();
    let log = seen.clone();
    let handler = c
        .handler("h", move |p: NoBlock, ctx| {
            let fail = p.n == 0 && ctx.attempt() == 1;
            if !fail {
                log.lock().push(p.n);
            }
            async move {
                match fail {
                    true => Err("first attempt fails".to_owned()),
                    false => Ok(()),
                }
            }
        })
        .concurrency(1);
    let instance = c
        .start(
            c.builder()
                .retry_policy(RetryPolicy {
                    initial: Duration::from_secs(4),
                    max: Duration::from_secs(4),
                })
                .handler(handler),
        )
        .await;
    for n in 0..5 {
        instance.bus.publish(c.probe::<NoBlock>(n)).await.unwrap();
    }
    wait_for("all 5 handled", || seen.lock().len() >= 5).await;
    instance.stop().await;
    let seen = seen.lock().clone();
    if c.features.per_type_order {
        assert_eq!(seen, [1, 2, 3, 4, 0], "the failed event came back last");
    } else {
        assert_eq!(seen.last(), Some(&0), "the failed event came back last");
        let mut first: Vec<u32> = seen[..4].to_vec();
        first.sort_unstable();
        assert_eq!(first, [1, 2, 3, 4]);
    }
}

/// A panicking handler is caught and retried like a failing one.
pub async fn panics_are_caught_and_retried(c: &Conformance) {
    let calls = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (n, d) = (calls.clone(), done.clone());
    let handler = c.handler("panicky", move |_p: Panics, ctx| {
        let (n, d) = (n.clone(), d.clone());
        async move {
            n.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() < 3 {
                panic!("boom on attempt {}", ctx.attempt());
            }
            d.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    let instance = c
        .start(c.builder().retry_policy(fast_retries()).handler(handler))
        .await;
    instance.bus.publish(c.probe::<Panics>(1)).await.unwrap();
    wait_for("the third attempt succeeded", || {
        done.load(Ordering::SeqCst)
    })
    .await;
    instance.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two panics, one success");
    assert!(
        c.dead_letters(&instance.bus, &c.group("panicky"))
            .await
            .is_empty()
    );
}

/// An event whose handler panics on every attempt ends in the DLQ with the
/// panic message after `retries + 1` attempts, while the events around it
/// keep flowing.
pub async fn a_poison_event_is_dead_lettered_and_others_keep_flowing(c: &Conformance) {
    let seen = Seen::default();
    let s = seen.clone();
    let handler = c
        .handler("work", move |p: Poison, _ctx| {
            let s = s.clone();
            async move {
                if p.n == 13 {
                    panic!("the database is on fire");
                }
                s.lock().push(p.n);
                Ok(())
            }
        })
        .retries(2)
        .concurrency(4);
    let instance = c
        .start(c.builder().retry_policy(fast_retries()).handler(handler))
        .await;
    let events: Vec<u32> = (0..100).collect();
    for chunk in events.chunks(10) {
        instance
            .bus
            .publish_batch(chunk.iter().map(|&n| c.probe::<Poison>(n)))
            .await
            .unwrap();
    }
    let group = c.group("work");
    wait_for_async(
        "the 99 others are handled and the poison dead-lettered",
        || async {
            seen.lock().len() >= 99 && !c.dead_letters(&instance.bus, &group).await.is_empty()
        },
    )
    .await;
    instance.stop().await;
    let expected: Vec<u32> = events.into_iter().filter(|n| *n != 13).collect();
    assert_eq!(sorted(&seen), expected);
    let dead = c.dead_letters(&instance.bus, &group).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].attempts, 3, "the first attempt and `retries = 2`");
    assert!(
        dead[0]
            .error
            .contains("handler panicked: the database is on fire"),
        "{}",
        dead[0].error
    );
    assert_eq!(n_of(&dead[0].payload), Some(13));
    // An operator's purge: gone, once.
    assert!(instance.bus.delete_dead_letter(&dead[0].id).await.unwrap());
    assert!(!instance.bus.delete_dead_letter(&dead[0].id).await.unwrap());
    assert!(!instance.bus.delete_dead_letter("no-such-id").await.unwrap());
    assert!(c.dead_letters(&instance.bus, &group).await.is_empty());
}

/// Dead letters are listed with their group, attempts and error; a replay
/// (once per entry, false for an unknown id) delivers the event again to
/// the group that gave up on it, and only to it when the transport can
/// address a group (else to every subscriber of its type).
pub async fn dead_letters_are_listed_and_replayed_to_their_group(c: &Conformance) {
    let fail = Arc::new(AtomicBool::new(true));
    let (flaky_seen, other_seen) = (Seen::default(), Seen::default());
    let (f, s) = (fail.clone(), flaky_seen.clone());
    let flaky = c
        .handler("flaky", move |p: Replay, _ctx| {
            let failing = f.load(Ordering::SeqCst);
            if !failing {
                s.lock().push(p.n);
            }
            async move {
                match failing {
                    true => Err("downstream is down".to_owned()),
                    false => Ok(()),
                }
            }
        })
        .retries(0);
    let mut builder = c.builder().retry_policy(fast_retries()).handler(flaky);
    if c.features.fan_out {
        builder = builder.handler(c.recorder::<Replay>("other", &other_seen));
    }
    let instance = c.start(builder).await;
    let bus = &instance.bus;
    bus.publish(c.probe::<Replay>(7)).await.unwrap();
    let group = c.group("flaky");
    wait_for_async("the event is dead-lettered", || async {
        c.dead_letters(bus, &group).await.len() == 1
    })
    .await;
    let dead = c.dead_letters(bus, &group).await;
    assert_eq!(dead[0].group, group);
    assert_eq!(dead[0].handler, "flaky");
    assert_eq!(dead[0].attempts, 1, "`retries = 0`: one attempt");
    assert_eq!(dead[0].error, "downstream is down");
    assert_eq!(n_of(&dead[0].payload), Some(7));

    fail.store(false, Ordering::SeqCst);
    assert!(bus.replay_dead_letter(&dead[0].id).await.unwrap());
    assert!(
        !bus.replay_dead_letter(&dead[0].id).await.unwrap(),
        "replayed once"
    );
    assert!(
        !bus.replay_dead_letter("no-such-id").await.unwrap(),
        "an unknown id"
    );
    wait_for("the replayed event is handled", || {
        !flaky_seen.lock().is_empty()
    })
    .await;
    // Give a wrongly broadcast replay every chance to show up in `other`.
    bus.publish(c.probe::<Replay>(8)).await.unwrap();
    wait_for("the next event reached both groups", || {
        (!c.features.fan_out || other_seen.lock().contains(&8)) && flaky_seen.lock().contains(&8)
    })
    .await;
    instance.stop().await;
    assert_eq!(*flaky_seen.lock(), [7, 8], "the replay reached `flaky`");
    if !c.features.fan_out {
        // No other group to check.
    } else if c.features.targeted_replay {
        assert_eq!(
            sorted(&other_seen),
            [7, 8],
            "the replay went to `flaky` only"
        );
    } else {
        assert_eq!(
            sorted(&other_seen),
            [7, 7, 8],
            "the replay was published again, to every group"
        );
    }
    assert!(
        c.dead_letters(&instance.bus, &group).await.is_empty(),
        "a replayed entry leaves the DLQ"
    );
}

/// Messages that are not JSON, not CloudEvents, of another specversion, or
/// whose data does not fit the handler's type go to the DLQ with the reason,
/// once, without retries; the good events around them are handled.
pub async fn malformed_messages_go_to_the_dlq_and_others_keep_flowing(c: &Conformance) {
    if !c.features.carries_cloudevents {
        return malformed_messages_are_refused_at_publish(c).await;
    }
    let seen = Seen::default();
    let instance = c
        .start(c.builder().handler(c.recorder::<Malformed>("rec", &seen)))
        .await;
    let (tag, ty) = (c.tag(), Malformed::TYPE);
    // (payload, reason expected in the DLQ); each carries the run tag.
    let bad: Vec<(String, String)> = vec![
        (format!("not json {tag}"), "message is not JSON".into()),
        (
            format!(r#"{{"specversion":"1.0","id":"{tag}-1","source":"/x"}}"#),
            "message is not a CloudEvent: required attribute `type` is missing".into(),
        ),
        (
            format!(
                r#"{{"specversion":"2.0","id":"{tag}-2","type":"{ty}","source":"/x","data":{{"run":"{tag}","n":1}}}}"#
            ),
            "unsupported CloudEvents specversion \"2.0\"".into(),
        ),
        (
            format!(
                r#"{{"specversion":"1.0","id":"{tag}-3","type":"{ty}","source":"/x","data":{{"run":"{tag}","n":"one"}}}}"#
            ),
            "data.n".into(),
        ),
        (
            format!(r#"{{"specversion":"1.0","id":"{tag}-4","type":"{ty}","source":"/x"}}"#),
            format!("data of `{ty}`"),
        ),
    ];
    for (i, (payload, _)) in bad.iter().enumerate() {
        instance
            .bus
            .publish(c.probe::<Malformed>(i as u32))
            .await
            .unwrap();
        instance
            .bus
            .publish_encoded(&[Outgoing {
                event_type: ty.into(),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
            }])
            .await
            .unwrap();
    }
    instance
        .bus
        .publish(c.probe::<Malformed>(100))
        .await
        .unwrap();
    let group = c.group("rec");
    wait_for_async("every malformed message is dead-lettered", || async {
        c.dead_letters(&instance.bus, &group).await.len() >= bad.len()
            && seen.lock().len() > bad.len()
    })
    .await;
    instance.stop().await;

    let mut good: Vec<u32> = (0..bad.len() as u32).collect();
    good.push(100);
    assert_eq!(sorted(&seen), good, "the good events kept flowing");
    let dead = c.dead_letters(&instance.bus, &group).await;
    assert_eq!(dead.len(), bad.len(), "{dead:#?}");
    for (payload, reason) in &bad {
        let d = dead
            .iter()
            .find(|d| d.payload == payload.as_bytes())
            .unwrap_or_else(|| panic!("no dead letter for {payload}: {dead:#?}"));
        assert!(
            d.error.contains(reason.as_str()),
            "{payload}: expected {reason:?}, got {:?}",
            d.error
        );
        assert_eq!(
            d.attempts, 1,
            "{payload}: malformed messages are not retried"
        );
        assert_eq!(d.group, group);
        assert_eq!(d.handler, "rec");
    }
    if c.features.per_type_order {
        let order: Vec<&[u8]> = dead.iter().map(|d| &d.payload[..]).collect();
        let published: Vec<&[u8]> = bad.iter().map(|(p, _)| p.as_bytes()).collect();
        assert_eq!(order, published, "listed oldest first");
    }
    let ids: BTreeSet<&str> = dead.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), bad.len(), "each dead letter has its own id");
}

/// A transport with a message format of its own refuses, at publish, what
/// is not a CloudEvent of a type it carries (its own malformed messages are
/// its own tests'); the good events around them are handled.
async fn malformed_messages_are_refused_at_publish(c: &Conformance) {
    let seen = Seen::default();
    let instance = c
        .start(c.builder().handler(c.recorder::<Malformed>("rec", &seen)))
        .await;
    let (tag, ty) = (c.tag(), Malformed::TYPE);
    for (i, bad) in [
        format!("not json {tag}"),
        format!(r#"{{"specversion":"1.0","id":"{tag}-1","source":"/x"}}"#),
    ]
    .iter()
    .enumerate()
    {
        instance
            .bus
            .publish(c.probe::<Malformed>(i as u32))
            .await
            .unwrap();
        let refused = instance
            .bus
            .publish_encoded(&[Outgoing {
                event_type: ty.into(),
                payload: Bytes::copy_from_slice(bad.as_bytes()),
            }])
            .await
            .expect_err("a payload that is not a CloudEvent is refused");
        assert!(refused.to_string().contains(ty), "{refused}");
    }
    wait_for("the good events were handled", || seen.lock().len() >= 2).await;
    instance.stop().await;
    assert_eq!(sorted(&seen), [0, 1], "the good events kept flowing");
    assert!(
        c.dead_letters(&instance.bus, &c.group("rec"))
            .await
            .is_empty()
    );
}

/// `publish_after` holds an event until its delay passed, `publish_at` with
/// a time past delivers at once; both survive the publisher going away, and
/// each is delivered once.
pub async fn delayed_events_are_delivered_when_due(c: &Conformance) {
    if !c.features.delays {
        return skip(c, "delayed_events_are_delivered_when_due", "no delays");
    }
    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let consumer = c
        .start(
            c.builder()
                .handler(c.handler("on_delayed", move |p: Delayed, _ctx| {
                    log.lock().push((p.n, Instant::now()));
                    async { Ok(()) }
                })),
        )
        .await;
    let publisher = c.instance(c.builder()).await;
    let delay = Duration::from_secs(2);
    let t0 = Instant::now();
    publisher
        .bus
        .publish_after(c.probe::<Delayed>(1), delay)
        .await
        .unwrap();
    publisher
        .bus
        .publish_at(
            c.probe::<Delayed>(2),
            SystemTime::now() - Duration::from_secs(5),
        )
        .await
        .unwrap();
    drop(publisher);
    wait_for("both delayed events handled", || handled.lock().len() >= 2).await;
    consumer.stop().await;
    let handled = handled.lock().clone();
    let mut ns: Vec<u32> = handled.iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2], "each delivered once: {handled:?}");
    let at = handled
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, t)| *t)
        .unwrap();
    // Due times are kept in whole milliseconds. On the paused clock the due
    // time still travels as wall-clock time (`publish_at` takes a
    // `SystemTime`), and converting it back to the paused clock subtracts the
    // real time the publish took: a loaded machine may take a few ms there.
    let slack = if c.features.paused_clock {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(1)
    };
    assert!(
        at - t0 + slack >= delay,
        "handled {:?} after publish_after({delay:?}): not before the delay",
        at - t0
    );
    if c.features.paused_clock {
        assert!(
            at - t0 <= delay + Duration::from_secs(1),
            "handled {:?} after publish_after({delay:?}): within a second of it",
            at - t0
        );
    }
}

/// Two connections racing for the ticks of a schedule: exactly one wins
/// each tick, a tick claimed once is never claimed again, and schedules
/// are claimed independently.
pub async fn each_tick_is_claimed_by_one_connection(c: &Conformance) {
    if !c.features.schedules {
        return skip(c, "each_tick_is_claimed_by_one_connection", "no schedules");
    }
    let (a, b) = (c.connect().await, c.connect().await);
    let (nightly, hourly) = (c.group("nightly"), c.group("hourly"));
    for tick in [1_000u64, 2_000, 3_000] {
        let (x, y) = futures::join!(a.claim_tick(&nightly, tick), b.claim_tick(&nightly, tick));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "exactly one connection wins tick {tick}: {x} / {y}");
    }
    for tick in [1_000u64, 3_000] {
        assert!(
            !a.claim_tick(&nightly, tick).await.unwrap()
                && !b.claim_tick(&nightly, tick).await.unwrap(),
            "tick {tick} was claimed again"
        );
    }
    assert!(
        b.claim_tick(&hourly, 2_000).await.unwrap(),
        "another schedule's tick is its own"
    );
}

/// A recurring schedule run by two instances fires once per tick: one event
/// per tick, each handled once.
pub async fn a_schedule_fires_once_per_tick_across_instances(c: &Conformance) {
    if !c.features.schedules {
        return skip(
            c,
            "a_schedule_fires_once_per_tick_across_instances",
            "no schedules",
        );
    }
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let log = ticks.clone();
    let schedule = || {
        let tag = c.tag.clone();
        ScheduleDef::every("ticker", Duration::from_secs(1), move || {
            let tag = tag.clone();
            async move { Tick::new(&tag, 0) }
        })
    };
    let started = Instant::now();
    let with_handler = c
        .start(c.builder().schedule(schedule()).handler(c.handler(
            "on_tick",
            move |_t: Tick, ctx| {
                log.lock().push(ctx.id().to_string());
                async { Ok(()) }
            },
        )))
        .await;
    let schedule_only = c.start(c.builder().schedule(schedule())).await;
    wait_for("four ticks handled", || ticks.lock().len() >= 4).await;
    with_handler.stop().await;
    schedule_only.stop().await;
    let window = started.elapsed();
    let ticks = ticks.lock().clone();
    // Ticks are whole seconds: at most `window + 1` of them fell into the
    // run, however slow the machine; two instances each firing every tick
    // would give about twice as many.
    assert!(
        ticks.len() as u64 <= window.as_secs() + 1,
        "{} ticks in {window:?}: a tick fired more than once",
        ticks.len()
    );
    if c.features.paused_clock {
        assert!(
            ticks.len() as u64 + 1 >= window.as_secs(),
            "{} ticks in {window:?}: a tick was missed",
            ticks.len()
        );
    }
    let ids: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(ids.len(), ticks.len(), "each tick event handled once");
}

/// A stopping instance finishes the events in flight and takes no new
/// ones; a durable transport gives the rest to the next instance, each
/// event once.
pub async fn shutdown_finishes_in_flight_events_and_hands_back_the_rest(c: &Conformance) {
    let started = Arc::new(AtomicU32::new(0));
    let finished = Seen::default();
    let slow = || {
        let (s, f) = (started.clone(), finished.clone());
        c.handler("slow", move |p: Drain, _ctx| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.lock().push(p.n);
                Ok(())
            }
        })
        .concurrency(2)
    };
    let first = c.start(c.builder().handler(slow())).await;
    first
        .bus
        .publish_batch((0..10).map(|n| c.probe::<Drain>(n)))
        .await
        .unwrap();
    wait_for("two events started", || started.load(Ordering::SeqCst) >= 2).await;
    first.stop().await;
    let done = finished.lock().len();
    assert!(done >= 2, "the events in flight were finished, got {done}");
    assert!(done < 10, "no new events were taken after the shutdown");
    if !c.features.durable {
        return skip(
            c,
            "shutdown_finishes_in_flight_events_and_hands_back_the_rest",
            "at-most-once: the rest is not kept",
        );
    }
    let next = c.start(c.builder().handler(slow())).await;
    wait_for("the next instance handled the rest", || {
        finished.lock().len() >= 10
    })
    .await;
    next.stop().await;
    assert_eq!(
        sorted(&finished),
        (0..10).collect::<Vec<_>>(),
        "the next instance handled exactly the rest"
    );
}

/// One instance handling one event at a time gets the events of one type
/// in the order they were published (one by one and in batches).
pub async fn events_of_one_type_arrive_in_publish_order(c: &Conformance) {
    if !c.features.per_type_order {
        return skip(c, "events_of_one_type_arrive_in_publish_order", "no order");
    }
    let seen = Seen::default();
    let instance = c
        .start(
            c.builder()
                .handler(c.recorder::<Order>("ordered", &seen).concurrency(1)),
        )
        .await;
    for n in 0..50 {
        instance.bus.publish(c.probe::<Order>(n)).await.unwrap();
    }
    let rest: Vec<u32> = (50..200).collect();
    for chunk in rest.chunks(25) {
        instance
            .bus
            .publish_batch(chunk.iter().map(|&n| c.probe::<Order>(n)))
            .await
            .unwrap();
    }
    wait_for("200 events handled", || seen.lock().len() >= 200).await;
    instance.stop().await;
    assert_eq!(
        *seen.lock(),
        (0..200).collect::<Vec<_>>(),
        "in publish order"
    );
}

/// A handler with `concurrency = 3` runs at most, and with enough work
/// exactly, 3 events at once.
pub async fn the_concurrency_limit_is_respected(c: &Conformance) {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    let handler = c
        .handler("limited", move |_p: Limit, _ctx| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .concurrency(3);
    let instance = c.start(c.builder().handler(handler)).await;
    instance
        .bus
        .publish_batch((0..30).map(|n| c.probe::<Limit>(n)))
        .await
        .unwrap();
    wait_for("30 events handled", || done.load(Ordering::SeqCst) >= 30).await;
    instance.stop().await;
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 used"
    );
}

/// A global group (every type) gets typed events, foreign CloudEvents, and
/// types first published after it started, each once.
pub async fn a_global_group_sees_every_type_even_new_ones(c: &Conformance) {
    if !c.features.fan_out {
        return skip(
            c,
            "a_global_group_sees_every_type_even_new_ones",
            "one group per type: global handlers do not receive its messages",
        );
    }
    let tag = c.tag.clone();
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let log = seen.clone();
    let filter = tag.clone();
    let audit = HandlerDef::new("audit", move |e: CloudEvent| {
        use cloudevents::AttributesReader;
        let ours = e.ty().starts_with(&filter)
            || (e.ty() == Global::TYPE && data_run(&e).as_deref() == Some(filter.as_str()));
        if ours {
            log.lock().push((e.ty().to_owned(), e.id().to_owned()));
        }
        async {}
    });
    let instance = c.start(c.builder().handler(audit)).await;
    let bus = &instance.bus;
    let foreign = |ty: &str, id: &str| -> CloudEvent {
        let json = format!(
            r#"{{"specversion":"1.0","id":"{id}","type":"{ty}","source":"/billing","data":{{"amount":3}}}}"#
        );
        crate::codec::decode_cloudevent(json.as_bytes()).expect("a valid CloudEvent")
    };
    bus.publish(c.probe::<Global>(1)).await.unwrap();
    wait_for("the global handler saw the typed event", || {
        seen.lock().iter().any(|(t, _)| t == Global::TYPE)
    })
    .await;
    // It runs; now types nobody published before.
    let (paid, refund) = (format!("{tag}.invoice_paid"), format!("{tag}.refund"));
    bus.publish_cloudevent(&foreign(&paid, "f-1"))
        .await
        .unwrap();
    bus.publish_cloudevent(&foreign(&refund, "f-2"))
        .await
        .unwrap();
    wait_for("the global handler saw the new types", || {
        let seen = seen.lock();
        [&paid, &refund]
            .iter()
            .all(|ty| seen.iter().any(|(t, _)| t == *ty))
    })
    .await;
    instance.stop().await;
    let seen = seen.lock().clone();
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.len(), 3, "each event once: {seen:?}");
    assert!(types.contains(&Global::TYPE), "{seen:?}");
    assert!(seen.contains(&(paid, "f-1".into())), "{seen:?}");
    assert!(seen.contains(&(refund, "f-2".into())), "{seen:?}");
}

/// The `data.run` of a CloudEvent.
fn data_run(e: &CloudEvent) -> Option<String> {
    match e.data()? {
        cloudevents::Data::Json(v) => v["run"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// Short retry backoff: 50 ms doubling up to 400 ms (with jitter).
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

/// A structured CloudEvent of `ty` numbered `n`, for the feed scenarios.
fn feed_message(ty: &str, n: u32) -> Outgoing {
    let json = format!(
        r#"{{"specversion":"1.0","id":"{ty}-{n}","source":"/conformance","type":"{ty}","datacontenttype":"application/json","data":{{"n":{n}}}}}"#
    );
    Outgoing {
        event_type: ty.to_owned().into(),
        payload: Bytes::from(json),
    }
}

fn feed_n(entry: &crate::feed::FeedEntry) -> (String, u32) {
    let v: serde_json::Value =
        serde_json::from_slice(&entry.payload).expect("the payload as published");
    (
        entry.event_type.to_string(),
        v["data"]["n"].as_u64().expect("data.n") as u32,
    )
}

/// Reads `topics` after `after` in pages of `limit` until `want` entries
/// arrived (a feed may hold back the newest for a moment), checking the
/// page contract on the way.
async fn feed_read_all(
    feed: &dyn crate::feed::Feed,
    after: Option<crate::feed::Cursor>,
    topics: &Topics,
    limit: usize,
    want: usize,
) -> Vec<crate::feed::FeedEntry> {
    let mut out = Vec::new();
    let mut cursor = after;
    let deadline = Instant::now() + DEADLINE;
    while out.len() < want {
        assert!(
            Instant::now() < deadline,
            "the feed gave {} of {want} entries",
            out.len()
        );
        let page = feed
            .read(cursor.as_ref(), topics, limit)
            .await
            .unwrap_or_else(|e| panic!("feed read: {e}"));
        assert!(
            page.entries.len() <= limit,
            "a page is at most `limit` long"
        );
        match page.entries.last() {
            Some(last) => assert_eq!(
                page.next.as_ref(),
                Some(&last.cursor),
                "`next` is the last entry's cursor"
            ),
            None => {
                if cursor.is_some() {
                    assert_eq!(page.next, cursor, "an empty page keeps the cursor");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if page.next.is_some() {
            cursor = page.next;
        }
        out.extend(page.entries);
    }
    out
}

/// The feed gives every published message once, each type in publish
/// order, in pages after exclusive cursors; a cursor it did not issue is
/// refused with a reason. A transport without a feed says so (`None`).
pub async fn the_feed_reads_what_was_published_in_order(c: &Conformance) {
    let transport = c.connect().await;
    let Some(feed) = transport.feed() else {
        assert!(
            !c.features.feed,
            "Features::feed, but the transport has no feed"
        );
        return;
    };
    assert!(
        c.features.feed,
        "the transport has a feed; set Features::feed"
    );
    let (a, b) = (format!("{}_feed_a", c.tag), format!("{}_feed_b", c.tag));
    for n in 0..6u32 {
        let ty = if n % 2 == 0 { &a } else { &b };
        transport
            .publish(&[feed_message(ty, n)])
            .await
            .expect("publish");
    }
    let both = Topics::Types(vec![a.clone(), b.clone()]);
    let all = feed_read_all(feed, None, &both, 2, 6).await;
    let got: Vec<(String, u32)> = all.iter().map(feed_n).collect();
    assert_eq!(got.len(), 6, "each once: {got:?}");
    let of = |ty: &str| {
        got.iter()
            .filter(|(t, _)| t == ty)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&a), vec![0, 2, 4], "{got:?}");
    assert_eq!(of(&b), vec![1, 3, 5], "{got:?}");
    // Exclusive: after each entry's cursor comes exactly what followed it.
    for (i, entry) in all.iter().enumerate() {
        let rest = feed
            .read(Some(&entry.cursor), &both, 100)
            .await
            .expect("read after a cursor");
        let rest: Vec<(String, u32)> = rest.entries.iter().map(feed_n).collect();
        assert_eq!(rest, got[i + 1..].to_vec(), "after entry {i}");
    }
    // One type only.
    let only_a = feed_read_all(feed, None, &Topics::Types(vec![a.clone()]), 100, 3).await;
    assert_eq!(
        only_a
            .iter()
            .map(feed_n)
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    // A cursor of nobody's.
    match feed
        .read(Some(&crate::feed::Cursor::new("not*a*cursor")), &both, 10)
        .await
    {
        Err(crate::feed::FeedError::InvalidCursor(why)) => {
            assert!(
                why.contains("not*a*cursor"),
                "the reason names the cursor: {why}"
            )
        }
        other => panic!("a foreign cursor must be refused, got {other:?}"),
    }
}

/// A reader waiting after the newest entry wakes when the next is
/// published, well before its timeout.
pub async fn the_feed_wakes_a_waiting_reader_on_a_publish(c: &Conformance) {
    let transport = c.connect().await;
    let Some(feed) = transport.feed() else {
        assert!(
            !c.features.feed,
            "Features::feed, but the transport has no feed"
        );
        return;
    };
    let ty = format!("{}_feed_wait", c.tag);
    let topics = Topics::Types(vec![ty.clone()]);
    transport
        .publish(&[feed_message(&ty, 0)])
        .await
        .expect("publish");
    let first = feed_read_all(feed, None, &topics, 10, 1).await;
    let cursor = first[0].cursor.clone();
    let publisher = c.connect().await;
    let ty2 = ty.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher
            .publish(&[feed_message(&ty2, 1)])
            .await
            .expect("publish");
    });
    let timeout = Duration::from_secs(30);
    let start = Instant::now();
    loop {
        feed.wait(Some(&cursor), &topics, timeout)
            .await
            .expect("wait");
        let page = feed.read(Some(&cursor), &topics, 10).await.expect("read");
        if let Some(entry) = page.entries.first() {
            assert_eq!(feed_n(entry).1, 1);
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "the wait ran into its timeout: the publish did not wake it"
        );
    }
    assert!(
        start.elapsed() < timeout,
        "woken by the publish, not by the timeout ({:?})",
        start.elapsed()
    );
    later.await.expect("the publisher");
}

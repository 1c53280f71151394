//! The one seam every transport implements.
//!
//! A transport moves already-encoded structured CloudEvents (`Bytes`) between
//! publishers and consumer groups. It knows nothing of Rust types: the bus
//! encodes, the worker decodes. The same trait carries eventbus's in-process
//! memory transport, Redis Streams and pub/sub (eventbus-redis), and is what
//! the outbox relay publishes to. Every implementation runs the conformance
//! suite of `eventbus::testing::conformance`.
//!
//! Semantics every implementation keeps:
//! - each group receives every message of the types it subscribed to; the
//!   subscribers of one group compete (each message goes to one of them);
//! - a delivery stays owned by its subscriber until acked, retried or
//!   dead-lettered; if the subscriber goes away first it is delivered again
//!   (at-least-once) with its attempt count increased;
//! - [`Subscriber::next`] waits without polling and wakes as soon as a message
//!   arrives.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::Result;

/// A message to publish: a structured CloudEvent and its type.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The CloudEvents `type` (routing key).
    pub event_type: Cow<'static, str>,
    /// The structured-mode CloudEvents JSON.
    pub payload: Bytes,
}

/// Which event types a group receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// These types only.
    Types(Vec<String>),
    /// Every type, including types first published after the subscription started.
    All,
}

impl Topics {
    /// Whether `event_type` is part of this set.
    pub fn contains(&self, event_type: &str) -> bool {
        match self {
            Topics::All => true,
            Topics::Types(types) => types.iter().any(|t| t == event_type),
        }
    }
}

/// A consumer group: one handler's queue.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The group name (`<service>.<handler>` or the handler's `group`).
    pub group: String,
    /// The handler (`module::fn`), recorded in dead letters.
    pub handler: String,
    /// The types it receives.
    pub topics: Topics,
    /// How long one handler run may take (`None`: no limit). A durable
    /// transport must not hand a delivery to another consumer as "abandoned"
    /// while it may still be running.
    pub handler_timeout: Option<std::time::Duration>,
    /// Every subscriber gets every event (`#[handler(broadcast)]`) instead of
    /// competing for them; only asked of a transport whose
    /// [`Capabilities::broadcast`] is true. A broadcast group keeps nothing
    /// for a subscriber before it subscribes.
    pub broadcast: bool,
}

/// What a transport can do with groups; the bus (`eventbus::Bus`) checks it
/// at start against the groups it runs, so that a group never silently
/// behaves otherwise than it says (every instance handling each job).
///
/// ```
/// use eventbus_core::transport::Capabilities;
/// let pubsub_like = Capabilities::COMPETING.with_broadcast(true);
/// assert!(pubsub_like.competing_consumers && pubsub_like.broadcast);
/// assert_eq!(Capabilities::default(), Capabilities::COMPETING);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The subscribers of one group compete: each event goes to one of them.
    /// Without it, every subscriber of a group gets every event, and a bus
    /// refuses to run a group that is not broadcast on this transport.
    pub competing_consumers: bool,
    /// A [`GroupSpec::broadcast`] group gives every subscriber every event.
    /// Without it, a bus refuses to run a broadcast handler on this transport.
    pub broadcast: bool,
}

impl Capabilities {
    /// Groups compete; no broadcast (what [`Transport::capabilities`] assumes).
    pub const COMPETING: Self = Self {
        competing_consumers: true,
        broadcast: false,
    };

    /// Every subscriber of a group gets every event and cannot compete
    /// (a plain pub/sub without coordination): broadcast only.
    pub const BROADCAST_ONLY: Self = Self {
        competing_consumers: false,
        broadcast: true,
    };

    /// The same, with [`broadcast`](Self::broadcast) set.
    pub const fn with_broadcast(mut self, broadcast: bool) -> Self {
        self.broadcast = broadcast;
        self
    }

    /// The same, with [`competing_consumers`](Self::competing_consumers) set.
    pub const fn with_competing_consumers(mut self, competing: bool) -> Self {
        self.competing_consumers = competing;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::COMPETING
    }
}

/// An event type as a transport carries it: a `&'static str` from a typed
/// publish, or a shared name a transport read off the wire (a stream or
/// channel name). Cloning never allocates.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Static(&'static str),
    Shared(std::sync::Arc<str>),
}

impl EventType {
    /// A type known at compile time.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Repr::Static(name))
    }

    /// The type's name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for EventType {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for EventType {
    fn from(name: &'static str) -> Self {
        Self::from_static(name)
    }
}

impl From<std::sync::Arc<str>> for EventType {
    fn from(name: std::sync::Arc<str>) -> Self {
        Self(Repr::Shared(name))
    }
}

impl From<String> for EventType {
    fn from(name: String) -> Self {
        Self(Repr::Shared(name.into()))
    }
}

impl From<&Cow<'static, str>> for EventType {
    fn from(name: &Cow<'static, str>) -> Self {
        match name {
            Cow::Borrowed(s) => Self::from_static(s),
            Cow::Owned(s) => Self::from(s.clone()),
        }
    }
}

impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport-assigned, opaque identifier of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u128);

/// One message given to a subscriber.
#[derive(Clone)]
pub struct Delivery {
    /// Identifies the delivery for ack/retry/dead-letter.
    pub id: DeliveryId,
    /// The event type the transport routed it by (the stream, channel or
    /// topic it came from), known without reading the payload.
    pub event_type: EventType,
    /// The structured CloudEvent, as published.
    pub payload: Bytes,
    /// 1 for the first delivery; increases with each retry or redelivery.
    pub attempt: u32,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("attempt", &self.attempt)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

/// Why a delivery goes to the dead-letter queue, and what the worker knew
/// of the event (from its [`Envelope`](crate::Envelope) when the message
/// could be read, from the delivery otherwise).
#[derive(Debug, Clone)]
pub struct DeadLetterInfo {
    /// The CloudEvents type (the delivery's routing type when the message
    /// could not be read).
    pub event_type: String,
    /// The CloudEvents id, when the message could be read.
    pub event_id: Option<String>,
    /// The handler that gave up.
    pub handler: String,
    /// How many times it was attempted.
    pub attempts: u32,
    /// The last error, or why the message could not be decoded.
    pub error: String,
}

impl DeadLetterInfo {
    /// Info for `handler`'s give-up after `attempts`; the event's type and id
    /// are left for the transport to fill from the delivery.
    pub fn new(handler: impl Into<String>, attempts: u32, error: impl Into<String>) -> Self {
        Self {
            event_type: String::new(),
            event_id: None,
            handler: handler.into(),
            attempts,
            error: error.into(),
        }
    }
}

/// An entry of the dead-letter queue.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The entry's id in the DLQ (for [`Transport::replay`] and `Bus::replay_dead_letter`).
    pub id: String,
    /// The group whose handler failed.
    pub group: String,
    /// The handler that failed.
    pub handler: String,
    /// The CloudEvents type, if the message could be read.
    pub event_type: Option<String>,
    /// The CloudEvents id, if the message could be read.
    pub event_id: Option<String>,
    /// Where it was received from: the stream, channel or queue, when the
    /// transport has more than one.
    pub origin: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error or the decoding problem.
    pub error: String,
    /// When it was dead-lettered.
    pub time: SystemTime,
    /// The message as received.
    pub payload: Bytes,
}

impl DeadLetter {
    /// Builds an entry from what the worker recorded.
    pub fn new(
        id: String,
        group: String,
        info: DeadLetterInfo,
        time: SystemTime,
        payload: Bytes,
    ) -> Self {
        Self {
            id,
            group,
            handler: info.handler,
            event_type: (!info.event_type.is_empty()).then_some(info.event_type),
            event_id: info.event_id,
            origin: None,
            attempts: info.attempts,
            error: info.error,
            time,
            payload,
        }
    }
}

/// The backlog of one group, from [`Transport::group_stats`] (sampled for
/// the `eventbus.consumer.*` gauges). A field is `None` when the transport
/// cannot tell it cheaply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// Messages kept for the group and not yet delivered to it.
    pub lag: Option<u64>,
    /// Messages delivered to the group and not yet settled.
    pub pending: Option<u64>,
    /// How long the oldest message of the group not yet settled (waiting or
    /// delivered) has waited; `Some(ZERO)` when there is none.
    pub oldest_pending: Option<Duration>,
}

impl GroupStats {
    /// The backlog of a group over two transports (lags and pending counts
    /// add up, the oldest is the older); a field either side lacks is `None`.
    pub fn combine(self, other: Self) -> Self {
        Self {
            lag: self.lag.zip(other.lag).map(|(a, b)| a + b),
            pending: self.pending.zip(other.pending).map(|(a, b)| a + b),
            oldest_pending: self
                .oldest_pending
                .zip(other.oldest_pending)
                .map(|(a, b)| a.max(b)),
        }
    }

    /// Stats with every field given.
    pub fn new(lag: u64, pending: u64, oldest_pending: Duration) -> Self {
        Self {
            lag: Some(lag),
            pending: Some(pending),
            oldest_pending: Some(oldest_pending),
        }
    }
}

/// A transport: publishes messages and hands them to consumer groups.
pub trait Transport: Send + Sync + 'static {
    /// A short name for errors and logs (`"memory"`, `"redis-streams"`).
    fn name(&self) -> &'static str;

    /// What it can do with groups: whether a group's subscribers compete,
    /// whether it can broadcast. The default, [`Capabilities::COMPETING`],
    /// is the contract above; a transport that cannot make a group compete
    /// must say so here, and the bus then refuses its non-broadcast groups
    /// at start instead of running them on every instance.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Publishes a batch; returns once the transport has accepted all of it
    /// (durably, for a durable transport).
    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>>;

    /// Publishes a batch without waiting, when the transport can (an
    /// in-process one); `None` means "use [`Transport::publish`]".
    fn publish_now(&self, batch: &[Outgoing]) -> Option<Result<()>> {
        let _ = batch;
        None
    }

    /// Publishes `message` at `at` (at once if `at` has passed); durable on durable transports.
    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>>;

    /// Creates the group if it does not exist, so that messages published from
    /// now on are kept for it even before anyone subscribes.
    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>>;

    /// Joins `group` as one more competing subscriber (declaring it if
    /// needed). Returns once the subscription is live: whatever is published
    /// after it returned reaches the subscriber (the conformance suite
    /// relies on this; a pub/sub transport waits for its SUBSCRIBE to be
    /// confirmed).
    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>>;

    /// Claims tick `tick_ms` of the recurring schedule `schedule`; true for exactly one caller.
    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>>;

    /// Lists up to `limit` dead letters, oldest first.
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>>;

    /// Delivers a dead letter again to its group (attempts start over) and
    /// removes it from the DLQ. False if there is no such entry.
    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Removes one dead letter without delivering it again (an operator's
    /// purge). False if there is no such entry. The default: the transport
    /// cannot, which is an error saying so.
    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let _ = dead_letter_id;
        Box::pin(async move {
            Err(crate::Error::Config(format!(
                "the {} transport cannot delete dead letters",
                self.name()
            )))
        })
    }

    /// Checks that the transport can be reached (one round trip where there
    /// is a server). The outbox relay asks this, holding no lock, before it
    /// locks rows again after the transport failed.
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The backlog of `group` (lag, pending, age of the oldest pending
    /// message), when the transport can tell it cheaply (a few round trips
    /// at most): `None` (the default) otherwise. Sampled periodically by the
    /// bus for its metrics.
    fn group_stats<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> Option<BoxFuture<'a, Result<GroupStats>>> {
        let _ = group;
        None
    }

    /// Its log, read by position (the HTTP pull feed), when it keeps one:
    /// `None` for a transport that keeps nothing once delivered (pub/sub).
    fn feed(&self) -> Option<&dyn crate::feed::Feed> {
        None
    }

    /// Background work the transport needs while the bus runs (moving due
    /// scheduled messages, ...); runs until `shutdown` fires.
    fn run_background(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<()>> {
        let _ = shutdown;
        Box::pin(async { Ok(()) })
    }
}

/// One subscriber of a group.
pub trait Subscriber: Send + Sync {
    /// Waits for at least one and at most `max` deliveries. Cancel-safe: if
    /// the future is dropped before it completes, nothing is lost.
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>>;

    /// Appends to `out` up to `max` deliveries that are ready now, without
    /// waiting and without a future (an in-process transport); returns how
    /// many. The worker asks before it calls [`Subscriber::next`]; the
    /// default has none ready.
    fn next_now(&self, max: usize, out: &mut Vec<Delivery>) -> usize {
        let _ = (max, out);
        0
    }

    /// Acknowledges finished deliveries (one round trip for the batch).
    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>>;

    /// Acknowledges at once, without a future, when the transport can (an
    /// in-process one); `None` means "use [`Subscriber::ack`]".
    fn ack_now(&self, ids: &[DeliveryId]) -> Option<Result<()>> {
        let _ = ids;
        None
    }

    /// Gives the delivery back, to be delivered again (attempt + 1) after `delay`.
    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>>;

    /// Moves the delivery to the dead-letter queue and acknowledges it.
    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>>;

    /// Called once by a stopping worker after everything it was handed is
    /// settled: gives back whatever the transport still holds for this
    /// subscriber (read ahead, or delivered to a cancelled `next`), so other
    /// subscribers of the group get it now rather than after a takeover
    /// timeout. The default does nothing.
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// True when `ack`, `retry` and `dead_letter` complete without waiting
    /// (an in-process transport): the worker then settles inline instead of
    /// through a settler task.
    fn settles_inline(&self) -> bool {
        false
    }
}

/// `url` with its password (if any) replaced by `***`, for logs and errors.
/// Works on URLs that do not parse (a cluster's `host:port,host:port` list).
///
/// ```
/// use eventbus_core::transport::redact;
/// assert_eq!(redact("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(redact("redis+cluster://:pw@a:1,b:2"), "redis+cluster://:***@a:1,b:2");
/// assert_eq!(redact("memory://"), "memory://");
/// ```
pub fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..start], &userinfo[..colon], &rest[at..])
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

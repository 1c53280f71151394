//! The one seam every transport implements.
//!
//! A transport moves already-encoded structured CloudEvents (`Bytes`) between
//! publishers and consumer groups. It knows nothing of Rust types: the bus
//! encodes, the worker decodes. The same trait carries the in-process
//! [`memory`] transport, Redis Streams and pub/sub, and is what the outbox
//! relay publishes to.
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

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

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
}

/// A transport-assigned, opaque identifier of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u128);

/// One message given to a subscriber.
#[derive(Clone)]
pub struct Delivery {
    /// Identifies the delivery for ack/retry/dead-letter.
    pub id: DeliveryId,
    /// The structured CloudEvent, as published.
    pub payload: Bytes,
    /// 1 for the first delivery; increases with each retry or redelivery.
    pub attempt: u32,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

/// Why a delivery goes to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetterInfo {
    /// The handler that gave up.
    pub handler: String,
    /// How many times it was attempted.
    pub attempts: u32,
    /// The last error, or why the message could not be decoded.
    pub error: String,
}

/// An entry of the dead-letter queue.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The entry's id in the DLQ (for [`Bus::replay_dead_letter`](crate::Bus::replay_dead_letter)).
    pub id: String,
    /// The group whose handler failed.
    pub group: String,
    /// The handler that failed.
    pub handler: String,
    /// The CloudEvents type, if the message could be read.
    pub event_type: Option<String>,
    /// The CloudEvents id, if the message could be read.
    pub event_id: Option<String>,
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
    /// Builds an entry, reading type and id from the payload when possible.
    pub fn new(
        id: String,
        group: String,
        info: DeadLetterInfo,
        time: SystemTime,
        payload: Bytes,
    ) -> Self {
        let (event_type, event_id) = match crate::codec::Attributes::parse(&payload) {
            Ok(a) => (Some(a.ty.into_owned()), Some(a.id.into_owned())),
            Err(_) => (None, None),
        };
        Self {
            id,
            group,
            handler: info.handler,
            event_type,
            event_id,
            attempts: info.attempts,
            error: info.error,
            time,
            payload,
        }
    }
}

/// A transport: publishes messages and hands them to consumer groups.
pub trait Transport: Send + Sync + 'static {
    /// A short name for errors and logs (`"memory"`, `"redis-streams"`).
    fn name(&self) -> &'static str;

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

    /// Joins `group` as one more competing subscriber (declaring it if needed).
    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>>;

    /// Claims tick `tick_ms` of the recurring schedule `schedule`; true for exactly one caller.
    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>>;

    /// Lists up to `limit` dead letters, oldest first.
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>>;

    /// Delivers a dead letter again to its group (attempts start over) and
    /// removes it from the DLQ. False if there is no such entry.
    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Checks that the transport can be reached (one round trip where there
    /// is a server). The outbox relay asks this, holding no lock, before it
    /// locks rows again after the transport failed.
    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
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

    /// Acknowledges finished deliveries (one round trip for the batch).
    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>>;

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

/// Opens the transport named by `url`: `memory://[name]`, or (feature
/// `redis`) `redis://`, `rediss://`, `redis+cluster://`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Transport>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => {
            #[cfg(feature = "memory")]
            {
                Ok(std::sync::Arc::new(memory::MemoryTransport::from_url(url)?))
            }
            #[cfg(not(feature = "memory"))]
            {
                Err(crate::Error::Config(
                    "`memory://` needs the `memory` feature of eventbus (on by default); enable it in Cargo.toml".into(),
                ))
            }
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            #[cfg(feature = "redis")]
            {
                redis::connect(url).await
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(crate::Error::Config(format!(
                    "`{scheme}://` URLs need the `redis` feature: depend on eventbus with `features = [\"redis\"]`"
                )))
            }
        }
        "" => Err(crate::Error::Config(format!(
            "`{}` is not a transport URL; write `memory://` or `redis://host:6379`",
            redact(url)
        ))),
        other => Err(crate::Error::Config(format!(
            "unknown transport `{other}://` in `{}`; use `memory://` or `redis://host:6379`",
            redact(url)
        ))),
    }
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => match url.rsplit_once('@') {
            // Unparsable: drop everything that could be credentials.
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

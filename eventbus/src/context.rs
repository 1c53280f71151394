//! [`Context`]: what a handler knows besides its event.

use std::any::{Any, TypeId};

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::bus::Bus;
use crate::codec::Attributes;

/// App state given to [`BusBuilder::state`](crate::BusBuilder::state), by type.
pub(crate) type StateMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// The second, optional argument of a handler: event metadata, the attempt
/// number, the bus (to publish follow-ups) and the app state.
///
/// ```
/// # use eventbus::{Context, Event};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
/// # #[event("doc.context.ping")] struct Ping;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
/// # #[event("doc.context.pong")] struct Pong;
/// # struct Db;
/// async fn on_ping(_: Ping, ctx: Context) -> eventbus::Result<()> {
///     println!("{} attempt {} in {}", ctx.id(), ctx.attempt(), ctx.group());
///     let _db: &Db = ctx.state::<Db>();
///     ctx.bus().publish(Pong).await
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    bus: Bus,
    payload: Bytes,
    attempt: u32,
    group: Arc<str>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id())
            .field("type", &self.event_type())
            .field("attempt", &self.attempt)
            .field("group", &self.group)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(bus: Bus, payload: Bytes, attempt: u32, group: Arc<str>) -> Self {
        Self {
            bus,
            payload,
            attempt,
            group,
        }
    }

    /// The bus, to publish follow-up events.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// 1 on the first delivery, 2 on the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The consumer group this handler runs in.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// All CloudEvents attributes of the message, borrowed.
    pub fn attributes(&self) -> Attributes<'_> {
        // The worker parsed this payload before calling the handler.
        Attributes::parse(&self.payload).unwrap_or_else(|e| unreachable_attrs(&e))
    }

    /// The CloudEvents `id`.
    pub fn id(&self) -> Cow<'_, str> {
        self.attributes().id
    }

    /// The CloudEvents `type` as published (an old name for an upcast event).
    pub fn event_type(&self) -> Cow<'_, str> {
        self.attributes().ty
    }

    /// The CloudEvents `source`.
    pub fn source(&self) -> Cow<'_, str> {
        self.attributes().source
    }

    /// The CloudEvents `subject`, if any.
    pub fn subject(&self) -> Option<Cow<'_, str>> {
        self.attributes().subject
    }

    /// The CloudEvents `time`, if present and valid.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.attributes()
            .time
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The message exactly as received (structured CloudEvents JSON).
    pub fn raw(&self) -> &[u8] {
        &self.payload
    }

    /// The app state of type `T` given to [`BusBuilder::state`](crate::BusBuilder::state).
    ///
    /// # Panics
    /// If no state of that type was given; use [`Context::try_state`] to check.
    pub fn state<T: Send + Sync + 'static>(&self) -> &T {
        self.bus.state()
    }

    /// The app state of type `T`, if any.
    pub fn try_state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.bus.try_state()
    }
}

#[cold]
fn unreachable_attrs(e: &crate::codec::DecodeError) -> ! {
    panic!("context payload was validated before the handler ran: {e}")
}

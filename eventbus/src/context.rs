//! [`Context`]: what a handler knows besides its event.

use std::any::{Any, TypeId};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::Envelope;
use crate::bus::Bus;

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
    envelope: Envelope,
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

/// What the worker knows of a delivery before it is decoded: with the
/// envelope the decode produces, a [`Context`].
#[doc(hidden)]
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct ContextSeed {
    pub(crate) bus: Bus,
    pub(crate) attempt: u32,
    pub(crate) group: Arc<str>,
}

impl ContextSeed {
    pub(crate) fn into_context(self, envelope: Envelope) -> Context {
        Context {
            bus: self.bus,
            envelope,
            attempt: self.attempt,
            group: self.group,
        }
    }
}

impl Context {
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

    /// The message and its attributes, as the worker read them.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The CloudEvents `id`.
    pub fn id(&self) -> &str {
        self.envelope.id()
    }

    /// The CloudEvents `type` as published (an old name for an upcast event).
    pub fn event_type(&self) -> &str {
        self.envelope.event_type()
    }

    /// The CloudEvents `source`.
    pub fn source(&self) -> &str {
        self.envelope.source()
    }

    /// The CloudEvents `subject`, if any.
    pub fn subject(&self) -> Option<&str> {
        self.envelope.subject()
    }

    /// The CloudEvents `time`, if present and valid RFC 3339.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.envelope
            .time()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The extension attribute `name` (e.g. `traceparent`), if the event has it.
    pub fn extension(&self, name: &str) -> Option<&crate::cloudevents::event::ExtensionValue> {
        self.envelope.extension(name)
    }

    /// The message exactly as received (structured CloudEvents JSON).
    pub fn raw(&self) -> &[u8] {
        self.envelope.payload()
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

#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bridge;
mod bus;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod celery;
mod context;
mod handler;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod health;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod outbox;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
/// CloudEvents over HTTP (`eventbus-http`): `eventbus::http::router(&bus)`.
pub use eventbus_http as http;
pub mod metrics;
pub mod registry;
pub mod routing;
pub mod schedule;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
pub mod trace;
pub mod transport;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod webhooks;
mod worker;

pub use bus::{Bus, BusBuilder, DEFAULT_CONCURRENCY, DEFAULT_RETRIES, Running};
pub use context::Context;
pub use eventbus_core::arg::HandlerArg;
/// Structured-mode CloudEvents JSON (`eventbus-core`'s codec).
pub use eventbus_core::codec;
/// The one error type (`eventbus-core`'s).
pub use eventbus_core::error;
/// The [`Event`] trait and [`EventInfo`] (`eventbus-core`'s).
pub use eventbus_core::event;
/// Reading a transport's log by cursor (`eventbus-core`'s), behind the HTTP pull feed.
pub use eventbus_core::feed;
pub use eventbus_core::{Envelope, Error, Event, EventInfo, Result, RetryPolicy};
pub use handler::{ContextArg, HandlerDef, HandlerMeta, HandlerReturn, IntoHandler};
pub use schedule::ScheduleDef;
pub use transport::DeadLetter;

/// The CloudEvents SDK (`cloudevents-sdk`), re-exported for its attribute traits.
pub use eventbus_core::cloudevents;

/// The CloudEvents 1.0 event of `cloudevents-sdk`, as global handlers receive it.
pub use eventbus_core::CloudEvent;

/// `#[derive(Event)]`: see [`Event`].
pub use eventbus_macros::Event;
/// `#[handler]`: registers an async fn as an event handler.
///
/// Options: `group = "name"`, `retries = N`, `concurrency = N`, `all`
/// (a global handler taking [`CloudEvent`]), `broadcast` (every running
/// instance handles each event, instead of one instance of the group; see
/// [`HandlerDef::broadcast`]), `crate = path`.
pub use eventbus_macros::handler;
/// `#[schedule(every = "1h")]` / `#[schedule(cron = "0 9 * * MON")]`: publishes the
/// returned event on every tick, once across all instances.
///
/// A cron expression is evaluated in UTC unless `tz = "Europe/Berlin"` names an
/// IANA zone. Options: `every`, `cron`, `tz`, `name = "..."`, `crate = path`;
/// all checked at compile time. For a schedule read from configuration at run
/// time, see [`ScheduleDef::every`] and [`ScheduleDef::cron`].
pub use eventbus_macros::schedule;

/// Used by the generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use ::inventory;
    pub use ::serde;
    pub use ::serde_json;
    pub use futures::future::BoxFuture;

    pub use crate::bus::Bus;
    pub use crate::event::{EventInfo, TaskInfo, schema_of, upcast};
    pub use crate::handler::{HandlerDef, HandlerMeta, check};
    pub use crate::registry::registration::{
        EventRegistration, HandlerRegistration, ScheduleRegistration,
    };
    pub use crate::schedule::{ScheduleDef, ScheduleOutput, When, publish_output};
    pub type Result<T> = crate::error::Result<T>;

    /// Boxes a future (keeps `Box` out of user scope in generated code).
    pub fn boxed<'a, F>(f: F) -> BoxFuture<'a, F::Output>
    where
        F: core::future::Future + Send + 'a,
    {
        Box::pin(f)
    }
}
#[allow(unused_extern_crates)]
extern crate self as eventbus;

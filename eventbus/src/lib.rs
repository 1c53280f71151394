#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bus;
pub mod codec;
pub mod context;
pub mod docs;
pub mod error;
pub mod event;
pub mod handler;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod outbox;
pub mod registry;
pub mod schedule;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod testing;
pub mod transport;
mod worker;

pub use bus::{Bus, BusBuilder};
pub use context::Context;
pub use error::{Error, Result};
pub use event::{Event, EventInfo};
pub use handler::HandlerDef;
pub use schedule::ScheduleDef;
pub use transport::DeadLetter;

/// The CloudEvents SDK (`cloudevents-sdk`), re-exported for its attribute traits.
pub use cloudevents;

/// The CloudEvents 1.0 event of `cloudevents-sdk`, as global handlers receive it.
pub type CloudEvent = cloudevents::Event;

/// `#[derive(Event)]`: see [`Event`].
pub use eventbus_macros::Event;
/// `#[handler]`: registers an async fn as an event handler.
///
/// Options: `group = "name"`, `retries = N`, `concurrency = N`, `all`
/// (a global handler taking [`CloudEvent`]), `crate = path`.
pub use eventbus_macros::handler;
/// `#[schedule(every = "1h")]` / `#[schedule(cron = "0 9 * * MON")]`: publishes the
/// returned event on every tick, once across all instances.
pub use eventbus_macros::schedule;

/// Used by the generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use ::inventory;
    pub use ::serde;
    pub use ::serde_json;
    pub use futures::future::BoxFuture;

    pub use crate::bus::Bus;
    pub use crate::event::{EventInfo, schema_of, upcast};
    pub use crate::handler::{HandlerDef, HandlerMeta, check};
    pub use crate::registry::{EventRegistration, HandlerRegistration, ScheduleRegistration};
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
